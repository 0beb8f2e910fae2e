"""A whole run: settings in, PNGs out. Wires the perceptors, the generator, the objective and the writer."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from .errors import RunInterrupted, UserError
from .generators import generator_class
from .loop import optimize
from .memory import check_fits
from .objective import Objective, build_objective
from .output import (OutputTaken, contact_sheet, ensure_writable, numbered_names, resolve_outputs, save_png,
                     step_path, to_pil)
from .perceptor import (ClipSpec, Perceptor, check_spec, load_perceptors, parse_clip_spec,
                        register_model_config, with_bundled_weights)
from .prompts import parse_prompts
from .runlog import RunLog
from .settings import Settings, build_settings
from .speed import precision_context, warn_if_slow_precision

log = logging.getLogger("artgen")
LOSS_READ_EVERY = 5  # reading the loss forces a device sync; the progress bar does it only this often


@dataclass
class Result:
    """What a finished run wrote: one path per image (a batch, or the kept candidates, best first)."""

    paths: list[Path]
    images: Tensor       # [N,3,H,W] in [0,1], on the CPU
    settings: Settings   # as run: seed, size and CLIP scale filled in
    loss: float
    scores: list[float] | None = None   # CLIP scores of the kept candidates
    contact_sheet: Path | None = None

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def image(self) -> Tensor:
        """The first image, [3,H,W] in [0,1] (the one at ``path``)."""
        return self.images[0]


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


def with_seed(settings: Settings) -> Settings:
    """Fix the seed now so the PNG records the one actually used."""
    if settings.seed is not None:
        return settings
    return dataclasses.replace(settings, seed=random.SystemRandom().randrange(2**31))


def generate(settings: Settings | None = None, preset: str | None = None, progress: bool = True,
             **overrides: Any) -> Result:
    """Run one optimization and write its PNGs: settings (or defaults), then a preset, then keyword overrides."""
    base = settings.to_dict() if settings is not None else None
    settings = with_seed(build_settings(preset, base, overrides))
    count = settings.keep if settings.candidates else settings.batch
    ensure_writable(resolve_outputs(settings.output, settings, count, settings.overwrite)[0].parent)
    settings, device, cls, specs = prepare(settings)
    run_log = RunLog(settings, device)
    with explain_out_of_memory(settings):
        if settings.candidates:
            result = _candidates(settings, cls, clip_models(specs, device, settings), device, progress)
        else:
            result = _single(settings, cls, specs, device, count, progress, run_log)
    run_log.mark("save")
    run_log.write(result.paths[0].with_suffix(".log"), {
        "outputs": [str(p) for p in result.paths], "loss": result.loss, "scores": result.scores,
        "contact_sheet": str(result.contact_sheet) if result.contact_sheet else None})
    return result


def _single(settings: Settings, cls: type, specs: list[ClipSpec], device: torch.device, count: int,
            progress: bool, run_log: RunLog) -> Result:
    torch.manual_seed(settings.seed)
    generator = cls.from_settings(settings, device)
    settings = _as_run(settings, generator)
    objective = build_objective(settings, clip_models(specs, device, settings), device, clamp=cls.scoring_clamp)
    run_log.mark("load")
    paths = resolve_outputs(settings.output, settings, count, settings.overwrite)
    loss = _run_loop(generator, objective, settings, paths, progress)
    run_log.mark("optimize")
    images = generator.snapshot().cpu()
    paths = _save_all(images, paths, settings, generator.num_steps, loss)
    return Result(paths, images, settings, loss)


@contextmanager
def explain_out_of_memory(settings: Settings) -> Iterator[None]:
    """Turn CUDA running out of memory into one line with settings that need less."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        width, height, cutn, starts = settings.width, settings.height, settings.cutn, settings.preselect
        at_starts = f", --preselect {starts}" if starts > 1 else ""
        fewer_starts = f" fewer preselected starts (--preselect {starts // 2})," if starts > 1 else ""
        raise UserError(f"out of GPU memory at {width}x{height}, --cutn {cutn}, --batch {settings.batch}{at_starts}: "
                        f"try a smaller image (--width {width // 2} --height {height // 2}), fewer cutouts "
                        f"(--cutn {max(1, cutn // 2)}),{fewer_starts} one CLIP model, or half precision for diffusion "
                        "(--diffusion-fp16)") from None


