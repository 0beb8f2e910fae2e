"""Writing images: output path templates, PNGs that carry their settings, and never clobbering files.

Files are written to a temporary name in the same folder and renamed into place, so an interrupted write
never leaves a half image under the final name. Reading the images a user gives (init images, image prompts,
frames) is images.py's job; this module reads only the recipe an artgen PNG carries.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import re
import string
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from . import __version__
from .errors import UsageError, UserError
from .images import open_image

METADATA_KEY = "artgen"
_TEMPLATE_FIELDS = ("prompt", "seed", "n", "generator", "width", "height", "date", "time")
# A plain format spec: fill and align, sign, "#", "0", a width and precision of at most 3 digits (so a spec
# cannot ask for a gigabyte of padding), a type. No nested {fields}.
_PLAIN_SPEC = re.compile(r"(?:[^{}]?[<>=^])?[-+ ]?#?0?\d{0,3}[,_]?(?:\.\d{1,3})?[bcdeEfFgGnosxX%]?")

NAME_MAX = 255
"""The longest file name, in bytes, that Linux, macOS and Windows file systems take."""
_NAME_ROOM = 32
"""Bytes artgen adds to an output's name for the files it writes beside it (``.NAME.xxxxxxxx.tmp`` while
writing, ``.step00050``, ``.candidates``, ``-2`` for a taken name)."""

MAX_RECIPE_CHARS = 256 * 1024
"""The longest artgen text chunk read: a recipe is a few kilobytes; this leaves room for long prompts and
keyframe schedules (PIL itself stops at 1 MiB of text)."""
MAX_RECIPE_DEPTH = 8
"""How deep JSON objects and lists may nest in a recipe; artgen writes 3 levels (metadata, settings, lists)."""


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe version of a prompt."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return cleaned[:limit].rstrip("_") or "image"


def resolve_outputs(template: str, settings: Any, count: int = 1, overwrite: bool = False) -> list[Path]:
    """The output paths of a run: the template filled in, ``{n}`` counting up from the first free number.

    Several images (a batch, kept candidates) need ``{n}``; it is added before ``.png`` when the template
    has none. Without ``overwrite`` an existing file is refused here, before any work is done.
    """
    values = template_values(settings)
    if "{n" not in template:
        if count == 1:
            path = _check_png(Path(_fill(template, {**values, "n": 1})))
            if path.exists() and not overwrite:
                raise UserError(f"{path} already exists: pass --overwrite to replace it, or choose another --output")
            return [path]
        template = template[:-4] + "-{n}" + template[-4:] if template.lower().endswith(".png") else template
    paths: list[Path] = []
    for n in range(1, 100000):
        path = _check_png(Path(_fill(template, {**values, "n": n})))
        if overwrite or not path.exists():
            paths.append(path)
            if len(paths) == count:
                return paths
    raise UserError(f"no free file name for {template!r}: clean up the output folder")


def template_values(settings: Any) -> dict[str, Any]:
    """What output templates may name: {prompt} (the first prompt, file-name safe), {seed}, {generator}, ..."""
    keyed = [part.split(":", 1)[-1] for part in getattr(settings, "prompt_keyframes", "").split("|") if part]
    first_prompt = (settings.prompts or keyed or settings.image_prompts or ["image"])[0].split("|")[0]
    return {
        "prompt": slug(first_prompt.split(":")[0]), "seed": settings.seed, "generator": settings.generator,
        "width": settings.width, "height": settings.height,
        "date": time.strftime("%Y-%m-%d"), "time": time.strftime("%H%M%S"),
    }


def fill_template(template: str, settings: Any, option: str = "--frames-dir") -> str:
    """A path template (such as --frames-dir) filled in from the settings."""
    return _fill(template, template_values(settings), option)


def _fill(template: str, values: dict[str, Any], option: str = "--output") -> str:
    """The template filled in, once check_template has passed it; every file name in it checked for length."""
    check_template(template, option)
    try:
        filled = template.format(**values)
    except (ValueError, IndexError) as error:
        raise UsageError(f"{option} {template!r} is not a valid template ({error}): "
                         "write fields as {seed} or {n:03d}, and double braces for a literal brace") from None
    for name in Path(filled).parts:
        if len(os.fsencode(name)) + _NAME_ROOM > NAME_MAX:
            raise UsageError(f"{option} {template!r} makes a file name of {len(os.fsencode(name))} bytes "
                             f"({name[:24]!r}...); file names may have {NAME_MAX - _NAME_ROOM} here: "
                             "shorten the template (or its literal text)")
    return filled


def check_template(template: str, option: str = "--output") -> None:
    """Refuse a template that names anything but the documented fields with plain format specs.

    Python's format strings reach objects through ``{prompt.__class__}``, ``{seed[0]}`` or ``!r``; a path
    template must only say which value goes where.
    """
    fields = ", ".join("{" + f + "}" for f in _TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise UsageError(f"{option} {template!r} is not a valid template ({error}): "
                         "write fields as {seed}, and double braces for a literal brace") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _TEMPLATE_FIELDS:
            what = "unknown field" if name.isidentifier() else "only plain field names are allowed, not"
            raise UsageError(f"{option} {template!r}: {what} {{{name}}}; use {fields}")
        if conversion is not None or not _PLAIN_SPEC.fullmatch(spec or ""):
            raise UsageError(f"{option} {template!r}: {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain field; write {{{name}}} or a "
                             "simple format such as {n:03d}")


def _check_png(path: Path) -> Path:
    if path.suffix.lower() != ".png":
        raise UsageError(f"--output {str(path)!r} must end in .png")
    return path


def ensure_writable(folder: Path) -> None:
    """Create the output folder and prove it takes files, so a long run cannot fail at its very end."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".artgen-probe-"):
            pass
    except OSError as error:
        raise UserError(f"cannot write to output folder {folder}: {_why_not_writable(folder, error)}; "
                        "choose a writable --output location") from None


