"""VQGAN generator: optimizes a continuous code latent that is snapped to the codebook when decoded.

Design: the latent z is what Adam moves; each render quantizes it to the nearest codebook entries (with a
straight-through gradient) and decodes the codes with taming-transformers' decoder. Its options also hold
an optional diffusion prior (artgen.prior), a score-distillation pull toward pictures a diffusion model knows,
for models whose decoder alone draws poorly (the bundled tiny one). With --tile the decoder pads circularly
(artgen.models.tiling): the codes lie on a torus and the decoded picture continues across its borders. An
edit's mask (Canvas.mask) lets only the codes under it move.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..clamps import clamp_toward_range
from ..errors import UsageError
from ..memory import NetworkShape, vqgan_ddconfig, vqgan_shape
from ..images import fit_image
from ..masks import latent_cells
from ..models import factory
from ..models.tiling import make_periodic, periodic_if
from ..models.vqgan import VQGAN, vector_quantize
from ..prior import GUIDANCE_CUTOUTS, DiffusionPrior
from ..settings import require, require_choice, setting
from ..speed import maybe_compile, to_channels_last
from .base import Canvas, ModelCache, Options

log = logging.getLogger("artgen")

if TYPE_CHECKING:
    from ..loop import Guide
    from ..settings import RunSettings

OPTIMIZERS = ("adam", "adamw")
INITS = ("random", "noise")
NOISE_SCHEDULES = ("linear", "cosine")
PRIOR_TRAINING_STEPS = 1000  # the timesteps guided-diffusion models are trained with


@dataclass
class VQGANOptions(Options):
    """The VQGAN generator's options."""

    vqgan_model: str = setting("vqgan_imagenet_f16_16384", "Known VQGAN name (see `artgen models list`).")
    vqgan_config: str | None = setting(None, "Local taming .yaml config (with --vqgan-checkpoint; no download).")
    vqgan_checkpoint: str | None = setting(None, "Local taming .ckpt checkpoint (with --vqgan-config).")
    lr: float = setting(0.1, "Learning rate of the latent codes.")
    optimizer: str = setting("adam", "Optimizer for the latent.", choices=OPTIMIZERS)
    init: str = setting("random", "Start without an init image: random codebook entries or encoded pixel noise.",
                        choices=INITS)
    init_weight: float = setting(0.0, "Weight of a pull of the codes back toward where they started (the init "
                                      "image's); animations set it from --init-strength.")
    prior_scale: float = setting(0.0, "Weight of a diffusion prior (score distillation from --prior-model) that "
                                      "pulls the image toward pictures that model knows; helps weak decoders (0: off).")
    prior_guidance_scale: float = setting(0.0, "CLIP guidance of the prior's prediction, as --clip-guidance-scale "
                                               "guides the diffusion generator (0: an unguided prior).")
    prior_draws: int = setting(2, "Noise draws of the prior per step: more is steadier and slower.")
    prior_model: str = setting("256x256_diffusion_uncond", "Known diffusion model of the prior (see `artgen "
                                                           "models list`).")
    prior_checkpoint: str | None = setting(None, "Local guided-diffusion .pt for the prior (no download).")
    prior_config: str | None = setting(None, "YAML file of UNet settings for a --prior-checkpoint of another "
                                             "architecture.")
    prior_noise_schedule: str = setting("linear", "Beta schedule the prior's model was trained with.",
                                        choices=NOISE_SCHEDULES)
    prior_clamp_max: float = setting(0.05, "RMS limit of the prior's CLIP guidance gradient (0: no limit).")
    prior_clamp_by_signal: bool = setting(False, "Scale --prior-clamp-max by sqrt(alpha-bar) of each draw, so "
                                                 "that the noisiest draws, where a push counts most, push least.")

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("lr", "prior_draws"), non_negative=("init_weight", "prior_scale",
                "prior_guidance_scale", "prior_clamp_max"), finite=("prior_scale", "prior_guidance_scale"))
        require_choice(self, "optimizer", OPTIMIZERS)
        require_choice(self, "init", INITS)
        require_choice(self, "prior_noise_schedule", NOISE_SCHEDULES)
        if (self.vqgan_config is None) != (self.vqgan_checkpoint is None):
            raise UsageError("--vqgan-config and --vqgan-checkpoint go together: give both local files or neither")

    def for_frame(self, steps: int, run_steps: int, strength: float) -> "VQGANOptions":
        """A frame pulls its codes toward its start image by ``strength``."""
        return dataclasses.replace(self, init_weight=strength)

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        return [f"a lower --lr (now {self.lr})"]

    def network_shape(self, on_cuda: bool) -> NetworkShape:
        levels, attention, factor = vqgan_shape(vqgan_ddconfig(self.vqgan_model, self.vqgan_config))
        return NetworkShape(levels, attention, factor, "the VQGAN decoder's activations")


def load_model(options: VQGANOptions, device: torch.device, tile: bool) -> VQGAN:
    """The VQGAN of the options; with ``tile`` its decoder pads circularly, so it draws a seamless tile."""
    model = factory.load_vqgan_model(options.vqgan_model, options.vqgan_config, options.vqgan_checkpoint, device)
    if tile:
        make_periodic(model.decoder)
    return model


