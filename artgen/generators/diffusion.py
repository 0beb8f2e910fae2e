"""CLIP-guided diffusion: each loop step is one sampler step, guided by the objective at that point of the run.

Design: the generator owns x_t as a sampling loop (artgen.models.sampling.SamplingLoop) and its place in the
schedule. Each loop step hands the loop a denoiser guided by that step's objective (artgen.guidance): the
guided denoiser scores the UNet's predicted picture, as the CLIP-guided diffusion notebooks do, and moves the
prediction along the gradient; the sampler (DDPM or DDIM) steps over it and never sees CLIP. The same loop,
unguided, draws the --preselect starts and their previews. With --tile the UNet pads circularly
(artgen.models.tiling), so it denoises the picture as a tile that continues across its borders. In an edit
(Canvas.mask) the region outside the mask is the init image noised to each step's level, as in RePaint.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..guidance import Guidance, guided_denoiser
from ..images import fit_image
from ..memory import NetworkShape, unet_shape
from ..models import factory
from ..models.sampling import Diffusion, SamplingLoop, beta_schedule, create_diffusion, denoiser
from ..models.tiling import periodic_if
from ..models.unet import UNetConfig, UNetModel, downsample_factor
from ..settings import require, require_choice, setting
from ..speed import maybe_compile, to_channels_last
from .base import Canvas, ModelCache, Options

log = logging.getLogger("artgen")

if TYPE_CHECKING:
    from ..loop import Guide
    from ..settings import RunSettings


NOISE_SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")


@dataclass
class DiffusionOptions(Options):
    """The diffusion generator's options."""

    diffusion_model: str = setting("256x256_diffusion_uncond", "Known guided-diffusion model name (see `artgen "
                                                               "models list`).")
    diffusion_checkpoint: str | None = setting(None, "Local guided-diffusion .pt (no download); its architecture "
                                                     "is --diffusion-model's unless --diffusion-config is given.")
    diffusion_config: str | None = setting(None, "YAML file of UNet settings (image_size, num_channels, ...) for "
                                                 "a checkpoint of another architecture.")
    diffusion_steps: int = setting(1000, "Timesteps the diffusion model was trained with.")
    timestep_respacing: str | None = setting(None, 'Sampling steps: "250", "ddim50", "50,100,..." (default: '
                                                   "--steps).")
    noise_schedule: str = setting("linear", "Beta schedule the model was trained with.", choices=NOISE_SCHEDULES)
    sampler: str = setting("ddpm", "Diffusion sampler.", choices=SAMPLERS)
    eta: float = setting(0.0, "DDIM eta (0: deterministic).")
    skip_steps: int = setting(0, "Start this many steps in, from the noised init image.")
    init_scale: float = setting(0.0, "Weight of the pixel loss toward the init image.")
    clamp_grad: bool = setting(True, "Limit the guidance gradient's RMS to --clamp-max.")
    clamp_max: float = setting(0.05, "The guidance gradient's RMS limit.")
    clamp_by_signal: bool = setting(False, "Scale --clamp-max by sqrt(alpha-bar) of each step, so that the "
                                           "noisiest steps, where a push counts most, push least.")
    diffusion_fp16: bool = setting(True, "Run the UNet in half precision on CUDA (ignored on the CPU).")
    preselect: int = setting(0, "Start each image from the best of this many noise images by CLIP score, each "
                                "sampled unguided: a better layout for one UNet pass each (0 or 1: off).")
    preselect_share: float = setting(0.4, "Share of the steps the --preselect starts run unguided, or that the "
                                          "best preview is noised back to.")
    preselect_preview: int = setting(0, "Judge each --preselect start by a finished picture drawn unguided in this "
                                        "many DDIM steps (0: by its prediction after --preselect-share of the steps).")
    resample: int = setting(1, "Edits: take each step this many times, noising the result back in between "
                               "(RePaint's resampling), so the repainted part agrees better with the kept one; as "
                               "many times slower.")

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("diffusion_steps", "resample"), non_negative=("preselect", "preselect_preview",
                "skip_steps", "eta", "clamp_max"), finite=("init_scale",))
        require_choice(self, "sampler", SAMPLERS)
        require_choice(self, "noise_schedule", NOISE_SCHEDULES)
        if self.noise_schedule == "linear" and self.diffusion_steps <= 20:
            # the linear schedule scales its last beta by 1000/steps; at 20 steps or fewer it reaches 1
            raise UsageError(f"--diffusion-steps {self.diffusion_steps} is too few for the linear noise schedule: "
                             "use more than 20 (models are trained with 1000) or --noise-schedule cosine")
        if self.preselect > 1 and not 0 < self.preselect_share < 1:
            raise UsageError(f"--preselect-share must lie between 0 and 1 (a share of the steps), got "
                             f"{self.preselect_share}")
        if self.resample > 1 and not (run.mask or run.mask_box or run.extend):
            raise UsageError(f"--resample {self.resample} acts on edits: give --mask, --mask-box or --extend (or "
                             "drop it)")
        if self.preselect > 1 and self.preselect_preview == 1:
            raise UsageError(f"--preselect-preview draws each start in that many DDIM steps: give 2 or more (or 0 "
                             f"to judge the starts part-way), got {self.preselect_preview}")

    def for_frame(self, steps: int, run_steps: int, strength: float) -> "DiffusionOptions":
        """A frame skips ``strength`` of its sampling steps, starting from its start image noised that far."""
        options = self if steps == run_steps else dataclasses.replace(self, timestep_respacing=None)
        total = sampling_diffusion(options, steps, learn_sigma=True).num_timesteps
        return dataclasses.replace(options, skip_steps=min(round(strength * total), total - 1))

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        causes = [f"a lower --clamp-max (now {self.clamp_max})" if self.clamp_grad else "--clamp-grad (now off)"]
        return causes + (["--no-diffusion-fp16"] if self.diffusion_fp16 and on_cuda else [])

    def network_shape(self, on_cuda: bool) -> NetworkShape:
        levels, attention, factor = unet_shape(factory.unet_config(self.diffusion_model, self.diffusion_config))
        return NetworkShape(levels, attention, factor, "the UNet's activations", half=on_cuda and self.diffusion_fp16)

    def memory_hints(self) -> list[str]:
        hints = [f"fewer preselected starts (--preselect {self.preselect // 2})"] if self.preselect > 1 else []
        return hints + ["half precision (--diffusion-fp16)"]