def numbered_names(path: Path) -> Iterator[Path]:
    """NAME-2.png, NAME-3.png, ... beside ``path``: the names a run takes when ``path`` is taken."""
    for number in itertools.count(2):
        yield path.with_name(f"{path.stem}-{number}{path.suffix}")


def next_free(path: Path) -> Path:
    """The first of ``numbered_names(path)`` that no file holds."""
    return next(name for name in numbered_names(path) if not name.exists())


def _why_not_writable(folder: Path, error: OSError) -> str:
    """Why a folder cannot be created or take files, in words that fit the case (the OS's own can mislead:
    /proc answers "No such file or directory" for a folder that exists)."""
    existing = next(part for part in (folder, *folder.parents) if part.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if error.errno == errno.EROFS:
        return "it is on a read-only file system"
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied ({error.strerror})"
    if error.errno == errno.ENOENT:
        return (f"{existing} does not take new files or folders ({error.strerror}), as on a special file system "
                "such as /proc or /sys")
    return f"{error.strerror or error}"


def step_path(path: Path, step: int) -> Path:
    """Where the intermediate image of a step goes, beside the final one."""
    return path.with_name(f"{path.stem}.step{step:05d}{path.suffix}")


def to_pil(image: Tensor) -> Image.Image:
    """A [3,H,W] or [1,3,H,W] tensor in [0,1] as an 8-bit RGB image (values outside are clipped)."""
    if image.dim() == 4:
        image = image[0]
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


class OutputTaken(UserError):
    """The output file appeared while the run was working (another run took the name)."""


def save_png(image: Tensor | Image.Image, path: Path, metadata: dict[str, Any], overwrite: bool = True) -> Path:
    """Write a PNG with the metadata as JSON in a text chunk, atomically (see ``write_atomically``)."""
    picture = image if isinstance(image, Image.Image) else to_pil(image)
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps({"artgen_version": __version__, **metadata}, sort_keys=True))
    return write_atomically(path, lambda stream: picture.save(stream, format="PNG", pnginfo=info), overwrite)


def save_text(text: str, path: Path, overwrite: bool = True) -> Path:
    """Write a text file (an SVG beside its PNG) in UTF-8, atomically (see ``write_atomically``)."""
    return write_atomically(path, lambda stream: stream.write(text.encode("utf-8")), overwrite)


