"""Edits: which part of the init image a run repaints, and how every picture of the run keeps the rest.

Design: an edit is decided once per run, before any model loads (:func:`prepare_edit`): the init image at the
run's size, grown by ``--extend`` (the new border filled with a reflection of the picture or with noise), and
the mask of what to repaint (a PNG whose white marks it, the init image's transparent pixels with ``--mask
alpha``, or a ``--mask-box``; the grown border always), feathered inward by ``--mask-blur`` so that every pixel
outside the mask is the init image's own. Generators receive the feathered mask in their Canvas and use it
where they can do better than a paste (diffusion keeps the known region at every step, VQGAN moves only the
latent cells under it); for every generator the run composites the saved pictures with the init image and
shows CLIP the composite, cut to the mask's surroundings, so the prompt steers the repainted part.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .errors import UsageError, UserError
from .files import sha256_of
from .images import cover_resize, read_init_image, readable_image

if TYPE_CHECKING:
    from .settings import RunSettings

log = logging.getLogger("artgen")
EDIT = "Edit: masks and outpainting"  # the --help heading of the mask and --extend flags
SIDES = ("left", "top", "right", "bottom")
FILLS = ("reflect", "noise")
CONTEXT = 0.25  # CLIP sees the mask's bounding box grown by this share of its longer side on every side
MIN_CONTEXT = 8  # ... and by at least this many pixels
ASPECT_TOLERANCE = 0.01  # a mask whose aspect ratio is off by more than this is refused, not stretched
_BOX = re.compile(r"^\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*$")


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` in the image's pixels (x, y: the top-left corner), each a whole number, w and h positive."""
    match = _BOX.match(text)
    if not match:
        raise UsageError(f'--mask-box {text!r}: give "x,y,w,h" in whole pixels of the image, e.g. 32,16,64,48')
    x, y, w, h = (int(part) for part in match.groups())
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise UsageError(f"--mask-box {text!r}: x and y must not be negative, and the width and height must be "
                         "positive")
    return x, y, w, h


def parse_extension(text: str) -> dict[str, int]:
    """``"left=128,top=64"``: pixels to grow the picture by on each named side (the others 0)."""
    grown = dict.fromkeys(SIDES, 0)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        side, _, amount = part.partition("=")
        side = side.strip().lower()
        if side not in SIDES or not amount.strip().isdigit():
            raise UsageError(f'--extend {text!r}: give sides and pixels like "left=128,top=64" (sides: '
                             f"{', '.join(SIDES)})")
        grown[side] = int(amount)
    if not any(grown.values()):
        raise UsageError(f"--extend {text!r} grows no side: give at least one side a positive number of pixels")
    return grown


def is_edit(run: "RunSettings") -> bool:
    """Whether the run repaints only part of its init image (a mask, a box or an extension)."""
    return bool(run.mask or run.mask_box or run.extend)


@dataclass(frozen=True)
class Edit:
    """The init image at the run's size and what of it to repaint (all [1,C,H,W] tensors on one device)."""

    init: Tensor    # [1,3,H,W] in [0,1]: the picture to keep, grown and filled where --extend asked
    mask: Tensor    # [1,1,H,W]: 1 where the run repaints, 0 where the init image stays
    soft: Tensor    # the mask feathered inward: 0 outside it, rising to 1 within --mask-blur pixels of its edge
    region: tuple[int, int, int, int]  # top, bottom, left, right of what CLIP looks at: the mask with context

    def to(self, device: torch.device) -> "Edit":
        return Edit(self.init.to(device), self.mask.to(device), self.soft.to(device), self.region)

    def composite(self, image: Tensor) -> Tensor:
        """The generator's picture inside the mask and the init image outside it (exactly, where soft is 0)."""
        return image * self.soft.to(image.dtype) + self.init.to(image.dtype) * (1 - self.soft.to(image.dtype))

    def crop(self, image: Tensor) -> Tensor:
        """The part of a picture around the mask that CLIP scores."""
        top, bottom, left, right = self.region
        return image[..., top:bottom, left:right]

    def view(self, image: Tensor) -> Tensor:
        """What the objective scores of a generator's raw picture: the composite around the mask."""
        return self.crop(self.composite(image))


