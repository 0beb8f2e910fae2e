"""Gaussian diffusion for guided-diffusion checkpoints: schedules, respacing, the process, samplers and the loop.

Design: nothing here knows about CLIP or the UNet. A *denoiser* is a function ``denoise(x_t, t)`` that returns
the model's prediction at ``x_t``: ``mean``, ``variance``, ``log_variance``, ``pred_xstart`` and ``eps``
(:func:`denoiser` makes one from a model). Samplers (:func:`ddpm_step`, :func:`ddim_step`) are plain functions
that take one step over any denoiser, and :class:`SamplingLoop` is the one loop that walks x_t down the
schedule with them, for the product's diffusion generator, training and tests alike. Guidance is a
denoiser that wraps another (artgen.guidance), so every sampler supports it for free; the loop takes a new
denoiser for each step where guidance changes along the run.

Timesteps ``t`` are always indices into the (possibly respaced) schedule of a :class:`Diffusion`, counting
down from ``num_timesteps - 1`` to 0; :meth:`Diffusion.model_timesteps` turns them into the original
timesteps the UNet was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError, UserError

Denoised = dict[str, Tensor]
Denoiser = Callable[[Tensor, Tensor], Denoised]
ModelFn = Callable[[Tensor, Tensor], Tensor]
Noise = Callable[[Tensor], Tensor]  # standard normal noise shaped like its argument

SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("learned_range", "fixed_large", "fixed_small")
MAX_BETA = 0.999  # keeps the cosine schedule's last steps from dividing by zero


def _cosine_alpha_bar(fraction: float) -> float:
    """Nichol & Dhariwal's cumulative signal level at ``fraction`` of the way through the process."""
    return math.cos((fraction + 0.008) / 1.008 * math.pi / 2) ** 2


def beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Per-step noise variances (float64) of the "linear" or "cosine" schedule.

    The linear schedule is Ho et al.'s 1e-4..0.02 over 1000 steps, scaled by 1000/T so that any T describes
    the same process; the cosine schedule discretises a smooth alpha-bar curve.
    """
    steps = num_diffusion_timesteps
    if steps < 1:
        raise UserError(f"diffusion needs at least 1 timestep, got {steps}: use a positive diffusion_steps")
    if name == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    if name == "cosine":
        ratios = [_cosine_alpha_bar((i + 1) / steps) / _cosine_alpha_bar(i / steps) for i in range(steps)]
        return np.minimum(1 - np.array(ratios, dtype=np.float64), MAX_BETA)
    raise UserError(f"unknown noise schedule {name!r}: use 'linear' or 'cosine'")


def _parse_counts(section_counts: str) -> list[int]:
    try:
        counts = [int(part) for part in section_counts.split(",")]
    except ValueError:
        counts = []
    if not counts or any(c < 0 for c in counts):
        raise UsageError(f"bad timestep respacing {section_counts!r}: use a step count like '250', "
                        "per-section counts like '10,20,30', or 'ddimN'")
    return counts


def _ddim_stride_steps(num_timesteps: int, count_text: str) -> list[int]:
    """Every k-th step from 0 for the integer stride k that yields exactly the requested count."""
    counts = _parse_counts(count_text)
    desired = counts[0] if len(counts) == 1 else -1
    for stride in range(1, max(num_timesteps, 2)):
        steps = list(range(0, num_timesteps, stride))
        if len(steps) == desired:
            return steps
    raise UserError(f"cannot take exactly {count_text} evenly strided steps from {num_timesteps}: "
                    "pick a count that divides the schedule evenly (e.g. ddim25, ddim50, ddim100, ddim250)")


def _section_steps(start: int, size: int, count: int) -> list[int]:
    """``count`` roughly evenly spaced steps from a section of ``size`` steps beginning at ``start``."""
    if count > size:
        raise UserError(f"cannot take {count} steps from a section of {size}: use fewer steps per section")
    stride = (size - 1) / (count - 1) if count > 1 else 1.0
    steps, position = [], 0.0
    for _ in range(count):
        # Accumulate (rather than multiply) so rounding lands on the same steps as the released samplers.
        steps.append(start + round(position))
        position += stride
    return steps


def space_timesteps(num_timesteps: int, section_counts: str) -> list[int]:
    """The original timesteps (sorted) that a respaced sampler keeps.

    ``"250"`` keeps 250 evenly spaced steps; ``"10,15,20"`` splits the schedule into three equal sections
    and keeps that many from each; ``"ddim50"`` keeps every k-th step for the stride giving exactly 50;
    ``""`` keeps every step.
    """
    text = section_counts.replace(" ", "")
    if not text:
        return list(range(num_timesteps))
    if text.startswith("ddim"):
        return _ddim_stride_steps(num_timesteps, text[len("ddim"):])
    counts = _parse_counts(text)
    size_per, extra = divmod(num_timesteps, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        steps += _section_steps(start, size, count)
        start += size
    return sorted(set(steps))


def gather(values: np.ndarray, t: Tensor, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``values[t]`` as a tensor shaped [N,1,1,...] to broadcast against ``like``, in ``dtype`` (by default
    ``like``'s, at least float32)."""
    picked = torch.from_numpy(values)[t.cpu().long()]
    dtype = dtype or torch.promote_types(like.dtype, torch.float32)
    return picked.to(device=like.device, dtype=dtype).view(-1, *([1] * (like.dim() - 1)))


