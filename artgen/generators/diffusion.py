"""CLIP-guided diffusion: each loop step is one sampler step, guided by the gradient of the loop's loss.

``render()`` runs the UNet on x_t and returns the predicted clean image blended with x_t by
sqrt(1 - alpha-bar_t), as the CLIP-guided diffusion notebooks score it; ``step(loss)`` turns the loss's
gradient w.r.t. x_t into a guidance term and lets a plain sampler (DDPM or DDIM) take the step through
``guided_denoise``. The sampler never sees CLIP.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..images import fit_image, read_init_image
from ..models import factory
from ..models.diffusion import Diffusion, beta_schedule, create_diffusion, ddim_step, ddpm_step, guided_denoise
from ..models.unet import UNetConfig, UNetModel, downsample_factor
from ..settings import Settings
from ..speed import maybe_compile, to_channels_last

log = logging.getLogger("artgen")


def unet_config(settings: Settings) -> UNetConfig:
    """The UNet architecture: from --diffusion-config's YAML, else the known model's."""
    return factory.unet_config(settings.diffusion_model, settings.diffusion_config)


def load_model(settings: Settings, device: torch.device) -> UNetModel:
    """Load the UNet from a local file or the models cache, in half precision on CUDA when asked."""
    return factory.load_unet_model(settings.diffusion_model, settings.diffusion_checkpoint, settings.diffusion_config,
                                   device, settings.diffusion_fp16)


def sampling_diffusion(settings: Settings, learn_sigma: bool) -> Diffusion:
    """The respaced diffusion the sampler walks: --timestep-respacing, else --steps evenly spaced steps."""
    return create_diffusion(settings.diffusion_steps, settings.noise_schedule,
                            settings.timestep_respacing or str(settings.steps), learn_sigma)


def check_size(settings: Settings, config: UNetConfig) -> None:
    """Refuse sizes the UNet cannot make: each side must be a multiple of its downsampling factor."""
    factor = downsample_factor(config)
    if settings.width % factor or settings.height % factor:
        raise UsageError(f"size {settings.width}x{settings.height} is not possible with this diffusion model: "
                         f"width and height must be multiples of {factor} (e.g. {config.image_size})")


def blend_prediction(predicted: Tensor, x_t: Tensor, noise_share: float | Tensor) -> Tensor:
    """What CLIP scores at step t: the predicted clean picture mixed with x_t by the step's noise share
    (sqrt(1 - alpha-bar)), so mostly the prediction while x_t is mostly noise, and mostly x_t itself once it holds
    the picture. The diffusion generator and the prior score the same thing, so one preset's guidance suits both."""
    return predicted * noise_share + x_t * (1 - noise_share)


def limit_guidance(grad: Tensor, limit: float | Tensor | None, per_draw: bool = False) -> Tensor:
    """CLIP's guidance gradient with NaNs zeroed and its RMS cut to at most ``limit`` (None: left as it is), over the
    whole batch or, with ``per_draw``, over each draw on its own (``limit`` may then hold one value per draw). The
    raw gradient's size swings by orders of magnitude between steps; the limit keeps any one step from taking over."""
    grad = torch.nan_to_num(grad)
    if limit is None:
        return grad
    rms = grad.flatten(1).square().mean(1).sqrt().view(-1, 1, 1, 1) if per_draw else grad.square().mean().sqrt()
    return grad * rms.clamp(max=limit) / rms.clamp(min=1e-12)