def prepare(settings: Settings) -> tuple[Settings, torch.device, type, list[ClipSpec]]:
    """Check what needs no model: the device, the generator name and the CLIP names; fill in the CLIP scale."""
    device = resolve_device(settings.device)
    warn_if_slow_precision(settings.precision, device)
    cls = generator_class(settings.generator)
    check_fits(settings, device)
    if settings.clip_guidance_scale is None:
        settings = dataclasses.replace(settings, clip_guidance_scale=cls.default_clip_guidance_scale)
    for config in settings.clip_config:
        register_model_config(config)
    specs = [with_bundled_weights(parse_clip_spec(text, checkpoint))
             for text, checkpoint in itertools.zip_longest(settings.clip, settings.clip_checkpoint)]
    for spec in specs:
        check_spec(spec)
    return settings, device, cls, specs


def clip_models(specs: list[ClipSpec], device: torch.device, settings: Settings) -> list[Perceptor]:
    """The CLIP models of the run, with its speed settings."""
    return load_perceptors(specs, device, settings.channels_last, settings.compile)


def _as_run(settings: Settings, generator: Any) -> Settings:
    """The settings as actually run: with the size the generator made."""
    return dataclasses.replace(settings, width=generator.width, height=generator.height)


def _candidates(settings: Settings, cls: type, perceptors: list, device: torch.device, progress: bool) -> Result:
    """Draw one image per seed, score each with CLIP, keep the best, and write a contact sheet of all."""
    drawn: list[tuple[float, Tensor, Settings, float]] = []
    objective = build_objective(settings, perceptors, device, clamp=cls.scoring_clamp)
    model = None
    for index in range(settings.candidates):
        one = dataclasses.replace(settings, seed=settings.seed + index, candidates=0, keep=1)
        torch.manual_seed(one.seed)
        generator = cls.from_settings(one, device, model=model)
        model = generator.model
        one = _as_run(one, generator)
        paths = resolve_outputs(one.output, one, 1, one.overwrite)
        loss = _run_loop(generator, objective, one, paths, progress, f"candidate {index + 1}/{settings.candidates}")
        image = generator.snapshot()
        drawn.append((objective.score(image).item(), image.cpu(), one, loss))
    ranked = sorted(drawn, key=lambda item: item[0], reverse=True)
    kept = ranked[:settings.keep]
    paths = resolve_outputs(settings.output, kept[0][2], settings.keep, settings.overwrite)
    paths = [save_final(image, path, _metadata(one, one.steps, loss) | {"clip_score": score}, settings.overwrite,
                        settings.save_scale)
             for (score, image, one, loss), path in zip(kept, paths)]
    labels = [f"#{rank + 1} seed {one.seed}: {score:.3f}" for rank, (score, _, one, _) in enumerate(ranked)]
    sheet_path = paths[0].with_name(f"{paths[0].stem}.candidates.png")
    save_png(contact_sheet([image for _, image, _, _ in ranked], labels), sheet_path,
             {"settings": settings.to_dict(), "scores": [score for score, *_ in ranked]}, overwrite=settings.overwrite)
    return Result(paths, torch.cat([image for _, image, _, _ in kept]), kept[0][2], kept[0][3],
                  [score for score, *_ in kept], sheet_path)


def _save_all(images: Tensor, paths: list[Path], settings: Settings, step: int, loss: float) -> list[Path]:
    return [save_final(image, path, _metadata(settings, step, loss) | ({"index": index} if len(paths) > 1 else {}),
                       settings.overwrite, settings.save_scale)
            for index, (image, path) in enumerate(zip(images, paths))]


def save_final(image: Tensor, path: Path, metadata: dict[str, Any], overwrite: bool, scale: int = 1) -> Path:
    """Save the 1:1 PNG, and with ``scale`` (--save-scale) above 1 its enlargement beside whichever name it took."""
    saved = _save_free(image, path, metadata, overwrite)
    if scale > 1:
        save_enlarged(image, saved, scale, metadata, overwrite)
    return saved


def save_enlarged(image: Tensor, path: Path, scale: int, metadata: dict[str, Any], overwrite: bool) -> Path | None:
    """``NAME.xN.png``: each pixel of the 1:1 image as an N x N block (nothing smoothed in), for viewing tiny outputs.

    It carries the same recipe, so a shared enlargement still reproduces, and names its 1:1 source."""
    picture = to_pil(image)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    target = path.with_name(f"{path.stem}.x{scale}{path.suffix}")
    try:
        return save_png(picture, target, metadata | {"enlarged_from": path.name, "scale": scale}, overwrite=overwrite)
    except OutputTaken:
        log.warning("%s already exists: kept it and wrote no enlargement of %s (pass --overwrite to replace it)",
                    target, path)
        return None


