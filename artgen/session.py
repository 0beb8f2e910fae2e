"""A session: what one run sets up once (device, CLIP models, objective, model cache) and the one driver that
every image goes through: single images, batches, candidates and animation frames.

Design: the driver owns what a user sees while a picture is drawn, the progress bar, intermediate saves,
Ctrl-C (the picture so far is saved) and a diverged loss (the last good state is put back and saved), so
every kind of run behaves alike. It takes a generator and an objective and knows nothing of either's insides.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from . import auto
from .errors import RunInterrupted, UserError
from .generators import Canvas, Generator, ModelCache, generator_class
from .loop import optimize
from .memory import check_fits
from .objective import Objective, build_objective
from .palettes import parse_palette
from .images import read_init_image
from .masks import Edit, edited, is_edit, prepare_edit
from .perceptor import Perceptor, check_spec, load_perceptors, parse_clip_spec, register_model_config, \
    with_bundled_weights
from .prompts import Prompt, parse_prompts
from .settings import Settings
from .speed import precision_context, warn_if_slow_precision

log = logging.getLogger("artgen")
LOSS_READ_EVERY = 5  # reading the loss forces a device sync; the driver does it only this often
# Saves pictures for the driver: (images, step, loss, intermediate) -> the paths written
Saver = Callable[[Tensor, int, float, bool], list[Path]]


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA when present; asking for CUDA without it is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked but no CUDA device is available: use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


class Session:
    """Checks what needs no model at once; loads the CLIP models when first asked, and each generator model
    once (candidates and frames reuse it)."""

    def __init__(self, settings: Settings, progress: bool = True) -> None:
        self.device = resolve_device(settings.run.device)
        self.generator_class = generator_class(settings.run.generator)
        settings, choices = auto.settle(settings, self.device)  # what runs is what the PNGs record
        check_fits(settings, self.device)
        auto.report(choices)
        warn_if_slow_precision(settings.run.precision, self.device)
        if settings.run.clip_guidance_scale is None:
            settings = settings.replace(clip_guidance_scale=self.generator_class.default_clip_guidance_scale)
        self.edit: Edit | None = None  # read before any model loads, so a bad mask costs nothing
        if is_edit(settings.run):
            edit, digest = prepare_edit(settings.run)
            self.edit = edit.to(self.device)
            settings = settings.replace(mask_sha256=digest)
        self.settings = settings
        self.progress = progress
        for config in settings.run.clip_config:
            register_model_config(config)
        self.clip_specs = [with_bundled_weights(parse_clip_spec(text, checkpoint)) for text, checkpoint
                           in itertools.zip_longest(settings.run.clip, settings.run.clip_checkpoint)]
        for spec in self.clip_specs:
            check_spec(spec)
        self.models = ModelCache()
        self._perceptors: list[Perceptor] | None = None
        self._init: Tensor | None = None

    @property
    def perceptors(self) -> list[Perceptor]:
        if self._perceptors is None:
            run = self.settings.run
            self._perceptors = load_perceptors(self.clip_specs, self.device, run.channels_last, run.compile,
                                               fast_attention=run.precision != "fp32")
        return self._perceptors

    def objective(self, texts: list[Prompt] | None = None, edit: bool = True) -> Objective:
        """The run's objective; ``texts`` replaces its text prompts (an animation's keyed prompts). With ``edit``
        False it scores whole pictures even in an edit's session (the upscale of its results)."""
        exact_palette = getattr(self.generator_class, "exact_palette", False)
        return build_objective(self.settings.run, self.perceptors, self.device, texts,
                               self.generator_class.scoring_clamp, palette_loss=not exact_palette,
                               edit=self.edit if edit else None)

    def init_image(self) -> Tensor | None:
        """--init-image decoded once, at the run's size ([1,3,H,W] in [0,1]); an edit's grown by --extend."""
        run = self.settings.run
        if self.edit is not None:
            return self.edit.init
        if run.init_image and self._init is None:
            self._init = read_init_image(run.init_image, run.width, run.height)
        return self._init

    def generator(self, settings: Settings | None = None, init: Tensor | None = None) -> Generator:
        """A generator for ``settings`` (the session's, or a candidate's or frame's variant of them); in an edit,
        one that keeps the init image outside the mask (unless ``settings`` are no edit's: an upscale's tiles)."""
        settings = settings or self.settings
        run = settings.run
        palette = tuple(parse_palette(run.palette)) if run.palette is not None else None
        edit = self.edit if is_edit(run) else None
        mask = edit.soft if edit is not None else None
        canvas = Canvas(run.width, run.height, run.batch, run.steps, self.device, run.channels_last, run.compile,
                        run.checkpointing, run.tile, palette, mask)
        generator = self.generator_class.create(settings.options, canvas, init, self.models)
        return edited(generator, edit, run.generator) if edit is not None else generator

    def drive(self, generator: Generator, objective: Objective, label: str = "generating", save: Saver | None = None,
              nested: bool = False) -> float:
        """Take the generator through its steps; returns the last loss.

        ``save`` writes pictures: every --save-every steps, and the picture so far when the run is stopped by
        Ctrl-C or diverges. Without it (animation frames) Ctrl-C propagates and a diverged frame is not saved.
        ``nested`` shows the bar under an outer one (frames)."""
        try:
            start = generator.begin(objective.score, self.progress)
        except KeyboardInterrupt:
            if save is None:
                raise
            raise RunInterrupted("interrupted while choosing a start, before the first image: nothing saved") from None
        bar = tqdm(total=generator.num_steps, initial=start, disable=not self.progress, desc=label, unit="step",
                   position=1 if nested else 0, leave=not nested)
        run = self.settings.run
        loss, step, good = math.nan, start, (start, generator.state_dict())
        try:
            forward = precision_context(run.precision, self.device)
            for state in optimize(generator, objective, start=start, forward_context=forward):
                step = state.step
                if step % LOSS_READ_EVERY == 0 or step == state.total:
                    loss = state.loss.item()
                    if not math.isfinite(loss):
                        bar.close()
                        self._stop_diverged(generator, good, step, loss, save)
                    good = (step, generator.state_dict())
                    bar.set_postfix(loss=f"{loss:.4f}")
                bar.update(1)
                if save and run.save_every and step % run.save_every == 0 and step < state.total:
                    save(generator.snapshot().cpu(), step, loss, True)
        except KeyboardInterrupt:
            bar.close()
            if save is None:
                raise
            saved = save(generator.snapshot().cpu(), step, loss, False)
            raise RunInterrupted(f"interrupted after step {step} of {generator.num_steps}: "
                                 f"saved the image so far to {saved[0]}") from None
        bar.close()
        return loss

    def _stop_diverged(self, generator: Generator, good: tuple[int, dict], step: int, loss: float,
                       save: Saver | None) -> None:
        """Put back the last state with a finite loss, save its picture, and stop with the likely causes."""
        good_step, state = good
        message = diverged_message(self.settings, self.device, step, loss)
        if save is None:
            raise UserError(message + "; the frames before it are kept (--resume)")
        generator.load_state_dict(state)
        saved = save(generator.snapshot().cpu(), good_step, math.nan, False)
        raise UserError(message + f"; saved the image of step {good_step} to {saved[0]}")

    @contextmanager
    def explain_out_of_memory(self) -> Iterator[None]:
        """Turn CUDA running out of memory into one line with settings that need less."""
        try:
            yield
        except torch.cuda.OutOfMemoryError:
            run = self.settings.run
            width, height = run.width, run.height
            hints = [f"a smaller image (--width {width // 2} --height {height // 2})",
                     f"fewer cutouts (--cutn {max(1, run.cutn // 2)})", *self.settings.options.memory_hints(),
                     "one CLIP model"]
            raise UserError(f"out of GPU memory at {width}x{height}, --cutn {run.cutn}, --batch {run.batch}: try "
                            f"{', '.join(hints[:-1])} or {hints[-1]}") from None


def diverged_message(settings: Settings, device: torch.device, step: int, loss: float) -> str:
    """Name what likely made this run blow up: only flags that act on its generator and device."""
    run = settings.run
    causes = settings.options.divergence_causes(device.type == "cuda")
    causes.append(f"a lower --clip-guidance-scale (now {run.clip_guidance_scale})")
    heavy = [p for p in parse_prompts([*run.prompts, *run.image_prompts]) if abs(p.weight) > 10]
    if heavy:
        causes.insert(0, f"a smaller prompt weight ({heavy[0].weight:g} on {heavy[0].text[:30]!r})")
    if run.precision != "fp32":
        causes.append(f"full precision (--precision fp32, now {run.precision})")
    return f"the loss became {loss} at step {step}: the run diverged. Try {', '.join(causes[:-1])} or {causes[-1]}"
