"""Reading images: the files a user names (init image, image prompt, frame, a PNG's recipe), resized and turned
into tensors. Nothing here writes; output.py does.

Every read goes through ``open_image``, which identifies the file without PIL's module-wide decompression-bomb
check and refuses more than MAX_PIXELS before a pixel is decoded, so a few-byte PNG that claims billions of
pixels costs nothing and a large photo opens without PIL's warning. ``read_init_image`` is the one decode of an
init image: a run reads it once and hands the tensor to its generator.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .errors import UserError
from .files import readable_file

MAX_PIXELS = 16384 * 16384
"""The most pixels artgen reads from an image the user gives (init image, image prompt, --from or
show-settings PNG, frame): 268 million, 16384 a side. Every camera photo fits (the largest sensors make 200
Mpx), and decoding one at the limit takes about 1 GiB (PIL holds RGB in 4 bytes a pixel), which a machine
that runs CLIP can spare for a moment. A file that claims more is refused before any pixel is decoded: a PNG
of a few hundred bytes can claim ten billion pixels (a decompression bomb). PIL's own limit (89 Mpx, which
only warns below twice that) is bypassed in artgen's reading code, so large photos open without its warning
and other code's PIL settings are left alone."""


@contextmanager
def open_image(path: str | Path, what: str) -> Iterator[Image.Image]:
    """An image file opened lazily (no pixel decoded yet), refused in one line when it claims more than
    MAX_PIXELS. Errors of PIL (OSError, ValueError, UnidentifiedImageError) are left to the caller."""
    with open(readable_file(path, what), "rb") as stream:
        picture = _identify(stream, str(path))
        try:
            if picture.width * picture.height > MAX_PIXELS:
                raise UserError(f"{what} {path} is {picture.width}x{picture.height} pixels, more than the "
                                f"{MAX_PIXELS // 10**6} million artgen reads: give a smaller image")
            yield picture
        finally:
            picture.close()


def _identify(stream: IO[bytes], name: str) -> Image.Image:
    """The image in ``stream``, identified as Image.open does but without its decompression-bomb check.

    That check warns or raises through PIL's module-wide MAX_IMAGE_PIXELS and the warnings filters, which
    cannot be changed for one call without touching other code's (and other threads') PIL; open_image
    checks MAX_PIXELS instead, before anything is decoded.
    """
    Image.init()
    prefix = stream.read(16)
    for kind in Image.ID:
        factory, accept = Image.OPEN[kind]
        accepted = accept(prefix) if accept else True
        if not accepted or isinstance(accepted, str):  # a str: "looks like this format, but unsupported"
            continue
        stream.seek(0)
        try:
            return factory(stream, name)
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError(f"cannot identify image file {name!r}")


@contextmanager
def readable_image(path: str | Path, what: str, fix: str = "give a PNG, JPEG or WebP file") -> Iterator[Image.Image]:
    """``open_image``, with a file that cannot be read (on opening it or decoding it inside the block) as one
    line ending in ``fix``."""
    try:
        with open_image(path, what) as picture:
            yield picture
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"{what} {path} cannot be read as an image ({type(error).__name__}): {fix}") from None


def load_image(path: str | Path, what: str, cover: tuple[int, int] | None = None) -> Image.Image:
    """Open an image the user named (init or prompt image, frame) as RGB, with one line when it cannot be read.

    With ``cover`` (width, height), an image several times larger is decoded reduced where its format allows
    (JPEG) and shrunk by a whole factor that still covers that size, so a large photo costs little memory.
    """
    with readable_image(path, what) as picture:
        return _reduced(picture, cover).convert("RGB") if cover else picture.convert("RGB")


def _reduced(picture: Image.Image, cover: tuple[int, int]) -> Image.Image:
    """The picture shrunk by the largest whole factor that keeps it at least ``cover`` in both sides."""
    picture.draft("RGB", cover)  # JPEG decodes at 1/2, 1/4 or 1/8 scale when that still covers the size
    factor = min(picture.width // max(1, cover[0]), picture.height // max(1, cover[1]))
    if factor < 2:
        return picture
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGB")
    return picture.reduce(factor)


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


def read_init_image(path: str | Path, width: int, height: int) -> Tensor:
    """The init image as a [1,3,H,W] tensor in [0,1], scaled to cover width x height and centre-cropped (its
    aspect ratio kept); a large photo is decoded reduced first. Both generators start from exactly this."""
    return pil_to_tensor(cover_resize(load_image(path, "init image", (width, height)), width, height))


def fit_image(image: Tensor, width: int, height: int) -> Tensor:
    """Resize an image tensor [N,3,H,W] to width x height when it differs (a start image for a generator)."""
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
