"""What a rerun (``--from``) takes from the recipe recorded in a PNG, which may be someone else's.

A recipe says how an image is drawn, not where files go or which of your files are read: the recorded output
and frames folder are shown, not followed (the rerun uses the default template unless ``-o`` is given); a
recorded init image or image prompt is read only when it lies inside the PNG's own folder (resolved from
there, as a shared folder expects), otherwise the flag must name the file again. A rerun never writes over
the PNG it reproduces.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .errors import UserError
from .output import next_free, resolve_outputs
from .prompts import parse_prompt
from .settings import Settings, apply

log = logging.getLogger("artgen")
NOT_RECIPE = ("overwrite", "resume")  # settings a reproduced run (--from) does not inherit
PLACES = {"output": "-o", "frames_dir": "--frames-dir"}  # where files go: shown, not followed
READS = {"init_image": ("init image", "--init-image"), "image_prompts": ("image prompt", "--image-prompt")}


def rerun_recipe(recorded: dict[str, Any], source: Path, given: Collection[str]) -> dict[str, Any]:
    """The settings a rerun takes from ``recorded`` (read from the PNG ``source``); ``given`` names the
    settings the user set again (flags, preset), which replace the recipe's and so are not checked."""
    names = {key.replace("-", "_"): value for key, value in recorded.items()}
    checked = apply(Settings(), names, f"recipe of {source}")  # names and types: one line each
    recipe = {name: getattr(checked, name) for name in names if name not in NOT_RECIPE and name not in given}
    defaults = Settings()
    for name, flag in PLACES.items():
        if name in recipe and recipe.pop(name) != getattr(defaults, name):
            log.warning("%s recorded %s %r, which a rerun does not follow: writing with the default %r (give %s "
                        "to choose)", source, flag, getattr(checked, name), getattr(defaults, name), flag)
    if recipe.pop("video_input", None):
        log.info("%s stylized the video %s: give it again (artgen stylize-video VIDEO --from ...) to use it",
                 source, checked.video_input)
    if recipe.get("init_image"):
        recipe["init_image"] = _inside(recipe["init_image"], source, "init_image")
    if "image_prompts" in recipe:
        recipe["image_prompts"] = ["|".join(_image_prompt(part, source) for part in value.split("|"))
                                   for value in recipe["image_prompts"]]
    return recipe


def _image_prompt(part: str, source: Path) -> str:
    """One "path:weight:stop" image prompt with its path resolved from the recipe's folder."""
    path = parse_prompt(part).text
    start = part.index(path)
    return part[:start] + _inside(path, source, "image_prompts") + part[start + len(path):]


def _inside(recorded: str, source: Path, name: str) -> str:
    """A recorded input path, resolved from the PNG's folder; refused when it is absolute, climbs out of that
    folder (``..``, or a link that leads out) or names no file there."""
    what, flag = READS[name]
    folder = source.parent
    path = folder / recorded
    inside = not Path(recorded).is_absolute() and path.resolve().is_relative_to(folder.resolve())
    if not (inside and path.is_file()):
        raise UserError(f"{source} reads the {what} {recorded!r}, which is not a file in that PNG's folder: "
                        f"give the file again with {flag} PATH")
    return os.path.normpath(path)


def spare_source(settings: Settings, source: Path) -> Settings:
    """Settings whose outputs never replace ``source``, the PNG being reproduced (even with --overwrite):
    a single named output that is the source moves to the next free name; numbered outputs skip it."""
    count = settings.keep if settings.candidates else settings.batch
    named = resolve_outputs(settings.output, settings, count, overwrite=True)
    if not any(path.exists() and os.path.samefile(path, source) for path in named):
        return settings
    if "{n" in settings.output or count > 1:
        if not settings.overwrite:
            return settings  # numbering skips every existing file, the source among them
        log.warning("%s is the image being reproduced: --overwrite will not replace it; new images take free "
                    "numbers", source)
        return dataclasses.replace(settings, overwrite=False)
    free = next_free(named[0])
    log.warning("%s is the image being reproduced: writing to %s instead", source, free)
    return dataclasses.replace(settings, output=str(free).replace("{", "{{").replace("}", "}}"))
