"""Diffusion maths: schedules, respacing, posterior, samplers and the sampling loop, plus live checks against the
reference (guided steps included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import require_reference
from tiny_unet import randomize_, tiny_unet_config

from artgen.errors import UserError
from artgen.guidance import apply_gradient
from artgen.models.sampling import (
    Diffusion,
    SamplingLoop,
    beta_schedule,
    create_diffusion,
    ddim_step,
    ddpm_step,
    denoiser,
    sample_loop,
    sample_steps,
    space_timesteps,
)
from artgen.models.unet import create_unet

SHAPE = (2, 3, 32, 32)


def _cosine_f(u: float) -> float:
    return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return randomize_(create_unet(tiny_unet_config()), seed=5).eval()


def _zero_eps_model(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """A model that predicts no noise at all, with a mid-range learned variance."""
    return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)


def _oracle(diffusion: Diffusion, x0: torch.Tensor):  # noqa: ANN202
    """A perfect denoiser for the single image x0, working from the ORIGINAL timesteps it is fed."""
    base_cumprod = torch.from_numpy(np.cumprod(1 - beta_schedule("linear", diffusion.original_num_steps)))

    def model_fn(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha_bar = base_cumprod[timesteps].float().view(-1, 1, 1, 1)
        eps = (x - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    return model_fn


# --- schedules ---

@pytest.mark.parametrize("steps", [1000, 250])
def test_linear_schedule_closed_form(steps: int) -> None:
    scale = 1000 / steps
    np.testing.assert_allclose(beta_schedule("linear", steps), np.linspace(scale * 1e-4, scale * 0.02, steps))
    assert beta_schedule("linear", steps).dtype == np.float64


def test_cosine_schedule_closed_form() -> None:
    steps = 1000
    betas = beta_schedule("cosine", steps)
    alpha_bar = np.cumprod(1 - betas)
    expected = np.array([_cosine_f((i + 1) / steps) / _cosine_f(0) for i in range(steps)])
    unclipped = betas < 0.999
    assert unclipped[:-1].all() and not unclipped[-1]  # only the final step hits the 0.999 cap
    np.testing.assert_allclose(alpha_bar[:-1], expected[:-1], rtol=1e-9, atol=1e-12)
    assert betas.max() == 0.999


def test_unknown_schedule_is_a_user_error() -> None:
    with pytest.raises(UserError, match="linear.*cosine"):
        beta_schedule("quadratic", 10)


# --- respacing ---

def test_space_timesteps_even_count() -> None:
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert steps == sorted(steps)
    gaps = np.diff(steps)
    assert set(gaps) <= {4, 5}


def test_space_timesteps_sections() -> None:
    steps = space_timesteps(300, "10,15,20")
    assert len(steps) == 45
    assert [sum(lo <= s < lo + 100 for s in steps) for lo in (0, 100, 200)] == [10, 15, 20]
    assert steps[0] == 0 and steps[9] == 99 and steps[10] == 100 and steps[-1] == 299


def test_space_timesteps_ddim_and_empty() -> None:
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "") == list(range(1000))


@pytest.mark.parametrize("bad", ["abc", "ddim999", "2000", "10,-1", "ddimx"])
def test_bad_respacing_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError):
        space_timesteps(1000, bad)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_keeps_alphas_cumprod_at_kept_steps(schedule: str) -> None:
    full = Diffusion(beta_schedule(schedule, 1000))
    kept = space_timesteps(1000, "ddim25")
    spaced = Diffusion(beta_schedule(schedule, 1000), kept)
    assert spaced.num_timesteps == 25
    np.testing.assert_allclose(spaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-10)
    assert spaced.model_timesteps(torch.tensor([0, 3, 24])).tolist() == [kept[0], kept[3], kept[24]]


def test_create_diffusion_respaces() -> None:
    diffusion = create_diffusion(1000, "linear", "50", learn_sigma=False)
    assert diffusion.num_timesteps == 50 and diffusion.variance == "fixed_large"
    assert diffusion.original_num_steps == 1000


# --- q_sample and p_mean_variance ---

def test_q_sample_closed_form() -> None:
    diffusion = create_diffusion(1000, "linear", "100")
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([0, 99])
    expected = torch.stack([math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i]
                            for i, a in enumerate(diffusion.alphas_cumprod[[0, 99]])])
    torch.testing.assert_close(diffusion.q_sample(x0, t, noise), expected)


def test_p_mean_variance_learned_range_endpoints() -> None:
    diffusion = create_diffusion(1000, "linear", "100")
    x_t, t = torch.randn(SHAPE), torch.tensor([10, 50])
    eps = torch.randn(SHAPE)
    for v, table in [(-1.0, diffusion.posterior_log_variance_clipped), (1.0, np.log(diffusion.betas))]:
        out = diffusion.p_mean_variance(torch.cat([eps, torch.full(SHAPE, v)], 1), x_t, t)
        expected = torch.tensor(table[[10, 50]], dtype=torch.float32).view(2, 1, 1, 1).expand(SHAPE)
        torch.testing.assert_close(out["log_variance"], expected)
        torch.testing.assert_close(out["variance"], expected.exp())


def test_p_mean_variance_mean_is_posterior_of_clipped_prediction() -> None:
    diffusion = create_diffusion(1000, "linear", "100")
    x_t, t = torch.randn(SHAPE) * 3, torch.tensor([30, 99])
    eps = torch.randn(SHAPE)
    out = diffusion.p_mean_variance(torch.cat([eps, torch.zeros(SHAPE)], 1), x_t, t)
    raw = diffusion.predict_xstart_from_eps(x_t, t, eps)
    assert raw.abs().max() > 1
    torch.testing.assert_close(out["pred_xstart"], raw.clamp(-1, 1))
    torch.testing.assert_close(out["mean"], diffusion.q_posterior_mean(raw.clamp(-1, 1), x_t, t))
    unclipped = diffusion.p_mean_variance(torch.cat([eps, torch.zeros(SHAPE)], 1), x_t, t, clip_denoised=False)
    torch.testing.assert_close(unclipped["pred_xstart"], raw)


@pytest.mark.parametrize("variance,table", [("fixed_small", "posterior_variance"), ("fixed_large", "betas")])
def test_fixed_variances(variance: str, table: str) -> None:
    diffusion = Diffusion(beta_schedule("linear", 100), variance=variance)
    x_t, t = torch.randn(SHAPE), torch.tensor([5, 80])
    out = diffusion.p_mean_variance(torch.randn(SHAPE), x_t, t)
    expected = torch.tensor(getattr(diffusion, table)[[5, 80]], dtype=torch.float32).view(2, 1, 1, 1)
    torch.testing.assert_close(out["variance"], expected.expand(SHAPE))
    with pytest.raises(ValueError, match="channels"):
        diffusion.p_mean_variance(torch.randn(2, 6, 32, 32), x_t, t)


# --- samplers ---

@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_oracle_denoiser_recovers_the_image(sampler: str) -> None:
    diffusion = create_diffusion(1000, "linear", "20")
    x0 = torch.rand(1, 3, 8, 8) * 1.6 - 0.8
    denoise = denoiser(diffusion, _oracle(diffusion, x0))
    result = sample_loop(diffusion, denoise, (1, 3, 8, 8), sampler, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result, x0, atol=1e-4, rtol=0)


def test_ddim_eta_zero_is_deterministic_and_needs_no_noise() -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    denoise = denoiser(diffusion, _zero_eps_model)
    x_t, t = torch.randn(SHAPE), torch.tensor([5, 5])
    out = ddim_step(diffusion, denoise, x_t, t, noise=lambda like: pytest.fail("eta 0 drew noise"))
    ab, ab_prev = diffusion.alphas_cumprod[5], diffusion.alphas_cumprod_prev[5]
    pred = (x_t / math.sqrt(ab)).clamp(-1, 1)
    eps = (x_t / math.sqrt(ab) - pred) / math.sqrt(1 / ab - 1)
    torch.testing.assert_close(out["sample"], pred * math.sqrt(ab_prev) + math.sqrt(1 - ab_prev) * eps)


def test_ddpm_step_adds_no_noise_at_the_last_step() -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    denoise = denoiser(diffusion, _zero_eps_model)
    x_t, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    last = ddpm_step(diffusion, denoise, x_t, torch.tensor([0, 0]), lambda like: noise)
    torch.testing.assert_close(last["sample"], denoise(x_t, torch.tensor([0, 0]))["mean"])
    mid = ddpm_step(diffusion, denoise, x_t, torch.tensor([4, 4]), lambda like: noise)
    assert (mid["sample"] - denoise(x_t, torch.tensor([4, 4]))["mean"]).abs().mean() > 1e-3


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.5)])
def test_steps_draw_their_noise_after_the_denoiser_has_run(sampler: str, eta: float) -> None:
    """A guided denoiser draws random cutouts of its own: they must come first, as the noise always did."""
    diffusion = create_diffusion(1000, "linear", "10")
    plain, calls = denoiser(diffusion, _zero_eps_model), []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> dict:
        calls.append("denoise")
        return plain(x, t)

    def noise(like: torch.Tensor) -> torch.Tensor:
        calls.append("noise")
        return torch.zeros_like(like)

    SamplingLoop(diffusion, denoise, torch.randn(SHAPE), 5, sampler, eta, noise).step()
    assert calls == ["denoise", "noise"]


def test_the_loop_takes_each_step_with_the_denoiser_it_is_given_and_goes_on_from_any_state(
        tiny_model: torch.nn.Module) -> None:
    diffusion = create_diffusion(1000, "linear", "6")
    plain = denoiser(diffusion, tiny_model)
    brighter = lambda x, t: {**plain(x, t), "mean": plain(x, t)["mean"] + 1, "loss": torch.tensor(2.0)}  # noqa: E731
    x = torch.randn(SHAPE)
    torch.manual_seed(0)
    loop = SamplingLoop(diffusion, plain, x, 5)
    first, second = loop.step(), loop.step(brighter)
    assert (first["t"], second["t"], loop.t) == (5, 4, 3) and second["loss"] == 2.0 and "loss" not in first
    rest = [out["t"] for out in loop]
    assert rest == [3, 2, 1, 0] and loop.t == -1
    with pytest.raises(ValueError, match="already reached step 0"):
        loop.step()
    torch.manual_seed(0)
    again = SamplingLoop(diffusion, plain, x, 5)
    again.step()
    resumed = SamplingLoop(diffusion, plain, again.x, again.t)  # rebuilt mid-way: goes on the same
    resumed.step(brighter)
    assert torch.equal(resumed.x, second["sample"])


def test_skip_all_but_last_step_returns_init_within_step_noise() -> None:
    diffusion = create_diffusion(1000, "linear", "25")
    init = torch.rand(SHAPE) * 1.8 - 0.9
    denoise = denoiser(diffusion, _zero_eps_model)
    result = sample_loop(diffusion, denoise, SHAPE, "ddim", skip_steps=24, init=init,
                         generator=torch.Generator().manual_seed(3))
    alpha_bar = diffusion.alphas_cumprod[0]
    tolerance = 6 * math.sqrt((1 - alpha_bar) / alpha_bar)  # six sigma of the step-0 noise
    assert tolerance < 0.1
    assert (result - init).abs().max() < tolerance
    assert (result - init).abs().max() > 0  # the noise really was added


def test_sample_steps_yields_every_remaining_step_and_is_reproducible() -> None:
    diffusion = create_diffusion(1000, "linear", "8")
    denoise = denoiser(diffusion, _zero_eps_model)
    init = torch.zeros(SHAPE)
    steps = list(sample_steps(diffusion, denoise, SHAPE, "ddpm", skip_steps=3, init=init,
                              generator=torch.Generator().manual_seed(4)))
    assert [s["t"] for s in steps] == [4, 3, 2, 1, 0]
    again = sample_loop(diffusion, denoise, SHAPE, "ddpm", skip_steps=3, init=init,
                        generator=torch.Generator().manual_seed(4))
    assert torch.equal(steps[-1]["sample"], again)


def test_sampler_argument_errors() -> None:
    diffusion = create_diffusion(1000, "linear", "8")
    denoise = denoiser(diffusion, _zero_eps_model)
    with pytest.raises(UserError, match="unknown sampler 'plms'"):
        sample_steps(diffusion, denoise, SHAPE, "plms")
    for skip in (8, 9, -1):
        with pytest.raises(UserError, match="skip_steps"):
            sample_loop(diffusion, denoise, SHAPE, "ddim", skip_steps=skip)


# --- live comparisons with the reference package (skipped when it is not installed; under CI=true, failed) ---

def _reference_diffusion(respacing: str, learn_sigma: bool = True, schedule: str = "linear"):  # noqa: ANN202
    script_util = require_reference("guided_diffusion.script_util")
    return script_util.create_gaussian_diffusion(steps=1000, learn_sigma=learn_sigma, noise_schedule=schedule,
                                                 timestep_respacing=respacing)


@pytest.mark.parametrize("respacing", ["250", "10,20,30", "ddim50", "", "7"])
def test_respacing_matches_reference(respacing: str) -> None:
    reference = _reference_diffusion(respacing, schedule="cosine")
    ours = create_diffusion(1000, "cosine", respacing)
    assert ours.timestep_map.tolist() == reference.timestep_map
    np.testing.assert_allclose(ours.betas, reference.betas, rtol=1e-12)
    np.testing.assert_allclose(ours.posterior_log_variance_clipped, reference.posterior_log_variance_clipped,
                               rtol=1e-12)


class _FixedOutputModel:
    """Returns a fixed output and records the timesteps it was fed."""

    def __init__(self, output: torch.Tensor) -> None:
        self.output, self.seen = output, []

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.seen.append(timesteps.tolist())
        return self.output


def _denoiser(diffusion: Diffusion, model: _FixedOutputModel, grad: torch.Tensor | None):  # noqa: ANN202
    """Our denoiser, guided (as the reference's cond_fn guides) by a fixed gradient when one is given."""
    plain = denoiser(diffusion, model)
    if grad is None:
        return plain
    return lambda x, t: apply_gradient(diffusion, plain(x, t), x, t, grad)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_q_sample_and_p_mean_variance_match_reference(learn_sigma: bool) -> None:
    reference = _reference_diffusion("50", learn_sigma)
    ours = create_diffusion(1000, "linear", "50", learn_sigma)
    x_t, t = torch.randn(SHAPE) * 2, torch.tensor([0, 37])
    noise = torch.randn(SHAPE)
    torch.testing.assert_close(ours.q_sample(x_t, t, noise), reference.q_sample(x_t, t, noise))
    model = _FixedOutputModel(torch.randn(2, 6 if learn_sigma else 3, 32, 32))
    expected = reference.p_mean_variance(model, x_t, t)
    got = ours.p_mean_variance(model(x_t, ours.model_timesteps(t)), x_t, t)
    assert model.seen[0] == model.seen[1] == [0, reference.timestep_map[37]]
    for key in ("mean", "variance", "log_variance", "pred_xstart"):
        torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("guided", [False, True])
def test_ddim_step_matches_reference(eta: float, guided: bool) -> None:
    reference = _reference_diffusion("ddim25")
    ours = create_diffusion(1000, "linear", "ddim25")
    model = _FixedOutputModel(torch.randn(2, 6, 32, 32))
    grad = torch.randn(SHAPE) * 0.3
    x_t, t = torch.randn(SHAPE), torch.tensor([24, 9])
    torch.manual_seed(11)  # the reference draws its noise from the global generator
    expected = reference.ddim_sample(model, x_t, t, eta=eta, model_kwargs={},
                                     cond_fn=(lambda x, ts, **kw: grad) if guided else None)
    torch.manual_seed(11)
    got = ddim_step(ours, _denoiser(ours, model, grad if guided else None), x_t, t, eta=eta)
    torch.testing.assert_close(got["sample"], expected["sample"], atol=1e-5, rtol=1e-5)
    if not guided:
        torch.testing.assert_close(got["pred_xstart"], expected["pred_xstart"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("guided", [False, True])
def test_ddpm_step_matches_reference(guided: bool) -> None:
    reference = _reference_diffusion("100")
    ours = create_diffusion(1000, "linear", "100")
    model = _FixedOutputModel(torch.randn(2, 6, 32, 32))
    grad = torch.randn(SHAPE)
    x_t, t = torch.randn(SHAPE), torch.tensor([99, 0])
    torch.manual_seed(12)
    expected = reference.p_sample(model, x_t, t, model_kwargs={},
                                  cond_fn=(lambda x, ts, **kw: grad) if guided else None)
    torch.manual_seed(12)
    got = ddpm_step(ours, _denoiser(ours, model, grad if guided else None), x_t, t)
    torch.testing.assert_close(got["sample"], expected["sample"], atol=1e-5, rtol=1e-5)
