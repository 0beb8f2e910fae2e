"""Guidance by composition (artgen/guidance.py): a denoiser and an objective make a guided denoiser that the plain
samplers step; a zero gradient changes nothing, a real one moves the samples, and the limits hold."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from tiny_unet import randomize_, tiny_unet_config

from artgen.guidance import Guidance, apply_gradient, blend_prediction, guided_denoiser, limit_guidance
from artgen.loop import Guide
from artgen.models.sampling import Diffusion, SamplingLoop, create_diffusion, denoiser
from artgen.models.unet import create_unet

SHAPE = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return randomize_(create_unet(tiny_unet_config()), seed=5).eval()


def _zero_eps_model(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """A model that predicts no noise at all, with a mid-range learned variance."""
    return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)


def brightness(scale: float) -> Guide:
    return Guide(lambda image, progress: scale * image.mean(), 0.0)


def sample(diffusion: Diffusion, model, guide: Guide | None, sampler: str, eta: float = 0.0,  # noqa: ANN001
           guidance: Guidance = Guidance()) -> tuple[torch.Tensor, list[dict]]:
    """Every step from the top, guided by ``guide`` (or not), from the same noise."""
    torch.manual_seed(1)
    loop = SamplingLoop(diffusion, denoiser(diffusion, model), torch.randn(SHAPE), diffusion.num_timesteps - 1,
                        sampler, eta)
    raw = denoiser(diffusion, model, clip_denoised=False)
    outs = [loop.step(guided_denoiser(diffusion, raw, guide, guidance) if guide else None)
            for _ in range(diffusion.num_timesteps)]
    return loop.x, outs


def test_apply_gradient_shifts_the_mean_for_ddpm_and_eps_and_prediction_for_ddim() -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    # float64: at step 8, x_t / sqrt(alpha-bar) is about 50 x_t, so two float32 routes to pred_xstart differ
    # by more than assert_close's float32 tolerance on some draws
    noise = torch.Generator().manual_seed(5)
    x_t, grad = (torch.randn(SHAPE, generator=noise, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([3, 8])
    plain = denoiser(diffusion, _zero_eps_model)(x_t, t)
    guided = apply_gradient(diffusion, plain, x_t, t, grad)
    torch.testing.assert_close(guided["mean"], plain["mean"] + plain["variance"] * grad)
    scale = torch.tensor(np.sqrt(1 - diffusion.alphas_cumprod[[3, 8]])).view(2, 1, 1, 1)
    torch.testing.assert_close(guided["eps"], plain["eps"] - scale * grad)
    torch.testing.assert_close(guided["pred_xstart"], diffusion.predict_xstart_from_eps(x_t, t, guided["eps"]))


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
def test_an_objective_without_gradient_leaves_every_sample_bit_identical(tiny_model, sampler: str,
                                                                         eta: float) -> None:
    diffusion = create_diffusion(1000, "linear", "6")
    scored = []

    def flat(image: torch.Tensor, progress: float) -> torch.Tensor:
        scored.append(image.requires_grad)
        return 0 * image.sum() + 3.0

    plain, _ = sample(diffusion, tiny_model, None, sampler, eta)
    guided, outs = sample(diffusion, tiny_model, Guide(flat, 0.0), sampler, eta, Guidance(clamp_max=0.05))
    assert torch.equal(plain, guided)
    assert scored == [True] * 6  # scored every step, through the model: it could have pushed
    assert [float(out["loss"]) for out in outs] == [3.0] * 6  # each step hands back its loss


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_guidance_moves_the_samples_toward_a_lower_loss(tiny_model, sampler: str) -> None:
    diffusion = create_diffusion(1000, "linear", "6")
    plain, _ = sample(diffusion, tiny_model, None, sampler)
    brighter, _ = sample(diffusion, tiny_model, brightness(-2000.0), sampler)
    darker, _ = sample(diffusion, tiny_model, brightness(2000.0), sampler)
    assert brighter.mean() > plain.mean() + 0.1 and darker.mean() < plain.mean() - 0.1


def mean_push(diffusion: Diffusion, guide: Guide, guidance: Guidance, step: int) -> torch.Tensor:
    """The gradient guidance applied at ``step``, read back from the shift of the DDPM mean."""
    x_t, t = torch.randn(SHAPE), torch.full((SHAPE[0],), step)
    raw = denoiser(diffusion, _zero_eps_model, clip_denoised=False)
    plain = diffusion.clipped(raw(x_t, t), x_t, t)
    guided = guided_denoiser(diffusion, raw, guide, guidance)(x_t, t)
    return (guided["mean"] - plain["mean"]) / plain["variance"]


@pytest.mark.parametrize("by_signal", [False, True])
def test_a_strong_gradient_is_cut_to_the_limit(by_signal: bool) -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    push = mean_push(diffusion, brightness(1e6), Guidance(clamp_max=0.2, clamp_by_signal=by_signal), 7)
    limit = 0.2 * (diffusion.alphas_cumprod[7] ** 0.5 if by_signal else 1)
    assert float(push.square().mean().sqrt()) == pytest.approx(limit, rel=1e-3)
    unlimited = mean_push(diffusion, brightness(1e6), Guidance(), 7)
    assert float(unlimited.square().mean().sqrt()) > 100 * limit


def test_the_objective_scores_the_raw_prediction_blended_with_x_t_and_the_sampler_gets_it_clipped() -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    x_t, t = torch.randn(SHAPE) * 3, torch.full((SHAPE[0],), 8)
    seen = []
    guide = Guide(lambda image, progress: seen.append(image.detach()) or 0 * image.sum(), 0.0)
    raw = denoiser(diffusion, _zero_eps_model, clip_denoised=False)
    out = guided_denoiser(diffusion, raw, guide, Guidance())(x_t, t)
    predicted = raw(x_t, t)["pred_xstart"]
    assert predicted.abs().max() > 1
    share = torch.tensor(diffusion.sqrt_one_minus_alphas_cumprod[[8, 8]]).view(2, 1, 1, 1)
    torch.testing.assert_close(seen[0], blend_prediction(predicted, x_t, share).add(1).div(2))
    torch.testing.assert_close(out["pred_xstart"], predicted.clamp(-1, 1))


def test_init_scale_pulls_toward_the_init_image() -> None:
    diffusion = create_diffusion(1000, "linear", "10")
    init = torch.full(SHAPE, 0.8)
    flat = Guide(lambda image, progress: 0 * image.sum(), 0.0)
    push = mean_push(diffusion, flat, Guidance(init=init, init_scale=100.0), 2)
    assert float(push.mean()) > 0  # x_t is noise around 0: the pull is up, toward 0.8
    assert torch.equal(mean_push(diffusion, flat, Guidance(init=init, init_scale=0.0), 2), torch.zeros(SHAPE))


def test_the_gradient_is_taken_by_the_guide_and_the_forward_pass_runs_in_its_context() -> None:
    """guide.gradient is the backward pass that Ctrl-C can stop; guide.forward() is where autocast applies."""
    calls = []

    @contextmanager
    def forward():  # noqa: ANN202
        calls.append("forward")
        yield

    class CountingGuide(Guide):
        def gradient(self, loss: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            calls.append("gradient")
            return super().gradient(loss, inputs)

    diffusion = create_diffusion(1000, "linear", "10")
    mean_push(diffusion, CountingGuide(lambda image, progress: image.mean(), 0.0, forward), Guidance(), 4)
    assert calls == ["forward", "gradient"]


def test_limit_guidance_zeroes_nans_and_limits_each_draw_on_its_own() -> None:
    grad = torch.stack([torch.full((3, 4, 4), 10.0), torch.full((3, 4, 4), 0.01)])
    grad[0, 0, 0, 0] = float("nan")
    limited = limit_guidance(grad, 1.0, per_draw=True)
    assert not limited.isnan().any()
    rms = limited.flatten(1).square().mean(1).sqrt()
    assert rms[0] == pytest.approx(1.0) and torch.equal(limited[1], grad[1])
