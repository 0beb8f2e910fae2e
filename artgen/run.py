"""A run of single images: settings in, PNGs out, through the session's driver.

Design: ``generate`` settles the seed and the output names, then draws one image (or a batch) or several
candidates ranked by CLIP, and writes each PNG with its recipe. Everything that happens while a picture is
drawn (progress, Ctrl-C, divergence) is the session's driver; this module decides what is saved where.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from .errors import UsageError
from .masks import SIDES, image_size, parse_extension
from .output import (OutputTaken, contact_sheet, ensure_writable, numbered_names, resolve_outputs, save_png,
                     save_text, step_path, to_pil)
from .runlog import RunLog
from .session import Saver, Session
from .settings import Settings, build_settings

log = logging.getLogger("artgen")


@dataclass
class Result:
    """What a finished run wrote: one path per image (a batch, or the kept candidates, best first)."""

    paths: list[Path]
    images: Tensor       # [N,3,H,W] in [0,1], on the CPU
    settings: Settings   # as run: seed, size and CLIP scale filled in
    loss: float
    scores: list[float] | None = None   # CLIP scores of the kept candidates
    contact_sheet: Path | None = None
    upscaled: list[Path] = field(default_factory=list)  # --upscale: NAME.upN.png beside each image

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def image(self) -> Tensor:
        """The first image, [3,H,W] in [0,1] (the one at ``path``)."""
        return self.images[0]


def with_seed(settings: Settings) -> Settings:
    """Fix the seed now so the PNG records the one actually used."""
    if settings.run.seed is not None:
        return settings
    return settings.replace(seed=random.SystemRandom().randrange(2**31))


def generate(settings: Settings | None = None, preset: str | None = None, progress: bool = True,
             **overrides: Any) -> Result:
    """Run one optimization and write its PNGs: settings (or defaults), then a preset, then keyword overrides."""
    if settings is None or preset or overrides:
        base = settings.to_dict() if settings is not None else None
        settings = build_settings(preset, base, overrides)  # validated there
    else:
        settings.validate()  # built by the caller, perhaps by hand
    settings = with_seed(settings)
    run = settings.run
    count = run.keep if run.candidates else run.batch
    ensure_writable(resolve_outputs(run.output, run, count, run.overwrite)[0].parent)
    session = Session(settings, progress)
    run_log = RunLog(session.settings, session.device)
    with session.explain_out_of_memory():
        if run.candidates:
            result = _candidates(session)
        else:
            result = _single(session, count, run_log)
        run_log.mark("save")
        if run.upscale > 1:
            from .upscale import upscale_saved

            result.upscaled = upscale_saved(session, result.settings, result.paths)
            run_log.mark("upscale")
    run_log.write(result.paths[0].with_suffix(".log"), {
        "outputs": [str(p) for p in result.paths], "loss": result.loss, "scores": result.scores,
        "contact_sheet": str(result.contact_sheet) if result.contact_sheet else None,
        "upscaled": [str(p) for p in result.upscaled]})
    return result


def edit(image: str | Path, settings: Settings | None = None, preset: str | None = None, progress: bool = True,
         **overrides: Any) -> Result:
    """Repaint part of ``image``: the part ``mask`` or ``mask_box`` marks, or the border ``extend`` grows
    (keywords as the flags), toward the prompts; everything else stays the image's own pixels. The picture keeps
    the image's size (grown by the extension) unless ``width`` / ``height`` are given. Without a mask it is a
    variation of the whole image: the init image path, with ``skip_steps`` (diffusion) or ``init_weight``
    (VQGAN) saying how much of it stays."""
    if "init_image" in overrides:
        raise UsageError("artgen edit takes the picture to edit as its IMAGE argument: drop --init-image")
    overrides["init_image"] = str(image)
    overrides = {key: value for key, value in overrides.items() if value is not None or key not in ("width", "height")}
    if "width" not in overrides or "height" not in overrides:
        width, height = image_size(str(image))
        grown = parse_extension(overrides["extend"]) if overrides.get("extend") else dict.fromkeys(SIDES, 0)
        overrides.setdefault("width", width + grown["left"] + grown["right"])
        overrides.setdefault("height", height + grown["top"] + grown["bottom"])
    return generate(settings, preset, progress, **overrides)


def _single(session: Session, count: int, run_log: RunLog) -> Result:
    settings = session.settings
    torch.manual_seed(settings.run.seed)
    generator = session.generator(init=session.init_image())
    settings = _as_run(settings, generator)
    objective = session.objective()
    run_log.mark("load")
    paths = resolve_outputs(settings.run.output, settings.run, count, settings.run.overwrite)
    loss = session.drive(generator, objective, save=_saver(settings, paths, generator))
    run_log.mark("optimize")
    images = generator.snapshot().cpu()
    paths = _save_all(images, paths, settings, generator.num_steps, loss, svg_of(generator))
    return Result(paths, images, settings, loss)


def _saver(settings: Settings, paths: list[Path], generator: Any) -> Saver:
    """How the driver saves: intermediate pictures beside the outputs (NAME.stepN.png), else the outputs."""
    def save(images: Tensor, step: int, loss: float, intermediate: bool) -> list[Path]:
        targets = [step_path(p, step) for p in paths] if intermediate else paths
        return _save_all(images, targets, settings, step, loss, svg_of(generator))
    return save


def svg_of(generator: Any) -> Callable[[int], str | None]:
    """The generator's pictures as SVG documents by batch index, for a generator that draws vectors (its
    ``svg`` gives None unless its options asked for them); other generators have none."""
    return getattr(generator, "svg", lambda index: None)


def _as_run(settings: Settings, generator: Any) -> Settings:
    """The settings as actually run: with the size the generator made."""
    return settings.replace(width=generator.width, height=generator.height)


def _candidates(session: Session) -> Result:
    """Draw one image per seed, score each with CLIP, keep the best, and write a contact sheet of all."""
    settings, run = session.settings, session.settings.run
    drawn: list[tuple[float, Tensor, Settings, float, str | None]] = []
    objective = session.objective()
    for index in range(run.candidates):
        one = settings.replace(seed=run.seed + index, candidates=0, keep=1)
        torch.manual_seed(one.run.seed)
        generator = session.generator(one, session.init_image())
        one = _as_run(one, generator)
        paths = resolve_outputs(one.run.output, one.run, 1, one.run.overwrite)
        loss = session.drive(generator, objective, f"candidate {index + 1}/{run.candidates}",
                             _saver(one, paths, generator))
        image = generator.snapshot()
        drawn.append((objective.score(image).item(), image.cpu(), one, loss, svg_of(generator)(0)))
    ranked = sorted(drawn, key=lambda item: item[0], reverse=True)
    kept = ranked[:run.keep]
    paths = resolve_outputs(run.output, kept[0][2].run, run.keep, run.overwrite)
    paths = [save_final(image, path, _metadata(one, one.run.steps, loss) | {"clip_score": score}, run.overwrite,
                        run.save_scale, svg)
             for (score, image, one, loss, svg), path in zip(kept, paths)]
    labels = [f"#{rank + 1} seed {one.run.seed}: {score:.3f}" for rank, (score, _, one, *_) in enumerate(ranked)]
    sheet_path = paths[0].with_name(f"{paths[0].stem}.candidates.png")
    save_png(contact_sheet([image for _, image, *_ in ranked], labels), sheet_path,
             {"settings": settings.to_dict(), "scores": [score for score, *_ in ranked]}, overwrite=run.overwrite)
    return Result(paths, torch.cat([image for _, image, *_ in kept]), kept[0][2], kept[0][3],
                  [score for score, *_ in kept], sheet_path)


def _save_all(images: Tensor, paths: list[Path], settings: Settings, step: int, loss: float,
              vectors: Callable[[int], str | None]) -> list[Path]:
    return [save_final(image, path, _metadata(settings, step, loss) | ({"index": index} if len(paths) > 1 else {}),
                       settings.run.overwrite, settings.run.save_scale, vectors(index))
            for index, (image, path) in enumerate(zip(images, paths))]


def save_final(image: Tensor, path: Path, metadata: dict[str, Any], overwrite: bool, scale: int = 1,
               svg: str | None = None) -> Path:
    """Save the 1:1 PNG, and beside whichever name it took: with ``scale`` (--save-scale) above 1 its
    enlargement, and with ``svg`` that vector document as NAME.svg."""
    saved = _save_free(image, path, metadata, overwrite)
    if scale > 1:
        save_enlarged(image, saved, scale, metadata, overwrite)
    if svg is not None:
        save_beside(svg, saved.with_suffix(".svg"), saved, overwrite)
    return saved


def save_beside(text: str, target: Path, png: Path, overwrite: bool) -> Path | None:
    """A text document of the picture at ``png`` (its SVG); a file already there is kept, with a warning."""
    try:
        return save_text(text, target, overwrite=overwrite)
    except OutputTaken:
        log.warning("%s already exists: kept it and wrote no SVG of %s (pass --overwrite to replace it)", target, png)
        return None


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


def _metadata(settings: Settings, step: int, loss: float) -> dict[str, Any]:
    return {"settings": settings.to_dict(), "step": step, "loss": None if math.isnan(loss) else loss}
