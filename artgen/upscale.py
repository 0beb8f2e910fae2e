"""Upscaling: a picture enlarged 2 or 4 times, then refined tile by tile with the run's generator.

Design: the enlargement (Lanczos) is cut into square tiles that overlap; each tile is a short run of the one
loop at the tile's size, started from that tile and kept near it by the generator's own meaning of strength
(``Options.for_frame``, as an animation frame keeps its start image), so the memory of a run is the memory of
one tile whatever the output's size. The refined tiles are summed with weights that rise linearly across the
strip a tile shares with its neighbour (1 inside, 1 at the picture's own border), and divided by the summed
weights: two tiles cross-fade over their shared strip, so no edge of a tile shows. Tile k is seeded with
``seed + k``, so the same settings give the same picture.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from .errors import RunInterrupted, UsageError, UserError
from .files import sha256_of
from .images import load_image, pil_to_tensor
from .objective import Objective
from .output import OutputTaken, read_metadata, resolve_outputs, save_png
from .recipe import rerun_recipe
from .run import with_seed
from .session import Session
from .settings import Settings, UpscaleSettings, build_settings

log = logging.getLogger("artgen")
# What an upscale decides itself: the tile's size and start, one image at a time, nothing saved but the result,
# and no control that acts on a whole picture (a mirror or a seamless border would be drawn into every tile).
EDIT_RUN = dict(mask=None, mask_box=None, invert_mask=False, extend=None, mask_sha256=None)  # an edit's own
TILE_RUN = dict(init_image=None, batch=1, candidates=0, keep=1, save_every=0, save_scale=1, upscale=1, tile=False,
                symmetry="none") | EDIT_RUN
FIXED_FLAGS = ("width", "height", "init_image", "batch", "candidates", "keep", "save_every", "upscale", "tile",
               "symmetry", "mask", "mask_box", "invert_mask", "extend")


@dataclass
class UpscaleResult:
    path: Path
    image: Tensor        # [1,3,H,W] in [0,1], on the CPU
    settings: Settings   # what each tile ran with (width and height: the tile's)
    upscale: UpscaleSettings
    loss: float          # the tiles' mean last loss


def spans(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of ``tile`` pixels covering ``length``, neighbours sharing at least ``overlap``, spread
    evenly so the last one ends at the border."""
    if tile >= length:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def plan_tiles(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(left, top) of every tile, row by row."""
    return [(left, top) for top in spans(height, tile, overlap) for left in spans(width, tile, overlap)]


def ramp(size: int, overlap: int, before: bool, after: bool) -> Tensor:
    """Weights along one side of a tile: rising over ``overlap`` pixels where a neighbour comes before, falling
    where one comes after, 1 elsewhere (never 0, so every pixel has weight)."""
    weights = torch.ones(size)
    rise = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    if before:
        weights[:overlap] = torch.minimum(weights[:overlap], rise)
    if after:
        weights[-overlap:] = torch.minimum(weights[-overlap:], rise.flip(0))
    return weights


class Blend:
    """Accumulates refined tiles into the whole picture: a weighted sum and the sum of weights.

    ``feathered=False`` weighs every pixel of a tile alike (a plain average where tiles overlap), the control
    against which the feathering is measured: its tile edges show as steps."""

    def __init__(self, width: int, height: int, overlap: int, feathered: bool = True) -> None:
        self.width, self.height, self.overlap, self.feathered = width, height, overlap, feathered
        self.total = torch.zeros(3, height, width)
        self.weight = torch.zeros(1, height, width)

    def add(self, tile: Tensor, left: int, top: int) -> None:
        """Add ``tile`` [3,h,w] at (left, top)."""
        height, width = tile.shape[-2:]
        weights = torch.ones(1, height, width)
        if self.feathered:
            rows = ramp(height, self.overlap, top > 0, top + height < self.height)
            columns = ramp(width, self.overlap, left > 0, left + width < self.width)
            weights = (rows[:, None] * columns[None, :])[None]
        self.total[:, top:top + height, left:left + width] += tile.float() * weights
        self.weight[:, top:top + height, left:left + width] += weights

    def result(self) -> Tensor:
        """The blended picture [1,3,H,W]."""
        return (self.total / self.weight).clamp(0, 1)[None]


def enlarge(picture: Image.Image, scale: int) -> Tensor:
    """The source enlarged ``scale`` times (Lanczos), the start every tile is cut from ([1,3,H,W])."""
    return pil_to_tensor(picture.convert("RGB"), (picture.width * scale, picture.height * scale))


def tile_settings(settings: Settings, tile: int) -> Settings:
    """The settings of one tile's run: the tile's size, started from the tile, nothing saved on its own."""
    return settings.replace(width=tile, height=tile, **TILE_RUN)


def refine(session: Session, settings: Settings, start: Tensor, upscale: UpscaleSettings,
           objective: Objective | None = None) -> tuple[Tensor, float]:
    """Refine the enlarged picture ``start`` [1,3,H,W] tile by tile with the session's generator; returns the
    blended picture and the tiles' mean last loss. ``settings`` are the tiles' (see ``tile_settings``)."""
    height, width = start.shape[-2:]
    blend = Blend(width, height, upscale.upscale_overlap)
    losses = []
    for tile, left, top, loss in refined_tiles(session, settings, start, upscale, objective):
        blend.add(tile, left, top)
        losses.append(loss)
    return blend.result(), sum(losses) / len(losses)


def refined_tiles(session: Session, settings: Settings, start: Tensor, upscale: UpscaleSettings,
                  objective: Objective | None = None) -> Iterator[tuple[Tensor, int, int, float]]:
    """Each tile of ``start`` refined toward ``objective`` (default: the session's): (picture [3,tile,tile] on
    the CPU, left, top, last loss)."""
    height, width = start.shape[-2:]
    tile, run = upscale.upscale_tile, settings.run
    one = Settings(run, settings.options.for_frame(run.steps, run.steps, upscale.strength))
    boxes = plan_tiles(width, height, tile, upscale.upscale_overlap)
    objective = objective or session.objective()
    for index, (left, top) in enumerate(boxes):
        torch.manual_seed(run.seed + index)
        generator = session.generator(one, start[..., top:top + tile, left:left + tile])
        if (generator.width, generator.height) != (tile, tile):
            raise UsageError(f"--upscale-tile {tile}: the {run.generator} generator draws {generator.width}x"
                             f"{generator.height} tiles instead: give a multiple of 16")
        try:
            loss = session.drive(generator, objective, f"tile {index + 1}/{len(boxes)}")
        except KeyboardInterrupt:
            raise RunInterrupted(f"interrupted at tile {index + 1} of {len(boxes)}: nothing saved") from None
        yield generator.snapshot().cpu()[0], left, top, loss


def metadata(settings: Settings, upscale: UpscaleSettings, source: Path, picture: Image.Image,
             source_recipe: dict[str, Any] | None, loss: float) -> dict[str, Any]:
    """The upscaled PNG's record: the tiles' settings (what ``show-settings`` prints), the upscale's settings
    and the source it was made from (name, hash, size, recipe)."""
    record = asdict(upscale) | {"source": {"file": source.name, "sha256": sha256_of(source),
                                           "width": picture.width, "height": picture.height,
                                           "settings": source_recipe}}
    return {"settings": settings.to_dict(), "upscale": record, "step": settings.run.steps,
            "loss": None if math.isnan(loss) else loss}


def upscaled_name(path: Path, scale: int) -> Path:
    """NAME.up2.png beside NAME.png (NAME.x2.png is --save-scale's pixel-block enlargement)."""
    return path.with_name(f"{path.stem}.up{scale}.png")


def source_recipe(path: Path) -> dict[str, Any] | None:
    """The recipe recorded in the source PNG, or None when it has none (a photo, another program's PNG)."""
    try:
        recorded = read_metadata(path).get("settings")
    except UserError:
        return None
    return recorded if isinstance(recorded, dict) and recorded else None


def upscale(image: str | Path, upscale: UpscaleSettings | None = None, preset: str | None = None,
            progress: bool = True, **overrides: Any) -> UpscaleResult:
    """Upscale the picture ``image``: its recipe (else a preset and the given prompt) drives the refinement,
    and keyword overrides change it; writes NAME.up2.png beside it (or ``output``)."""
    source = Path(image)
    upscale = upscale or UpscaleSettings()
    upscale.validate()
    fixed = [name for name in FIXED_FLAGS if name in overrides]
    if fixed:
        raise UsageError(f"--{fixed[0].replace('_', '-')} is decided by the upscale itself (the tiles' size, start "
                         "and controls): drop it; --scale and --upscale-tile set the size")
    picture = load_image(source, "image to upscale")
    upscale = upscale.sized(picture.width, picture.height)
    recipe = source_recipe(source)
    aims = overrides.get("prompts") or overrides.get("image_prompts")
    if recipe is None and not aims and not (preset and _preset_aims(preset)):
        raise UsageError(f"{source} carries no artgen recipe to take a prompt from: give a prompt (artgen upscale "
                         f"{source} \"a red circle\")")
    named = {*overrides, *(_preset_names(preset)), *EDIT_RUN, "init_image", "output", "frames_dir"}
    base = rerun_recipe(recipe, source, named) if recipe else None
    settings = with_seed(build_settings(preset, base, overrides | TILE_RUN | dict(
        width=upscale.upscale_tile, height=upscale.upscale_tile)))
    target = _target(source, settings, upscale.scale, "output" in overrides)
    session = Session(settings, progress)
    settings = session.settings
    with session.explain_out_of_memory():
        result, loss = refine(session, settings, enlarge(picture, upscale.scale), upscale)
    saved = save_png(result, target, metadata(settings, upscale, source, picture, recipe, loss),
                     overwrite=settings.run.overwrite)
    return UpscaleResult(saved, result, settings, upscale, loss)


def _preset_names(preset: str | None) -> list[str]:
    from .settings import load_preset

    return [key.replace("-", "_") for key in load_preset(preset)] if preset else []


def _preset_aims(preset: str) -> bool:
    from .settings import load_preset

    values = load_preset(preset)
    return bool(values.get("prompts") or values.get("image_prompts"))


def _target(source: Path, settings: Settings, scale: int, named: bool) -> Path:
    """Where the upscale goes: -o (a template, as generate's), else NAME.upN.png beside the source; refused
    before any work when taken (without --overwrite) or when it is the source itself."""
    run = settings.run
    target = resolve_outputs(run.output, run, 1, run.overwrite)[0] if named else upscaled_name(source, scale)
    if target.exists() and os.path.samefile(target, source):
        raise UsageError(f"{target} is the image being upscaled: give another -o")
    if target.exists() and not run.overwrite:
        raise UserError(f"{target} already exists: pass --overwrite to replace it, or give -o")
    return target


def upscale_saved(session: Session, settings: Settings, paths: list[Path],
                  objective: Objective | None = None) -> list[Path]:
    """``--upscale N`` of generate and animate: upscale each image the run saved with the run's own session (its
    models loaded once) toward ``objective`` (an animation frame's prompts), writing NAME.upN.png beside it; a
    name already taken is kept, with a warning."""
    written = []
    for path in paths:
        picture = load_image(path, "image")
        upscale = UpscaleSettings(scale=settings.run.upscale).sized(picture.width, picture.height)
        one = tile_settings(settings, upscale.upscale_tile)
        result, loss = refine(session, one, enlarge(picture, upscale.scale), upscale,
                              objective or session.objective(edit=False))
        target = upscaled_name(path, upscale.scale)
        try:
            written.append(save_png(result, target, metadata(one, upscale, path, picture, settings.to_dict(), loss),
                                    overwrite=settings.run.overwrite))
        except OutputTaken:
            log.warning("%s already exists: kept it and wrote no upscale of %s (pass --overwrite to replace it)",
                        target, path)
    return written