def sampling_diffusion(options: DiffusionOptions, steps: int, learn_sigma: bool) -> Diffusion:
    """The respaced diffusion the sampler walks: --timestep-respacing, else ``steps`` evenly spaced steps."""
    return create_diffusion(options.diffusion_steps, options.noise_schedule,
                            options.timestep_respacing or str(steps), learn_sigma)


def check_size(width: int, height: int, config: UNetConfig) -> None:
    """Refuse sizes the UNet cannot make: each side must be a multiple of its downsampling factor."""
    factor = downsample_factor(config)
    if width % factor or height % factor:
        raise UsageError(f"size {width}x{height} is not possible with this diffusion model: "
                         f"width and height must be multiples of {factor} (e.g. {config.image_size})")


class DiffusionGenerator:
    """Owns x_t and the position in the sampling schedule; one loop step is one sampler step."""

    Options = DiffusionOptions
    title = "Diffusion"
    default_clip_guidance_scale = 5000.0
    scoring_clamp = staticmethod(clamp_straight_through)  # guidance reaches x_t whole, as in the reference notebooks

    def __init__(self, model: UNetModel, diffusion: Diffusion, options: DiffusionOptions, canvas: Canvas,
                 init: Tensor | None) -> None:
        self.model, self.diffusion, self.options = model, diffusion, options
        model.checkpointing = canvas.checkpointing
        self.unet = maybe_compile(to_channels_last(model, canvas.channels_last), canvas.compile, "the UNet")
        self.height, self.width = canvas.height, canvas.width
        start = diffusion.num_timesteps - 1 - options.skip_steps
        self.timesteps = list(range(start, -1, -1))
        self.num_steps = len(self.timesteps)
        self.init = init
        self.guidance = Guidance(options.clamp_max if options.clamp_grad else None, options.clamp_by_signal,
                                 init, options.init_scale)
        self._sampling = self._loop(self._start(torch.randn((canvas.batch, 3, canvas.height, canvas.width),
                                                            device=canvas.device)), 0)
        self._pred: Tensor | None = None  # the latest clean-image prediction, shown while sampling
        # an edit's mask: x_t keeps the init image, noised to each step, wherever the mask does not reach. Hard-edged:
        # a feathered blend of two independent noises would be quieter than the step's noise level, and the model
        # reads quiet noise as picture; the run feathers the finished picture instead.
        self.mask = None if canvas.mask is None else (canvas.mask > 0).to(canvas.mask.dtype)
        if self.mask is not None and init is None:
            raise ValueError("an edit's mask needs the init image it keeps")

    @classmethod
    def create(cls, options: DiffusionOptions, canvas: Canvas, init: Tensor | None = None,
               models: ModelCache | None = None) -> "DiffusionGenerator":
        """Load the model (or reuse the run's); start from noise, or from ``init`` ([N,3,H,W] in [0,1])."""
        config = factory.unet_config(options.diffusion_model, options.diffusion_config)
        check_size(canvas.width, canvas.height, config)
        diffusion = sampling_diffusion(options, canvas.steps, config.learn_sigma)
        if options.skip_steps >= diffusion.num_timesteps:
            raise UsageError(f"--skip-steps {options.skip_steps} leaves nothing to do: it must be less than the "
                             f"{diffusion.num_timesteps} sampling steps")
        if init is not None:
            init = fit_image(init.to(canvas.device), canvas.width, canvas.height).mul(2).sub(1)
            init = init.repeat(canvas.batch // init.shape[0], 1, 1, 1)
        fp16 = options.diffusion_fp16 and canvas.device.type == "cuda"
        key = ("unet", options.diffusion_model, options.diffusion_checkpoint, options.diffusion_config,
               canvas.device, fp16, canvas.tile)
        model = (models or ModelCache()).get(key, lambda: periodic_if(canvas.tile, factory.load_unet_model(
            options.diffusion_model, options.diffusion_checkpoint, options.diffusion_config, canvas.device, fp16)))
        return cls(model, diffusion, options, canvas, init)

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
        """One sampler step over the UNet guided by ``guide``'s objective; returns the objective's loss.

        In an edit the step is taken --resample times: after each but the last, x_{t-1} is noised back to x_t by
        q(x_t | x_{t-1}) and the step is taken again (RePaint, Lugmayr et al. 2022), which lets the repainted
        part settle against the kept one that was pasted in."""
        raw = denoiser(self.diffusion, self.unet, clip_denoised=False)  # the objective scores the raw prediction
        takes = self.options.resample if self.mask is not None else 1
        for take in range(takes):
            if take:
                self._noise_back()
            out = self._sampling.step(guided_denoiser(self.diffusion, raw, guide, self.guidance))
            self._keep_known()
        self._pred = out["pred_xstart"]
        return out["loss"]

    def _keep_known(self) -> None:
        """Outside an edit's mask, x_{t-1} is the init image noised to step t-1 (exactly it after the last step),
        so the sampler only draws the masked part and harmonizes it with what surrounds it."""
        if self.mask is None:
            return
        x, t = self._sampling.x, self._sampling.t
        known = self.init if t < 0 else self.diffusion.q_sample(self.init, self._t(t, x), torch.randn_like(x))
        mask = self.mask.to(x.dtype)
        self._sampling.x = x * mask + known.to(x.dtype) * (1 - mask)

    def _noise_back(self) -> None:
        """Undo the last step's denoising with fresh noise: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise."""
        x, t = self._sampling.x, self._sampling.t + 1
        beta = float(self.diffusion.betas[t])
        self._sampling.x = x * (1 - beta) ** 0.5 + torch.randn_like(x) * beta ** 0.5
        self._sampling.t = t

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """With --preselect K (2 or more), go on from the best of K starts per image (one per image of the batch,
        by ``score``); returns the steps taken, --preselect-share of them (0 with fewer than 2 starts).

        Why: the first, noisiest steps settle the colours and the layout, and there guidance reaches least (its
        gradient is weakest, or clamped by signal). Unguided steps cost one UNet pass per start and no CLIP
        gradient. Each start is judged either by its predicted picture after the share of the steps, sampled
        unguided, or, with --preselect-preview S, by a finished picture drawn unguided in S DDIM steps; the
        best picture is then noised back to the share of the way. A finished picture shows CLIP what the start
        becomes, where the early prediction is a blur: with the bundled models (lab/zoo_report.py, one thread,
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
            if self.mask is not None:  # an edit's start is judged by what it paints into the kept picture
                pictures = pictures * self.mask + self.init[:1] * (1 - self.mask)
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
