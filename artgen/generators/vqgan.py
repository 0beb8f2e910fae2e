"""VQGAN generator: optimizes a continuous code latent that is snapped to the codebook when decoded."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from ..clamps import clamp_toward_range
from ..models import hub
from ..models.vqgan import VQGAN, load_vqgan, vector_quantize
from ..output import cover_resize, fit_image, load_image, pil_to_tensor
from ..prior import GUIDANCE_CUTOUTS, DiffusionPrior
from ..settings import Settings
from ..speed import maybe_compile, to_channels_last
from .diffusion import load_model

log = logging.getLogger("artgen")

if TYPE_CHECKING:
    from ..loop import Guide


def vqgan_files(settings: Settings) -> tuple[Path, Path]:
    """The .yaml and .ckpt to load: local files when given, else the known model from the cache."""
    if settings.vqgan_config and settings.vqgan_checkpoint:
        return Path(settings.vqgan_config), Path(settings.vqgan_checkpoint)
    files = hub.resolve_all(settings.vqgan_model, kind="vqgan")  # fetches or names every missing file at once
    return files["config"], files["checkpoint"]


def fit_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Round a size down to what the model can make (a multiple of its downsampling factor), warning if changed."""
    fitted = (max(factor, width // factor * factor), max(factor, height // factor * factor))
    if fitted != (width, height):
        log.warning("size %dx%d is not a multiple of %d for this VQGAN: using %dx%d",
                    width, height, factor, *fitted)
    return fitted


def optimizer_for(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](params, lr=lr)


def diffusion_prior(settings: Settings, device: torch.device) -> DiffusionPrior | None:
    """The diffusion prior that --prior-scale asks for (None at 0), from the diffusion model the settings name:
    a pull toward pictures that model knows, for a decoder that alone draws poorly (the bundled tiny one)."""
    if not settings.prior_scale:
        return None
    return DiffusionPrior.for_schedule(load_model(settings, device), settings.diffusion_steps, settings.noise_schedule,
                                       settings.prior_draws, settings.prior_guidance_scale,
                                       settings.clamp_max if settings.clamp_grad else None, settings.clamp_by_signal,
                                       device)


class VQGANGenerator:
    """Draws ``decode(quantize(z))``; ``step`` takes an optimizer step on z and keeps z inside the codebook's range."""

    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_toward_range)  # the VQGAN+CLIP notebook's clamp of the decoded image

    def __init__(self, model: VQGAN, z: Tensor, settings: Settings) -> None:
        self.model = model
        self.z = z.detach().clone().requires_grad_(True)
        self.z_start = z.detach().clone()
        self.init_weight = settings.init_weight
        codebook = model.codebook
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.optimizer = optimizer_for(settings.optimizer, [self.z], settings.lr)
        self.num_steps = settings.steps
        self.height, self.width = z.shape[-2] * model.downsample_factor, z.shape[-1] * model.downsample_factor
        self.decode = maybe_compile(model.decode, settings.compile, "the VQGAN decoder")
        self._rendered: Tensor | None = None  # the last render while z has not moved since (detached)
        self.prior_scale = settings.prior_scale
        self.prior = diffusion_prior(settings, z.device)

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device, model: VQGAN | None = None,
                      init: Tensor | None = None) -> "VQGANGenerator":
        """Load the model (or reuse one already loaded) and make the starting latent, from ``init`` if given."""
        if model is None:
            config, checkpoint = vqgan_files(settings)
            model = load_vqgan(config, checkpoint, map_location=device)
        model.decoder.checkpointing = settings.checkpointing
        model = to_channels_last(model, settings.channels_last)
        width, height = fit_size(settings.width, settings.height, model.downsample_factor)
        return cls(model, initial_latent(model, settings, width, height, device, init), settings)

    @staticmethod
    def continue_settings(settings: Settings, steps: int, strength: float) -> Settings:
        """Settings for a run that starts from an image and keeps ``strength`` of it (animation frames)."""
        return dataclasses.replace(settings, steps=steps, init_weight=strength)

    def render(self) -> Tensor:
        z_q = vector_quantize(self.z, self.model.codebook)
        image = self.decode(z_q).add(1).div(2)
        self._rendered = image.detach()
        return image

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """Nothing to choose: the latent starts where ``from_settings`` put it."""
        return 0

    def step(self, guide: Guide) -> Tensor:
        """Render, score (adding the diffusion prior's pull, guided by the same prompts, when there is one), and
        take one optimizer step on z (kept inside the codebook's range); returns the objective's loss."""
        with guide.forward():
            image = self.render()
            loss = guide.loss(image)
            total = loss.float()
            if self.prior is not None:
                prompt_loss = partial(guide.objective.prompt_loss, cutouts=GUIDANCE_CUTOUTS)
                total = total + self.prior_scale * self.prior(image, prompt_loss)
        if self.init_weight:
            total = total + self.init_weight * F.mse_loss(self.z, self.z_start)
        self.optimizer.zero_grad(set_to_none=True)
        guide.backward(total)
        self._rendered = None  # z moves now
        self.optimizer.step()
        with torch.no_grad():
            self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))
        return loss

    def snapshot(self) -> Tensor:
        """The current picture; the step's own render when z has not moved since (a run stopped mid-step saves
        without decoding again)."""
        if self._rendered is not None:
            return self._rendered.float().clamp(0, 1)
        with torch.no_grad():
            return self.render().clamp(0, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"z": self.z.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.z.copy_(state["z"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._rendered = None


def initial_latent(model: VQGAN, settings: Settings, width: int, height: int, device: torch.device,
                   init: Tensor | None = None) -> Tensor:
    """The starting z for each of the batch: the encoded init (tensor or image), pixel noise, or random codes."""
    factor, batch = model.downsample_factor, settings.batch
    if init is not None:
        return encode(model, fit_image(init.to(device), width, height)).repeat(batch // init.shape[0], 1, 1, 1)
    if settings.init_image:
        picture = cover_resize(load_image(settings.init_image, "init image", (width, height)), width, height)
        pixels = pil_to_tensor(picture).to(device)
        return encode(model, pixels).repeat(batch, 1, 1, 1)
    if settings.init == "noise":
        return encode(model, torch.rand(batch, 3, height, width, device=device))
    indices = torch.randint(model.codebook.shape[0], (batch, height // factor, width // factor), device=device)
    return model.codebook[indices].permute(0, 3, 1, 2).contiguous()


def encode(model: VQGAN, pixels: Tensor) -> Tensor:
    with torch.no_grad():
        return model.encode(pixels.mul(2).sub(1))
