"""CLIP-guided diffusion: each loop step is one sampler step, guided by the objective at that point of the run.

Design: the generator owns x_t as a sampling loop (artgen.models.sampling.SamplingLoop) and its place in the
schedule. Each loop step hands the loop a denoiser guided by that step's objective (artgen.guidance): the
guided denoiser scores the UNet's predicted picture, as the CLIP-guided diffusion notebooks do, and moves the
prediction along the gradient; the sampler (DDPM or DDIM) steps over it and never sees CLIP. The same loop,
unguided, draws the --preselect starts and their previews.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import Tensor
from tqdm import tqdm

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..files import readable_file
from ..guidance import Guidance, guided_denoiser
from ..models import hub
from ..models.sampling import Diffusion, SamplingLoop, beta_schedule, create_diffusion, denoiser
from ..models.unet import KNOWN_CONFIGS, UNetConfig, UNetModel, downsample_factor, load_unet
from ..output import cover_resize, fit_image, load_image, pil_to_tensor
from ..settings import Settings
from ..speed import maybe_compile, to_channels_last

log = logging.getLogger("artgen")

if TYPE_CHECKING:
    from ..loop import Guide


def unet_config(settings: Settings) -> UNetConfig:
    """The UNet architecture: from --diffusion-config's YAML, else the known model's."""
    if settings.diffusion_config:
        return _config_from_file(Path(settings.diffusion_config))
    known = hub.known_model(settings.diffusion_model, "diffusion")
    if "config" in known.files:  # a model that carries its own config, such as the bundled one
        return _config_from_file(hub.resolve(settings.diffusion_model, "config", kind="diffusion"))
    return KNOWN_CONFIGS[settings.diffusion_model]


def _config_from_file(path: Path) -> UNetConfig:
    readable_file(path, "--diffusion-config", error=UsageError)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise UsageError(f"--diffusion-config {path} is not readable YAML ({type(error).__name__}): fix the file") from None
    names = {f.name for f in dataclasses.fields(UNetConfig)}
    if not isinstance(values, dict) or not set(values) <= names:
        unknown = sorted(set(values) - names) if isinstance(values, dict) else "not a mapping"
        raise UsageError(f"--diffusion-config {path}: expected UNet settings ({', '.join(sorted(names))}); "
                         f"got {unknown}")
    return UNetConfig(**values)


def load_model(settings: Settings, device: torch.device) -> UNetModel:
    """Load the UNet from a local file or the models cache, in half precision on CUDA when asked."""
    config = unet_config(settings)
    if device.type == "cuda" and settings.diffusion_fp16:
        config = dataclasses.replace(config, use_fp16=True)
    path = (Path(settings.diffusion_checkpoint) if settings.diffusion_checkpoint
            else hub.resolve(settings.diffusion_model, "checkpoint", kind="diffusion"))
    return load_unet(path, config, map_location=device)


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


class DiffusionGenerator:
    """Owns x_t and the position in the sampling schedule; one loop step is one sampler step."""

    default_clip_guidance_scale = 5000.0
    scoring_clamp = staticmethod(clamp_straight_through)  # guidance reaches x_t whole, as in the reference notebooks

    def __init__(self, model: UNetModel, diffusion: Diffusion, settings: Settings, init: Tensor | None,
                 device: torch.device) -> None:
        self.model, self.diffusion, self.options = model, diffusion, settings
        model.checkpointing = settings.checkpointing
        self.unet = maybe_compile(to_channels_last(model, settings.channels_last), settings.compile, "the UNet")
        self.height, self.width = settings.height, settings.width
        start = diffusion.num_timesteps - 1 - settings.skip_steps
        self.timesteps = list(range(start, -1, -1))
        self.num_steps = len(self.timesteps)
        self.init = init
        self.guidance = Guidance(settings.clamp_max if settings.clamp_grad else None, settings.clamp_by_signal,
                                 init, settings.init_scale)
        self._sampling = self._loop(self._start(torch.randn((settings.batch, 3, settings.height, settings.width),
                                                            device=device)), 0)
        self._pred: Tensor | None = None  # the latest clean-image prediction, shown while sampling

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
            size = (settings.width, settings.height)
            picture = cover_resize(load_image(settings.init_image, "init image", size), *size)
            init = pil_to_tensor(picture)
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

    @property
    def x(self) -> Tensor:
        """x_t where the sampling has got to."""
        return self._sampling.x

    @property
    def index(self) -> int:
        """The loop steps taken so far."""
        return self.timesteps[0] - self._sampling.t

    def _loop(self, x: Tensor, index: int) -> SamplingLoop:
        """The sampling loop from x after ``index`` steps, stepping unguided unless a step is given a denoiser."""
        return SamplingLoop(self.diffusion, denoiser(self.diffusion, self.unet), x, self.timesteps[0] - index,
                            self.options.sampler, self.options.eta)

    def _start(self, noise: Tensor) -> Tensor:
        """x_t at the first step: the noise itself, or the init image noised to that step."""
        if self.init is None:
            return noise
        return self.diffusion.q_sample(self.init, self._t(self.timesteps[0], noise), noise)

    @staticmethod
    def _t(step: int, like: Tensor) -> Tensor:
        return torch.full((like.shape[0],), step, dtype=torch.long, device=like.device)

    def step(self, guide: Guide) -> Tensor:
        """One sampler step over the UNet guided by ``guide``'s objective; returns the objective's loss."""
        raw = denoiser(self.diffusion, self.unet, clip_denoised=False)  # the objective scores the raw prediction
        out = self._sampling.step(guided_denoiser(self.diffusion, raw, guide, self.guidance))
        self._pred = out["pred_xstart"]
        return out["loss"]

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """With --preselect K (2 or more), go on from the best of K starts per image (one per image of the batch,
        by ``score``); returns the steps taken, --preselect-share of them (0 with fewer than 2 starts).

        Why: the first, noisiest steps settle the colours and the layout, and there guidance reaches least (its
        gradient is weakest, or clamped by signal). Unguided steps cost one UNet pass per start and no CLIP
        gradient. Each start is judged either by its predicted picture after the share of the steps, sampled
        unguided, or, with --preselect-preview S, by a finished picture drawn unguided in S DDIM steps; the
        best picture is then noised back to the share of the way. A finished picture shows CLIP what the start
        becomes, where the early prediction is a blur: with the bundled models (tests/zoo_report.py, one thread,
        72 prompts) 64 previews of 5 steps drew the asked colour in 99% of the images against 93% from 32 starts
        judged after 20% of the steps, in the same time; the asked shape equally often (43%, 42%).
        """
        count, preview_steps = self.options.preselect, self.options.preselect_preview
        steps = min(max(1, round(self.options.preselect_share * self.num_steps)), self.num_steps - 1)
        if count <= 1 or steps < 1:
            return 0  # one start is no choice; a single step has nothing to run unguided before it
        starts = torch.cat([self.x] + [self._start(torch.randn_like(self.x)) for _ in range(count - 1)])
        with torch.no_grad(), tqdm(desc=f"preselecting {count} starts", unit="step", disable=not progress) as bar:
            x, pictures = ((starts, self._previews(starts, preview_steps, bar)) if preview_steps
                           else self._unguided(starts, steps, bar))
            best = score(pictures.add(1).div(2)).topk(len(self.x)).indices
        x, pictures = x[best], pictures[best]
        if preview_steps:  # the finished picture, noised back to the step the run goes on from
            x = self.diffusion.q_sample(pictures, self._t(self.timesteps[steps], x), torch.randn_like(x))
        self._sampling, self._pred = self._loop(x, steps), pictures
        return steps

    def _unguided(self, x: Tensor, steps: int, bar: tqdm) -> tuple[Tensor, Tensor]:
        """x after the first ``steps`` sampler steps without guidance, and the predicted picture there."""
        bar.reset(total=steps)
        loop = self._loop(x, 0)
        for out in itertools.islice(loop, steps):
            bar.update(1)
        return loop.x, out["pred_xstart"]

    def _previews(self, x: Tensor, steps: int, bar: tqdm) -> Tensor:
        """Finished unguided pictures of the starts ``x`` (at the first step), in ``steps`` deterministic DDIM steps."""
        top = int(self.diffusion.timestep_map[self.timesteps[0]])
        kept = {round(top * i / (steps - 1)) for i in range(steps)}
        coarse = Diffusion(beta_schedule(self.options.noise_schedule, self.diffusion.original_num_steps), kept,
                           self.diffusion.variance)
        loop = SamplingLoop(coarse, denoiser(coarse, self.unet), x, coarse.num_timesteps - 1, "ddim")
        bar.reset(total=coarse.num_timesteps)
        for _ in loop:
            bar.update(1)
        return loop.x

    def snapshot(self) -> Tensor:
        """The finished sample, or while sampling the latest clean-image prediction."""
        current = self.x if self.index >= self.num_steps or self._pred is None else self._pred
        return current.detach().float().add(1).div(2).clamp(0, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x.detach().clone(), "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._sampling = self._loop(state["x"].to(self.x.device), int(state["index"]))
        self._pred = None