def diffusion_prior(options: VQGANOptions, device: torch.device, models: ModelCache,
                    tile: bool = False) -> DiffusionPrior | None:
    """The diffusion prior that --prior-scale asks for (None at 0), from --prior-model's UNet: a pull toward
    pictures that model knows, for a decoder that alone draws poorly (the bundled tiny one). With ``tile`` the
    UNet pads circularly, so the prior does not pull a seamless tile toward pictures with borders."""
    if not options.prior_scale:
        return None
    fp16 = device.type == "cuda"
    key = ("unet", options.prior_model, options.prior_checkpoint, options.prior_config, device, fp16, tile)
    unet = models.get(key, lambda: periodic_if(tile, factory.load_unet_model(
        options.prior_model, options.prior_checkpoint, options.prior_config, device, fp16, "--prior-config")))
    return DiffusionPrior.for_schedule(unet, PRIOR_TRAINING_STEPS, options.prior_noise_schedule, options.prior_draws,
                                       options.prior_guidance_scale, options.prior_clamp_max or None,
                                       options.prior_clamp_by_signal, device)


def fit_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """Round a size down to what the model can make (a multiple of its downsampling factor), warning if changed."""
    fitted = (max(factor, width // factor * factor), max(factor, height // factor * factor))
    if fitted != (width, height):
        log.warning("size %dx%d is not a multiple of %d for this VQGAN: using %dx%d",
                    width, height, factor, *fitted)
    return fitted


def optimizer_for(name: str, params: list[Tensor], lr: float) -> torch.optim.Optimizer:
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](params, lr=lr)


class VQGANGenerator:
    """Draws ``decode(quantize(z))``; ``step`` takes an optimizer step on z and keeps z inside the codebook's range."""

    Options = VQGANOptions
    title = "VQGAN"
    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_toward_range)  # the VQGAN+CLIP notebook's clamp of the decoded image

    def __init__(self, model: VQGAN, z: Tensor, options: VQGANOptions, canvas: Canvas,
                 prior: DiffusionPrior | None = None) -> None:
        self.model = model
        self.z = z.detach().clone().requires_grad_(True)
        self.z_start = z.detach().clone()
        self.init_weight = options.init_weight
        codebook = model.codebook
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.optimizer = optimizer_for(options.optimizer, [self.z], options.lr)
        self.num_steps = canvas.steps
        self.height, self.width = z.shape[-2] * model.downsample_factor, z.shape[-1] * model.downsample_factor
        self.decode = maybe_compile(model.decode, canvas.compile, "the VQGAN decoder")
        self._rendered: Tensor | None = None  # the last render while z has not moved since (detached)
        self.prior_scale, self.prior = options.prior_scale, prior
        # an edit moves only the codes under its mask (and their neighbours); the rest stay the init image's
        self.cells = None if canvas.mask is None else latent_cells(canvas.mask, model.downsample_factor)

    @classmethod
    def create(cls, options: VQGANOptions, canvas: Canvas, init: Tensor | None = None,
               models: ModelCache | None = None) -> "VQGANGenerator":
        """Load the model (or reuse the run's) and make the starting latent, from ``init`` if given."""
        models = models or ModelCache()
        key = ("vqgan", options.vqgan_model, options.vqgan_config, options.vqgan_checkpoint, canvas.device,
               canvas.tile)
        model = models.get(key, lambda: load_model(options, canvas.device, canvas.tile))
        model.decoder.checkpointing = canvas.checkpointing
        model = to_channels_last(model, canvas.channels_last)
        width, height = fit_size(canvas.width, canvas.height, model.downsample_factor)
        z = initial_latent(model, options.init, canvas.batch, width, height, canvas.device, init)
        return cls(model, z, options, canvas, diffusion_prior(options, canvas.device, models, canvas.tile))

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """Nothing to choose: the latent starts where ``create`` put it."""
        return 0

    def render(self) -> Tensor:
        z_q = vector_quantize(self.z, self.model.codebook)
        image = self.decode(z_q).add(1).div(2)
        self._rendered = image.detach()
        return image

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
        if self.cells is not None:
            self.z.grad.mul_(self.cells)
        self.optimizer.step()
        with torch.no_grad():
            self.z.copy_(torch.maximum(torch.minimum(self.z, self.z_max), self.z_min))
            if self.cells is not None:  # no optimizer (AdamW's decay) moves a kept code
                self.z.copy_(torch.where(self.cells > 0, self.z, self.z_start))
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


def initial_latent(model: VQGAN, init_kind: str, batch: int, width: int, height: int, device: torch.device,
                   init: Tensor | None = None) -> Tensor:
    """The starting z for each of the batch: the encoded init image, pixel noise, or random codes."""
    factor = model.downsample_factor
    if init is not None:
        return encode(model, fit_image(init.to(device), width, height)).repeat(batch // init.shape[0], 1, 1, 1)
    if init_kind == "noise":
        return encode(model, torch.rand(batch, 3, height, width, device=device))
    indices = torch.randint(model.codebook.shape[0], (batch, height // factor, width // factor), device=device)
    return model.codebook[indices].permute(0, 3, 1, 2).contiguous()


def encode(model: VQGAN, pixels: Tensor) -> Tensor:
    with torch.no_grad():
        return model.encode(pixels.mul(2).sub(1))