def write_atomically(path: Path, write: Callable[[BinaryIO], Any], overwrite: bool) -> Path:
    """Have ``write`` fill a temporary file beside ``path``, then rename it into place (or, without
    ``overwrite``, hard-link it, which fails if the name was taken meanwhile): no half file under the name."""
    if path.exists() and not overwrite:
        raise OutputTaken(f"{path} already exists: pass --overwrite to replace it")
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, plain_file_mode())
        if overwrite:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError:
        raise OutputTaken(f"{path} already exists: pass --overwrite to replace it") from None
    except OSError as error:
        raise UserError(write_error(path, error)) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path


def plain_file_mode() -> int:
    """The permissions open() would give a new file (0o666 less the umask); mkstemp's are owner-only."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_error(path: Path, error: OSError) -> str:
    """One line for a failed write, naming a full disk when that is the cause."""
    if error.errno == errno.ENOSPC:
        return f"cannot write {path}: the disk is full; free some space and run again"
    return f"cannot write {path} ({error.strerror or error}): check the folder and its permissions"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The artgen metadata of a PNG written by artgen: a JSON object of bounded size and depth.

    The text is taken from the chunks before the pixels, so no pixel is decoded.
    """
    try:
        with open_image(path, "image") as picture:
            text = picture.info.get(METADATA_KEY)
    except ValueError as error:  # PIL: a compressed text chunk that expands past its limit
        raise UserError(f"cannot read image {path} ({error}): it holds an oversized text chunk; "
                        "give a PNG written by artgen") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {path} ({error}): give a PNG written by artgen") from None
    if not isinstance(text, str):
        raise UserError(f"{path} carries no artgen settings: give a PNG written by artgen")
    return parse_metadata(text, path)


def parse_metadata(text: str, path: str | Path) -> dict[str, Any]:
    """The artgen text chunk as a JSON object, refusing what artgen never writes (huge, deep, not an object)."""
    damaged = f"{path} has damaged artgen settings"
    if len(text) > MAX_RECIPE_CHARS:
        raise UserError(f"{damaged}: the text chunk holds {len(text)} characters, more than the "
                        f"{MAX_RECIPE_CHARS} a recipe may have")
    too_deep = UserError(f"{damaged}: its JSON nests deeper than the {MAX_RECIPE_DEPTH} levels a recipe may have")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{damaged}: the PNG text chunk is not valid JSON") from None
    except RecursionError:  # nested too deep even to parse
        raise too_deep from None
    if _depth(data) > MAX_RECIPE_DEPTH:
        raise too_deep
    if not isinstance(data, dict):
        raise UserError(f"{damaged}: the PNG text chunk holds {_json_kind(data)}, not a JSON object")
    return data


def recorded_settings(metadata: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The settings in the metadata of the PNG ``path``: a non-empty mapping, or one line saying why not."""
    settings = metadata.get("settings")
    if settings is None or settings == {}:
        raise UserError(f"{path} carries no artgen settings (its artgen chunk records no recipe): "
                        "give an image written by artgen generate or animate")
    if not isinstance(settings, dict):
        raise UserError(f"{path} has damaged artgen settings: 'settings' holds {_json_kind(settings)}, "
                        "not a mapping of setting names to values")
    return settings


def _depth(value: Any) -> int:
    """How deep lists and objects nest in a JSON value (a scalar is 0)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null"}.get(
        type(value), "a number")


def contact_sheet(images: list[Tensor], labels: list[str], columns: int = 4) -> Image.Image:
    """All candidates in a grid, each with a caption line under it (its rank, seed and score).

    Small images are enlarged (nearest neighbour, a whole factor) until each caption fits under its tile.
    """
    from PIL import ImageDraw

    tiles = [to_pil(image) for image in images]
    longest = max(ImageDraw.Draw(tiles[0]).textlength(label) for label in labels)
    scale = max(1, math.ceil((longest + 4) / tiles[0].width))
    tiles = [tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST) for tile in tiles]
    width, height = tiles[0].size
    caption = 14
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * width, rows * (height + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (tile, label) in enumerate(zip(tiles, labels)):
        left, top = (index % columns) * width, (index // columns) * (height + caption)
        sheet.paste(tile, (left, top))
        draw.text((left + 2, top + height + 1), label, fill="black")
    return sheet