def prepare_edit(run: "RunSettings") -> tuple[Edit, str | None]:
    """The run's edit and the sha256 of its mask file (None for a box, the image's alpha or an extension only).

    ``run.width`` x ``run.height`` is the finished picture's size; the init image fills it less the extension.
    """
    grown = parse_extension(run.extend) if run.extend else dict.fromkeys(SIDES, 0)
    width, height = run.width - grown["left"] - grown["right"], run.height - grown["top"] - grown["bottom"]
    if width < 1 or height < 1:
        raise UsageError(f"--extend {run.extend} grows the picture by more than its {run.width}x{run.height} "
                         "pixels: give a larger --width/--height (artgen edit sets them from the image)")
    init = read_init_image(run.init_image, width, height)
    mask = user_mask(run, width, height)
    if run.invert_mask:
        mask = 1 - mask
    init, mask = extend(init, mask, grown, run.extend_fill, run.seed or 0)
    check_coverage(mask)
    soft = feather(mask, run.mask_blur)
    digest = sha256_of(run.mask) if run.mask and run.mask != "alpha" else None
    return Edit(init, mask, soft, context_region(mask)), digest


def user_mask(run: "RunSettings", width: int, height: int) -> Tensor:
    """The user's mask ([1,1,H,W], 1 = repaint) at the init image's place in the picture, mapped as the image
    is (scaled to cover width x height, centre-cropped); zeros when only --extend was asked."""
    with readable_image(run.init_image, "init image") as picture:
        size, alpha = picture.size, _alpha(picture) if run.mask == "alpha" else None
    if run.mask == "alpha":
        if alpha is None:
            raise UserError(f"--mask alpha: the init image {run.init_image} has no transparency: give a mask PNG "
                            "(--mask PATH) or --mask-box x,y,w,h")
        marked = alpha.point(lambda value: 255 if value < 128 else 0)  # transparent pixels are repainted
    elif run.mask:
        marked = _mask_file(run.mask, size)
    elif run.mask_box:
        marked = _box(run.mask_box, size)
    else:
        return torch.zeros(1, 1, height, width)
    fitted = np.asarray(cover_resize(marked, width, height), dtype=np.float32)
    return torch.from_numpy((fitted >= 128).astype(np.float32))[None, None]


def _alpha(picture: Image.Image) -> Image.Image | None:
    """The picture's alpha channel (L), or None when it has no transparency."""
    if picture.mode == "P" and "transparency" in picture.info or picture.mode in ("LA", "La", "PA"):
        picture = picture.convert("RGBA")
    return picture.getchannel("A") if "A" in picture.getbands() else None


def _mask_file(path: str, size: tuple[int, int]) -> Image.Image:
    """The mask PNG as L at the image's ``size``: resized with a warning when only its scale differs."""
    with readable_image(path, "mask", "give a PNG whose white marks what to repaint") as picture:
        marked = picture.convert("L")
    if marked.size == size:
        return marked
    if abs(marked.width / marked.height - size[0] / size[1]) > ASPECT_TOLERANCE * size[0] / size[1]:
        raise UserError(f"mask {path} is {marked.width}x{marked.height} but the image is {size[0]}x{size[1]}, "
                        "another shape: give a mask of the image's size")
    log.warning("mask %s is %dx%d, the image %dx%d: resized the mask to it", path, *marked.size, *size)
    return marked.resize(size, Image.BILINEAR)


def _box(text: str, size: tuple[int, int]) -> Image.Image:
    """--mask-box drawn white on black at the image's ``size``."""
    x, y, w, h = parse_box(text)
    if x + w > size[0] or y + h > size[1]:
        raise UserError(f"--mask-box {text} reaches past the {size[0]}x{size[1]} image: keep x+w <= {size[0]} and "
                        f"y+h <= {size[1]}")
    marked = np.zeros((size[1], size[0]), dtype=np.uint8)
    marked[y:y + h, x:x + w] = 255
    return Image.fromarray(marked, "L")