class DiffusionGenerator:
    """Owns x_t and the position in the sampling schedule; one loop step is one sampler step."""

    default_clip_guidance_scale = 5000.0
    scoring_clamp = staticmethod(clamp_straight_through)  # guidance reaches x_t whole, as in the reference notebooks

    def __init__(self, model: UNetModel, diffusion: Diffusion, settings: Settings, init: Tensor | None,
                 device: torch.device) -> None:
        self.model, self.diffusion, self.settings = model, diffusion, settings
        model.checkpointing = settings.checkpointing
        self.unet = maybe_compile(to_channels_last(model, settings.channels_last), settings.compile, "the UNet")
        self.height, self.width = settings.height, settings.width
        start = diffusion.num_timesteps - 1 - settings.skip_steps
        self.timesteps = list(range(start, -1, -1))
        self.num_steps = len(self.timesteps)
        self.index = 0
        self.init = init
        self.x = self._start(torch.randn((settings.batch, 3, settings.height, settings.width), device=device))
        self._pred = None
        self._render: tuple[Tensor, dict[str, Tensor], Tensor] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device, model: UNetModel | None = None,
                      init: Tensor | None = None) -> "DiffusionGenerator":
        """Load the model (or reuse one); start from noise, or from ``init`` ([N,3,H,W] in [0,1]) or the init image."""
        config = unet_config(settings)
        check_size(settings, config)
        diffusion = sampling_diffusion(settings, config.learn_sigma)
        if settings.skip_steps >= diffusion.num_timesteps:
            raise UsageError(f"--skip-steps {settings.skip_steps} leaves nothing to do: it must be less than the "
                             f"{diffusion.num_timesteps} sampling steps")
        if init is None and settings.init_image:
            init = read_init_image(settings.init_image, settings.width, settings.height)
        if init is not None:
            init = fit_image(init.to(device), settings.width, settings.height).mul(2).sub(1)
            init = init.repeat(settings.batch // init.shape[0], 1, 1, 1)
        return cls(model if model is not None else load_model(settings, device), diffusion, settings, init, device)

    @staticmethod
    def continue_settings(settings: Settings, steps: int, strength: float) -> Settings:
        """Settings for a run that starts from an image and keeps ``strength`` of it: that share of steps skipped."""
        if steps != settings.steps:
            settings = dataclasses.replace(settings, steps=steps, timestep_respacing=None)
        total = sampling_diffusion(settings, learn_sigma=True).num_timesteps
        return dataclasses.replace(settings, skip_steps=min(round(strength * total), total - 1))

    def _start(self, noise: Tensor) -> Tensor:
        """x_t at the first step: the noise itself, or the init image noised to that step."""
        if self.init is None:
            return noise
        return self.diffusion.q_sample(self.init, self._t(self.timesteps[0], noise), noise)

    @staticmethod
    def _t(step: int, like: Tensor) -> Tensor:
        return torch.full((like.shape[0],), step, dtype=torch.long, device=like.device)

    def _model_output(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, self.diffusion.model_timesteps(t))

    def render(self) -> Tensor:
        t = self._t(self.timesteps[self.index], self.x)
        x = self.x.detach().requires_grad_(True)
        output = self._model_output(x, t)
        out = self.diffusion.p_mean_variance(output, x, t, clip_denoised=False)
        noise_share = float(self.diffusion.sqrt_one_minus_alphas_cumprod[self.timesteps[self.index]])
        blended = blend_prediction(out["pred_xstart"], x, noise_share)
        self._render = (x, output, blended)
        self._pred = out["pred_xstart"].detach()
        return blended.add(1).div(2)

    def step(self, loss: Tensor) -> None:
        x, output, blended = self._render
        if self.settings.init_scale and self.init is not None:
            loss = loss + self.settings.init_scale * (blended - self.init).pow(2).mean()
        grad = -torch.autograd.grad(loss, x)[0]
        grad = limit_guidance(grad, self._clamp_limit() if self.settings.clamp_grad else None)
        out = self._sampler_step(self.x, self.index, output.detach(), grad)
        self.x = out["sample"]
        self._pred = out["pred_xstart"]
        self._render = None
        self.index += 1

    def _sampler_step(self, x: Tensor, index: int, output: Tensor, grad: Tensor | None) -> dict[str, Tensor]:
        """Step ``index`` of the chosen sampler from x_t, given the UNet's output there and the guidance gradient."""
        denoise = guided_denoise(self.diffusion, lambda *_: output, None if grad is None else lambda *_: grad)
        t = self._t(self.timesteps[index], x)
        with torch.no_grad():
            if self.settings.sampler == "ddpm":
                return ddpm_step(self.diffusion, denoise, x, t, torch.randn_like(x))
            eta = self.settings.eta
            return ddim_step(self.diffusion, denoise, x, t, eta, torch.randn_like(x) if eta else None)

    def preselect(self, count: int, share: float, score: Callable[[Tensor], Tensor], preview_steps: int = 0,
                  progress: bool = False) -> int:
        """Go on from the best of ``count`` starts per image (one per image of the batch, by ``score``); returns
        the steps taken, ``share`` of them.

        Why: the first, noisiest steps settle the colours and the layout, and there guidance reaches least (its
        gradient is weakest, or clamped by signal). Unguided steps cost one UNet pass per start and no CLIP
        gradient. Each start is judged either by its predicted picture after ``share`` of the steps, sampled
        unguided, or, with ``preview_steps``, by a finished picture drawn unguided in that many DDIM steps; the
        best picture is then noised back to ``share`` of the way. A finished picture shows CLIP what the start
        becomes, where the early prediction is a blur: with the bundled models (tests/zoo_report.py, one thread,
        72 prompts) 64 previews of 5 steps drew the asked colour in 99% of the images against 93% from 32 starts
        judged after 20% of the steps, in the same time; the asked shape equally often (43%, 42%).
        """
        steps = min(max(1, round(share * self.num_steps)), self.num_steps - 1)
        if steps < 1:
            return 0  # a single step: nothing to run unguided before it
        starts = torch.cat([self.x] + [self._start(torch.randn_like(self.x)) for _ in range(count - 1)])
        with torch.no_grad(), tqdm(desc=f"preselecting {count} starts", unit="step", disable=not progress) as bar:
            x, pictures = ((starts, self._previews(starts, preview_steps, bar)) if preview_steps
                           else self._unguided(starts, steps, bar))
            best = score(pictures.add(1).div(2)).topk(len(self.x)).indices
        x, pictures = x[best], pictures[best]
        if preview_steps:  # the finished picture, noised back to the step the run goes on from
            x = self.diffusion.q_sample(pictures, self._t(self.timesteps[steps], x), torch.randn_like(x))
        self.x, self._pred, self.index = x, pictures, steps
        return steps

    def _unguided(self, x: Tensor, steps: int, bar: tqdm) -> tuple[Tensor, Tensor]:
        """x after the first ``steps`` sampler steps without guidance, and the predicted picture there."""
        bar.reset(total=steps)
        for index in range(steps):
            out = self._sampler_step(x, index, self._model_output(x, self._t(self.timesteps[index], x)), None)
            x = out["sample"]
            bar.update(1)
        return x, out["pred_xstart"]

    def _previews(self, x: Tensor, steps: int, bar: tqdm) -> Tensor:
        """Finished unguided pictures of the starts ``x`` (at the first step), in ``steps`` deterministic DDIM steps."""
        top = int(self.diffusion.timestep_map[self.timesteps[0]])
        kept = {round(top * i / (steps - 1)) for i in range(steps)}
        coarse = Diffusion(beta_schedule(self.settings.noise_schedule, self.diffusion.original_num_steps), kept,
                           self.diffusion.variance)
        denoise = guided_denoise(coarse, lambda x_t, t: self.unet(x_t, t))
        bar.reset(total=coarse.num_timesteps)
        for step in range(coarse.num_timesteps - 1, -1, -1):
            x = ddim_step(coarse, denoise, x, self._t(step, x))["sample"]
            bar.update(1)
        return x

    def _clamp_limit(self) -> float:
        """The guidance gradient's RMS limit at this step.

        With --clamp-by-signal it shrinks with sqrt(alpha-bar_t): x_t holds the picture only at that scale, so
        the UNet reads a push of size g on x_t as a change of g / sqrt(alpha-bar_t) in the picture. A fixed
        limit lets the first, noisiest steps (where the prediction is still far outside the pixel range and
        CLIP's gradient means little) set the colours; the scaled limit gives every step the same reach.
        """
        if not self.settings.clamp_by_signal:
            return self.settings.clamp_max
        alpha_bar = float(self.diffusion.alphas_cumprod[self.timesteps[self.index]])
        return self.settings.clamp_max * alpha_bar ** 0.5

    def snapshot(self) -> Tensor:
        """The finished sample, or while sampling the latest clean-image prediction."""
        current = self.x if self.index >= self.num_steps or self._pred is None else self._pred
        return current.detach().float().add(1).div(2).clamp(0, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x.detach().clone(), "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = state["x"].to(self.x.device)
        self.index = int(state["index"])
        self._pred = None
