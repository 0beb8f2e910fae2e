"""Writing images: output path templates, PNGs that carry their settings, and never clobbering files.

Files are written to a temporary name in the same folder and renamed into place, so an interrupted write
never leaves a half image under the final name.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from torch import Tensor

from . import __version__
from .errors import UsageError, UserError

METADATA_KEY = "artgen"
_TEMPLATE_FIELDS = ("prompt", "seed", "n", "generator", "width", "height", "date", "time")


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
    try:
        return template.format(**values)
    except KeyError as error:
        raise UsageError(f"{option} {template!r}: unknown field {{{error.args[0]}}}; "
                         f"use {', '.join('{' + f + '}' for f in _TEMPLATE_FIELDS)}") from None
    except (ValueError, IndexError) as error:
        raise UsageError(f"{option} {template!r} is not a valid template ({error}): "
                         "write fields as {seed}, and double braces for a literal brace") from None


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
    """Write a PNG with the metadata as JSON in a text chunk, atomically: a temporary file, then a rename
    (or, without ``overwrite``, a hard link that fails if the name was taken meanwhile)."""
    picture = image if isinstance(image, Image.Image) else to_pil(image)
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, json.dumps({"artgen_version": __version__, **metadata}, sort_keys=True))
    if path.exists() and not overwrite:
        raise OutputTaken(f"{path} already exists: pass --overwrite to replace it")
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            picture.save(stream, format="PNG", pnginfo=info)
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
    """The artgen metadata of a PNG written by artgen."""
    try:
        with Image.open(path) as picture:
            text = picture.text.get(METADATA_KEY) if hasattr(picture, "text") else None
    except FileNotFoundError:
        raise UserError(f"image {path} does not exist: check the path") from None
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read image {path} ({error}): give a PNG written by artgen") from None
    if text is None:
        raise UserError(f"{path} carries no artgen settings: give a PNG written by artgen")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{path} has damaged artgen settings: the PNG text chunk is not valid JSON") from None


def load_image(path: str | Path, what: str) -> Image.Image:
    """Open an image the user named (init or prompt image) as RGB, with a clear error when it cannot be read."""
    try:
        with Image.open(path) as picture:
            return picture.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist: check the path") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{what} {path} cannot be read as an image ({type(error).__name__}): "
                        "give a PNG, JPEG or WebP file") from None


def cover_resize(picture: Image.Image, width: int, height: int) -> Image.Image:
    """Scale an image to cover width x height, then centre-crop, so the init keeps its aspect ratio."""
    scale = max(width / picture.width, height / picture.height)
    size = (max(width, round(picture.width * scale)), max(height, round(picture.height * scale)))
    resized = picture.resize(size)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


def pil_to_tensor(picture: Image.Image, size: tuple[int, int] | None = None) -> Tensor:
    """An RGB PIL image as a [1,3,H,W] float tensor in [0,1], optionally resized to (width, height)."""
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.LANCZOS)
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def fit_image(image: Tensor, width: int, height: int) -> Tensor:
    """Resize an image tensor [N,3,H,W] to width x height when it differs (a start image for a generator)."""
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


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