def extend(init: Tensor, mask: Tensor, grown: dict[str, int], fill: str, seed: int) -> tuple[Tensor, Tensor]:
    """The picture grown by ``grown`` pixels a side, the new border filled by ``fill`` (reflect: the picture
    mirrored at its edge, noise: uniform noise from ``seed``) and marked for repainting."""
    pad = (grown["left"], grown["right"], grown["top"], grown["bottom"])
    if not any(pad):
        return init, mask
    border = F.pad(torch.zeros_like(mask), pad, value=1.0) > 0
    mask = F.pad(mask, pad, value=1.0)
    if fill == "noise":
        noise = torch.rand(init.shape[0], 3, *mask.shape[-2:], generator=torch.Generator().manual_seed(seed))
        return torch.where(border, noise, F.pad(init, pad)), mask
    return reflect(init, pad), mask


def reflect(image: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """``image`` padded by mirroring at its edges, as often as a pad wider than the picture needs."""
    left, right, top, bottom = pad
    while left or right or top or bottom:
        height, width = image.shape[-2:]
        step = (min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1))
        if not any(step):  # a one-pixel side cannot be mirrored: repeat it
            return F.pad(image, (left, right, top, bottom), mode="replicate")
        image = F.pad(image, step, mode="reflect")
        left, right, top, bottom = (left - step[0], right - step[1], top - step[2], bottom - step[3])
    return image


def check_coverage(mask: Tensor) -> None:
    """Refuse a mask that marks nothing; warn when it marks everything (the init image is then only a start)."""
    if not mask.any():
        raise UserError("the mask marks nothing to repaint: white pixels of a mask PNG (transparent ones with --mask "
                        "alpha) mark what to repaint; --invert-mask swaps them")
    if mask.all():
        log.warning("the mask covers the whole picture: this is plain generation from the init image (use a mask "
                    "with black where the picture must stay)")


def feather(mask: Tensor, pixels: float) -> Tensor:
    """The mask softened inward over ``pixels``: shrunk by half of them, then box-blurred over as many, so it rises
    from 0 exactly at the mask's edge to 1 that far inside, and everything outside keeps weight 0 (the init image
    stays exact there)."""
    radius = math.ceil(pixels / 2)
    if radius < 1:
        return mask
    size = 2 * radius + 1
    shrunk = -F.max_pool2d(-mask, size, stride=1, padding=radius)  # the picture's own border does not erode it
    return F.avg_pool2d(shrunk, size, stride=1, padding=radius, count_include_pad=False) * mask


def context_region(mask: Tensor) -> tuple[int, int, int, int]:
    """The mask's bounding box grown by CONTEXT of its longer side (at least MIN_CONTEXT pixels), inside the
    picture: (top, bottom, left, right)."""
    rows = mask[0, 0].any(dim=1).nonzero().flatten()
    cols = mask[0, 0].any(dim=0).nonzero().flatten()
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    margin = max(MIN_CONTEXT, round(CONTEXT * max(bottom - top, right - left)))
    height, width = mask.shape[-2:]
    return max(0, top - margin), min(height, bottom + margin), max(0, left - margin), min(width, right + margin)


def latent_cells(soft: Tensor, factor: int) -> Tensor:
    """Which cells of a latent ``factor`` times smaller than the picture may move: each cell that covers any
    repainted pixel, and its neighbours (a decoder draws a cell's pixels from the cells around it too)."""
    touched = F.max_pool2d((soft > 0).float(), factor, stride=factor)
    return F.max_pool2d(touched, 3, stride=1, padding=1)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, read without decoding it."""
    with readable_image(path, "image") as picture:
        return picture.size


class EditedGenerator:
    """A generator whose pictures keep the init image outside the mask: its snapshots are composited; everything
    else is the generator's own."""

    def __init__(self, generator: Any, edit: Edit) -> None:
        self.generator, self.edit = generator, edit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator, name)

    def snapshot(self) -> Tensor:
        return self.edit.composite(self.generator.snapshot()).clamp(0, 1)


def edited(generator: Any, edit: Edit, generator_name: str) -> EditedGenerator:
    """``generator`` wrapped to keep the init image, refused when it draws another size than the edit's."""
    height, width = edit.mask.shape[-2:]
    if (generator.width, generator.height) != (width, height):
        raise UsageError(f"the {generator_name} generator draws {generator.width}x{generator.height} pictures, not "
                         f"the edit's {width}x{height}: give the image (or --width and --height) a size it draws, "
                         f"such as {generator.width}x{generator.height}")
    return EditedGenerator(generator, edit)
