"""CLIP-guided diffusion: each loop step is one sampler step, guided by the gradient of the loop's loss.

``render()`` runs the UNet on x_t and returns the predicted clean image blended with x_t by
sqrt(1 - alpha-bar_t), as the CLIP-guided diffusion notebooks score it; ``step(loss)`` turns the loss's
gradient w.r.t. x_t into a guidance term and lets a plain sampler (DDPM or DDIM) take the step through
``guided_denoise``. The sampler never sees CLIP.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..memory import NetworkShape, unet_shape
from ..models import factory
from ..models.diffusion import Diffusion, beta_schedule, create_diffusion, ddim_step, ddpm_step, guided_denoise
from ..models.unet import UNetConfig, UNetModel, downsample_factor
from ..images import fit_image
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

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("diffusion_steps",), non_negative=("preselect", "preselect_preview", "skip_steps",
                "eta", "clamp_max"), finite=("init_scale",))
        require_choice(self, "sampler", SAMPLERS)
        require_choice(self, "noise_schedule", NOISE_SCHEDULES)
        if self.noise_schedule == "linear" and self.diffusion_steps <= 20:
            # the linear schedule scales its last beta by 1000/steps; at 20 steps or fewer it reaches 1
            raise UsageError(f"--diffusion-steps {self.diffusion_steps} is too few for the linear noise schedule: "
                             "use more than 20 (models are trained with 1000) or --noise-schedule cosine")
        if self.preselect > 1 and not 0 < self.preselect_share < 1:
            raise UsageError(f"--preselect-share must lie between 0 and 1 (a share of the steps), got "
                             f"{self.preselect_share}")
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

    Options = DiffusionOptions
    title = "Diffusion"
    default_clip_guidance_scale = 5000.0
    scoring_clamp = staticmethod(clamp_straight_through)  # guidance reaches x_t whole, as in the reference notebooks

    def __init__(self, model: UNetModel, diffusion: Diffusion, options: DiffusionOptions, canvas: Canvas,
                 init: Tensor | None) -> None:
        self.model, self.diffusion, self.settings = model, diffusion, options
        model.checkpointing = canvas.checkpointing
        self.unet = maybe_compile(to_channels_last(model, canvas.channels_last), canvas.compile, "the UNet")
        self.height, self.width = canvas.height, canvas.width
        start = diffusion.num_timesteps - 1 - options.skip_steps
        self.timesteps = list(range(start, -1, -1))
        self.num_steps = len(self.timesteps)
        self.index = 0
        self.init = init
        self.x = self._start(torch.randn((canvas.batch, 3, canvas.height, canvas.width), device=canvas.device))
        self._pred = None
        self._render: tuple[Tensor, dict[str, Tensor], Tensor] | None = None

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
               canvas.device, fp16)
        model = (models or ModelCache()).get(key, lambda: factory.load_unet_model(
            options.diffusion_model, options.diffusion_checkpoint, options.diffusion_config, canvas.device, fp16))
        return cls(model, diffusion, options, canvas, init)

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

    def step(self, guide: Guide) -> Tensor:
        with guide.forward():
            loss = guide.loss(self.render())
        x, output, blended = self._render
        total = loss.float()
        if self.settings.init_scale and self.init is not None:
            total = total + self.settings.init_scale * (blended - self.init).pow(2).mean()
        grad = -guide.gradient(total, x)
        grad = limit_guidance(grad, self._clamp_limit() if self.settings.clamp_grad else None)
        out = self._sampler_step(self.x, self.index, output.detach(), grad)
        self.x = out["sample"]
        self._pred = out["pred_xstart"]
        self._render = None
        self.index += 1
        return loss

    def _sampler_step(self, x: Tensor, index: int, output: Tensor, grad: Tensor | None) -> dict[str, Tensor]:
        """Step ``index`` of the chosen sampler from x_t, given the UNet's output there and the guidance gradient."""
        denoise = guided_denoise(self.diffusion, lambda *_: output, None if grad is None else lambda *_: grad)
        t = self._t(self.timesteps[index], x)
        with torch.no_grad():
            if self.settings.sampler == "ddpm":
                return ddpm_step(self.diffusion, denoise, x, t, torch.randn_like(x))
            eta = self.settings.eta
            return ddim_step(self.diffusion, denoise, x, t, eta, torch.randn_like(x) if eta else None)

    def begin(self, score, progress: bool) -> int:
        """TEMPORARY: the guidance branch replaces this."""
        o = self.settings
        return self.preselect(o.preselect, o.preselect_share, score, o.preselect_preview, progress) if o.preselect > 1 else 0

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