def _save_free(image: Tensor, path: Path, metadata: dict[str, Any], overwrite: bool) -> Path:
    """Save without replacing a file that another run wrote meanwhile: take the next free name instead."""
    try:
        return save_png(image, path, metadata, overwrite=overwrite)
    except OutputTaken:
        for fallback in numbered_names(path):
            try:
                saved = save_png(image, fallback, metadata, overwrite=False)
            except OutputTaken:
                continue
            log.warning("%s was taken by another run meanwhile: saved this image as %s", path, saved)
            return saved


def _run_loop(generator, objective: Objective, settings: Settings, paths: list[Path], progress: bool,
              label: str = "generating") -> float:
    """Pick the start (--preselect), then drive the loop with a progress bar named ``label`` and intermediate saves;
    on Ctrl-C (acted on mid-step too, see loop.interruptible) save the image so far, then stop."""
    try:
        start = generator.begin(objective.score, progress)
    except KeyboardInterrupt:
        raise RunInterrupted("interrupted while preselecting starts, before the first image: nothing saved") from None
    bar = tqdm(total=generator.num_steps, initial=start, disable=not progress, desc=label, unit="step")
    loss = math.nan
    step = start
    good = (start, generator.state_dict())
    try:
        forward = precision_context(settings.precision, resolve_device(settings.device))
        for state in optimize(generator, objective, start=start, forward_context=forward):
            step = state.step
            if step % LOSS_READ_EVERY == 0 or step == state.total:
                loss = state.loss.item()
                if not math.isfinite(loss):
                    bar.close()
                    _stop_diverged(generator, good, settings, paths, step, loss)
                good = (step, generator.state_dict())
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
            if settings.save_every and step % settings.save_every == 0 and step < state.total:
                _save_all(generator.snapshot().cpu(), [step_path(p, step) for p in paths], settings, step, loss)
    except KeyboardInterrupt:
        bar.close()
        _save_all(generator.snapshot().cpu(), paths, settings, step, loss)
        raise RunInterrupted(f"interrupted after step {step} of {generator.num_steps}: "
                             f"saved the image so far to {paths[0]}") from None
    bar.close()
    return loss


def _stop_diverged(generator, good: tuple[int, dict], settings: Settings, paths: list[Path], step: int,
                   loss: float) -> None:
    """Put back the last state with a finite loss, save its image, and stop with the likely causes."""
    good_step, state = good
    generator.load_state_dict(state)
    saved = _save_all(generator.snapshot().cpu(), paths, settings, good_step, math.nan)
    raise UserError(diverged_message(settings, step, loss) + f"; saved the image of step {good_step} to {saved[0]}")


def diverged_message(settings: Settings, step: int, loss: float) -> str:
    """Name what likely made this run blow up, from the settings it used: only flags that act on its generator
    and device (diffusion has no learning rate; --diffusion-fp16 does nothing on a CPU)."""
    causes = [f"a lower --clip-guidance-scale (now {settings.clip_guidance_scale})"]
    if settings.generator == "diffusion":
        causes.append(f"a lower --clamp-max (now {settings.clamp_max})" if settings.clamp_grad
                      else "--clamp-grad (now off)")
    else:
        causes.insert(0, f"a lower --lr (now {settings.lr})")
    heavy = [p for p in parse_prompts([*settings.prompts, *settings.image_prompts]) if abs(p.weight) > 10]
    if heavy:
        causes.insert(0, f"a smaller prompt weight ({heavy[0].weight:g} on {heavy[0].text[:30]!r})")
    if settings.precision != "fp32":
        causes.append(f"full precision (--precision fp32, now {settings.precision})")
    if settings.generator == "diffusion" and settings.diffusion_fp16 and _runs_on_cuda(settings):
        causes.append("--no-diffusion-fp16")
    return f"the loss became {loss} at step {step}: the run diverged. Try {', '.join(causes[:-1])} or {causes[-1]}"


def _runs_on_cuda(settings: Settings) -> bool:
    try:
        return resolve_device(settings.device).type == "cuda"
    except UserError:
        return False


def _metadata(settings: Settings, step: int, loss: float) -> dict[str, Any]:
    return {"settings": settings.to_dict(), "step": step, "loss": None if math.isnan(loss) else loss}
