"""What a rerun (``--from``) takes from the recipe recorded in a PNG, which may be someone else's.

A recipe says how an image is drawn, not where files go or which of your files are read: the recorded output
and frames folder are shown, not followed (the rerun uses the default template unless ``-o`` is given); a
recorded init image or image prompt is read only when it lies inside the PNG's own folder (resolved from
there, as a shared folder expects), otherwise the flag must name the file again. A rerun never writes over
the PNG it reproduces. Recipes written before the generators owned their options (artgen 0.1.0 recorded every
field of every generator) are upgraded to today's names first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .errors import UserError
from .files import sha256_of
from .output import next_free, resolve_outputs
from .prompts import parse_prompt
from .settings import DEFAULT_FRAMES_DIR, DEFAULT_OUTPUT, Settings, check_recipe

log = logging.getLogger("artgen")
NOT_RECIPE = ("overwrite", "resume")  # settings a reproduced run (--from) does not inherit
PLACES = {"output": ("-o", DEFAULT_OUTPUT), "frames_dir": ("--frames-dir", DEFAULT_FRAMES_DIR)}  # shown, not followed
# artgen 0.1.0 named the VQGAN prior's diffusion settings as the diffusion generator's own
PRIOR_RENAMES = {"diffusion_model": "prior_model", "diffusion_checkpoint": "prior_checkpoint",
                 "diffusion_config": "prior_config", "noise_schedule": "prior_noise_schedule",
                 "clamp_max": "prior_clamp_max", "clamp_by_signal": "prior_clamp_by_signal"}


def upgrade_recipe(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recipe in today's names: a 0.1.0 VQGAN recipe (it has ``diffusion_model``) gets its prior's settings
    renamed, with ``clamp_grad: false`` as a prior limit of 0 (none). Other generators' options are left for
    the settings to skip."""
    if recorded.get("generator", "vqgan") != "vqgan" or "diffusion_model" not in recorded:
        return recorded
    upgraded = {PRIOR_RENAMES.get(key, key): value for key, value in recorded.items() if key != "clamp_grad"}
    if recorded.get("clamp_grad") is False:
        upgraded["prior_clamp_max"] = 0.0
    return upgraded
READS = {"init_image": ("init image", "--init-image"), "image_prompts": ("image prompt", "--image-prompt"),
         "mask": ("mask", "--mask")}


def applicable(recorded: dict[str, Any], animation: bool) -> dict[str, Any]:
    """A recipe in today's names with only the settings its generator takes (0.1.0 recorded every generator's),
    in recorded order: what ``show-settings`` prints as a preset."""
    from .settings import generator_of, split

    upgraded = upgrade_recipe(recorded)
    run, options, frames = split(upgraded, generator_of(upgraded), animation, "recipe", strict=False)
    kept = run | options | frames
    return {key: value for key, value in upgraded.items() if key in kept}


def rerun_recipe(recorded: dict[str, Any], source: Path, given: Collection[str]) -> dict[str, Any]:
    """The settings a rerun takes from ``recorded`` (read from the PNG ``source``); ``given`` names the
    settings the user set again (flags, preset), which replace the recipe's and so are not checked."""
    names = upgrade_recipe({key.replace("-", "_"): value for key, value in recorded.items()})
    check_recipe(names, f"recipe of {source}")  # names and types: one line each
    recipe = {name: value for name, value in names.items() if name not in NOT_RECIPE and name not in given}
    for name, (flag, default) in PLACES.items():
        if name in recipe and recipe.pop(name) != default:
            log.warning("%s recorded %s %r, which a rerun does not follow: writing with the default %r (give %s "
                        "to choose)", source, flag, names[name], default, flag)
    if recipe.get("video_input"):
        log.info("%s stylized the video %s: give it again (artgen stylize-video VIDEO --from ...) to use it",
                 source, recipe["video_input"])
    recipe.pop("video_input", None)
    if recipe.get("init_image"):
        recipe["init_image"] = _inside(recipe["init_image"], source, "init_image")
    _check_mask(recipe, source)
    if "image_prompts" in recipe:
        recipe["image_prompts"] = ["|".join(_image_prompt(part, source) for part in value.split("|"))
                                   for value in recipe["image_prompts"]]
    return recipe


def _check_mask(recipe: dict[str, Any], source: Path) -> None:
    """Resolve a recorded mask file like an init image, and refuse it when it is not the file the recipe was
    drawn with (its sha256, which the run records, differs); the run records the hash anew."""
    recorded_hash = recipe.pop("mask_sha256", None)
    mask = recipe.get("mask")
    if not mask or mask == "alpha":
        return
    recipe["mask"] = _inside(mask, source, "mask")
    if recorded_hash and sha256_of(recipe["mask"]) != recorded_hash:
        raise UserError(f"the mask {mask} has changed since {source} was drawn (its sha256 differs): give the "
                        f"original mask, or --mask {mask} to edit with this one")


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
        return settings.replace(overwrite=False)
    free = next_free(named[0])
    log.warning("%s is the image being reproduced: writing to %s instead", source, free)
    return settings.replace(output=str(free).replace("{", "{{").replace("}", "}}"))