class Diffusion:
    """A (possibly respaced) Gaussian diffusion process and its posterior.

    Built from the original ``betas`` and the original timesteps to keep (``use_timesteps``, all by
    default). The kept steps get new betas recomputed from the original alpha-bar, so ``alphas_cumprod``
    at each kept step is unchanged. Schedule attributes are float64 numpy arrays indexed by respaced step:
    ``betas``, ``alphas_cumprod``, ``alphas_cumprod_prev``, ``posterior_variance``,
    ``posterior_log_variance_clipped``, ``posterior_mean_coef1``/``2``. ``timestep_map`` (a long tensor)
    maps respaced steps to original ones; ``original_num_steps`` is the length of the original schedule.

    ``variance`` says how the model's variance is obtained: ``"learned_range"`` (the model outputs 2C
    channels, the second half interpolating between the posterior and beta log-variances), or the fixed
    ``"fixed_large"`` (betas) or ``"fixed_small"`` (posterior variance).
    """

    def __init__(self, betas: np.ndarray | Sequence[float], use_timesteps: Iterable[int] | None = None,
                 variance: str = "learned_range") -> None:
        base = np.asarray(betas, dtype=np.float64)
        if base.ndim != 1 or not ((base > 0) & (base <= 1)).all():
            raise ValueError("betas must be a 1-D array of values in (0, 1]")
        if variance not in VARIANCES:
            raise UserError(f"unknown variance type {variance!r}: use one of {', '.join(VARIANCES)}")
        self.variance = variance
        self.original_num_steps = len(base)
        kept = sorted(set(range(len(base)) if use_timesteps is None else use_timesteps))
        if len(kept) < 2 or kept[0] < 0 or kept[-1] >= len(base):
            raise UserError(f"respacing must keep at least 2 of the {len(base)} timesteps, within range: "
                            "use a larger step count")
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        kept_cumprod = np.cumprod(1.0 - base)[kept]
        self.betas = 1.0 - kept_cumprod / np.append(1.0, kept_cumprod[:-1])
        self._set_schedule()

    def _set_schedule(self) -> None:
        betas = self.betas
        self.num_timesteps = len(betas)
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at step 0; its log takes step 1's value there instead of -inf.
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1],
                                                               self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = ((1.0 - self.alphas_cumprod_prev) * np.sqrt(1.0 - betas)
                                     / (1.0 - self.alphas_cumprod))

    def model_timesteps(self, t: Tensor) -> Tensor:
        """The original timesteps to feed the UNet for respaced steps ``t`` (not rescaled to 0..1000)."""
        return self.timestep_map.to(t.device)[t.long()]

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Noise clean images ``x0`` to step ``t``: sqrt(alpha-bar) x0 + sqrt(1 - alpha-bar) noise."""
        return (gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The clean image implied by noise prediction ``eps`` (inverts :meth:`q_sample`)."""
        return (gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor, pred_xstart: Tensor) -> Tensor:
        """The noise implied by a clean-image estimate; DDIM needs it after pred_xstart was clipped."""
        return ((gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - pred_xstart)
                / gather(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def q_posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0)."""
        return gather(self.posterior_mean_coef1, t, x_t) * x0 + gather(self.posterior_mean_coef2, t, x_t) * x_t

    def _model_log_variance(self, var_values: Tensor | None, x_t: Tensor, t: Tensor) -> Tensor:
        if self.variance == "learned_range":
            frac = (var_values + 1) / 2  # type: ignore[operator]
            return (frac * gather(np.log(self.betas), t, x_t)
                    + (1 - frac) * gather(self.posterior_log_variance_clipped, t, x_t))
        if self.variance == "fixed_large":
            # betas, except that step 0 borrows step 1's posterior variance, as the checkpoints were trained.
            large = np.append(self.posterior_variance[1], self.betas[1:])
            return gather(np.log(large), t, x_t).expand_as(x_t)
        return gather(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    def p_mean_variance(self, model_output: Tensor, x_t: Tensor, t: Tensor, clip_denoised: bool = True) -> Denoised:
        """p(x_{t-1} | x_t) from an eps-predicting model's output: mean, variance, log_variance, pred_xstart."""
        channels = x_t.shape[1]
        learned = self.variance == "learned_range"
        if model_output.shape[1] != (2 * channels if learned else channels):
            raise ValueError(f"model output has {model_output.shape[1]} channels; expected "
                             f"{2 * channels if learned else channels} for variance {self.variance!r}")
        eps, var_values = model_output.split(channels, dim=1) if learned else (model_output, None)
        log_variance = self._model_log_variance(var_values, x_t, t)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        return {"mean": self.q_posterior_mean(pred_xstart, x_t, t), "variance": torch.exp(log_variance),
                "log_variance": log_variance, "pred_xstart": pred_xstart}

    def clipped(self, out: Denoised, x_t: Tensor, t: Tensor) -> Denoised:
        """A denoiser's unclipped output with its clean-image estimate clipped to [-1, 1], and the mean and eps
        that follow from it: what ``p_mean_variance(clip_denoised=True)`` gives, made after the raw estimate
        was used (guidance scores the raw one)."""
        pred_xstart = out["pred_xstart"].clamp(-1, 1)
        return {**out, "pred_xstart": pred_xstart, "mean": self.q_posterior_mean(pred_xstart, x_t, t),
                "eps": self.predict_eps_from_xstart(x_t, t, pred_xstart)}


def create_diffusion(diffusion_steps: int = 1000, noise_schedule: str = "linear", timestep_respacing: str = "",
                     learn_sigma: bool = True) -> Diffusion:
    """The process a guided-diffusion checkpoint was trained with, respaced for sampling."""
    kept = space_timesteps(diffusion_steps, timestep_respacing)
    return Diffusion(beta_schedule(noise_schedule, diffusion_steps), kept,
                     "learned_range" if learn_sigma else "fixed_large")


def denoiser(diffusion: Diffusion, model_fn: ModelFn, clip_denoised: bool = True) -> Denoiser:
    """Turn ``model_fn(x, original_timesteps) -> output`` (an eps-predicting UNet) into a denoiser.

    With ``clip_denoised`` its clean-image estimate is clipped to [-1, 1] (and the mean and eps follow it), as
    the released samplers do; guidance wants the raw estimate (artgen.guidance clips after scoring it).
    """

    def denoise(x_t: Tensor, t: Tensor) -> Denoised:
        out = diffusion.p_mean_variance(model_fn(x_t, diffusion.model_timesteps(t)), x_t, t, clip_denoised)
        out["eps"] = diffusion.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
        return out

    return denoise


def _nonzero_mask(t: Tensor, like: Tensor) -> Tensor:
    """1 where t > 0, 0 at the last step (which adds no noise), shaped to broadcast against ``like``."""
    return (t != 0).to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def ddpm_step(diffusion: Diffusion, denoise: Denoiser, x_t: Tensor, t: Tensor,
              noise: Noise = torch.randn_like) -> Denoised:
    """One ancestral step: x_{t-1} = mean + sigma * noise (no noise at t = 0).

    Returns the denoiser's output with ``sample`` added. The noise is drawn after the denoiser has run, so a
    denoiser that draws random numbers of its own (a guided one's cutouts) draws them first.
    """
    out = denoise(x_t, t)
    sample = out["mean"] + _nonzero_mask(t, x_t) * torch.exp(0.5 * out["log_variance"]) * noise(x_t)
    return {**out, "sample": sample}


def ddim_step(diffusion: Diffusion, denoise: Denoiser, x_t: Tensor, t: Tensor, eta: float = 0.0,
              noise: Noise = torch.randn_like) -> Denoised:
    """One DDIM step (Song et al. eq. 12); eta 0 is deterministic (draws no noise), eta 1 matches DDPM's noise
    level. Returns the denoiser's output with ``sample`` added; noise is drawn after the denoiser has run."""
    out = denoise(x_t, t)
    alpha_bar = gather(diffusion.alphas_cumprod, t, x_t)
    alpha_bar_prev = gather(diffusion.alphas_cumprod_prev, t, x_t)
    sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
    sample = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * out["eps"]
    if eta:
        sample = sample + _nonzero_mask(t, x_t) * sigma * noise(x_t)
    return {**out, "sample": sample}


class SamplingLoop:
    """x_t walked from step ``start`` down to 0 by one sampler: an iterator of one item per step.

    Iterating takes each step with the loop's own ``denoise``; :meth:`step` takes the next one with the
    denoiser it is given (the diffusion generator gives each step a denoiser guided by the objective at that
    point of the run). Each item is the step's output: ``t`` (the respaced step just taken), ``sample``
    (x_{t-1}), ``pred_xstart`` and whatever else the denoiser returned (a guided one's ``loss``). ``x`` is
    the current sample and ``t`` the step the next call takes (-1 once finished); a loop can be rebuilt from
    any ``x`` and step, which is how a run resumes or goes on from a chosen start. Noise comes from
    ``noise(x)``, the global generator by default.
    """

    def __init__(self, diffusion: Diffusion, denoise: Denoiser, x: Tensor, start: int, sampler: str = "ddpm",
                 eta: float = 0.0, noise: Noise = torch.randn_like) -> None:
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        if not -1 <= start < diffusion.num_timesteps:
            raise ValueError(f"start step {start} is outside the schedule's {diffusion.num_timesteps} steps")
        self.diffusion, self.denoise, self.x, self.t = diffusion, denoise, x, start
        self.sampler, self.eta, self.noise = sampler, eta, noise

    def __iter__(self) -> Iterator[Denoised]:
        return self

    def __next__(self) -> Denoised:
        if self.t < 0:
            raise StopIteration
        return self.step()

    def step(self, denoise: Denoiser | None = None) -> Denoised:
        """Take the next step with ``denoise`` (by default the loop's own) and move x to its sample."""
        if self.t < 0:
            raise ValueError("the sampling loop has already reached step 0")
        denoise = denoise or self.denoise
        t = torch.full((self.x.shape[0],), self.t, dtype=torch.long, device=self.x.device)
        # Only the step runs without autograd; a guided denoiser turns it back on for its gradient.
        with torch.no_grad():
            if self.sampler == "ddpm":
                out = ddpm_step(self.diffusion, denoise, self.x, t, self.noise)
            else:
                out = ddim_step(self.diffusion, denoise, self.x, t, self.eta, self.noise)
        out["t"] = self.t
        self.x, self.t = out["sample"], self.t - 1
        return out


def sample_steps(diffusion: Diffusion, denoise: Denoiser, shape: Sequence[int], sampler: str = "ddpm",
                 skip_steps: int = 0, init: Tensor | None = None, generator: torch.Generator | None = None,
                 eta: float = 0.0) -> SamplingLoop:
    """The loop from step ``num_timesteps - 1 - skip_steps`` down to 0, from a start drawn here.

    The start is ``init`` (zeros when skipping without one) noised to that step, or pure noise when starting
    from the top. All noise comes from ``generator``, so a seeded generator reproduces a run. Arguments are
    checked at the call, not at the first iteration.
    """
    if not 0 <= skip_steps < diffusion.num_timesteps:
        raise UserError(f"skip_steps {skip_steps} leaves no step of {diffusion.num_timesteps} to run: "
                        f"use 0 to {diffusion.num_timesteps - 1}")
    device = init.device if init is not None else (generator.device if generator is not None else None)
    dtype = init.dtype if init is not None else torch.float32

    def noise(like: Tensor) -> Tensor:
        drawn = torch.randn(tuple(like.shape), generator=generator, dtype=like.dtype,
                            device=generator.device if generator is not None else like.device)
        return drawn.to(like.device)

    start = diffusion.num_timesteps - 1 - skip_steps
    x = noise(torch.empty(tuple(shape), dtype=dtype, device=device))
    if init is not None or skip_steps:
        x0 = init if init is not None else torch.zeros_like(x)
        x = diffusion.q_sample(x0, torch.full((shape[0],), start, dtype=torch.long, device=x.device), x)
    return SamplingLoop(diffusion, denoise, x, start, sampler, eta, noise)


def sample_loop(diffusion: Diffusion, denoise: Denoiser, shape: Sequence[int], sampler: str = "ddpm",
                skip_steps: int = 0, init: Tensor | None = None, generator: torch.Generator | None = None,
                eta: float = 0.0) -> Tensor:
    """The final sample of :func:`sample_steps`.

    With ``skip_steps = num_timesteps - 1`` only the last step runs, so the result is the model's clean
    estimate from ``init`` noised to step 0, i.e. ``init`` up to noise of std sqrt((1 - alpha-bar_0) /
    alpha-bar_0) (about 0.01 for the linear schedule) passed through the model.
    """
    loop = sample_steps(diffusion, denoise, shape, sampler, skip_steps, init, generator, eta)
    for _ in loop:
        pass
    return loop.x
