"""Cutouts: many random square crops of the image, resized to the perceptor's input size and augmented.

All crops are taken by a single ``grid_sample`` over one batched sampling grid, and the augmentations run
once over the whole batch of crops, so the cost does not grow with a Python loop over ``cutn``. Randomness
comes from torch's global generator, which a run seeds once: the same seed gives the same cutouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_FRACTION = 0.1  # the smallest crop, as a fraction of the image's shorter side


@dataclass(frozen=True)
class CutoutSettings:
    """How many crops, how their sizes are drawn, and which augmentations are on."""

    cutn: int = 32
    cut_pow: float = 1.0      # size = shorter side * u**cut_pow: above 1 favours small crops
    flip: bool = True
    affine: bool = True
    perspective: bool = True
    jitter: bool = True
    noise: float = 0.1        # largest std of the gaussian noise added per crop (0: none)
    wrap: bool = False        # --tile: crops run on across the borders into the other side of the image


def crop_grid(batch: int, cutn: int, height: int, width: int, cut_size: int, cut_pow: float,
              device: torch.device, wrap: bool = False) -> Tensor:
    """A sampling grid [batch, cutn * cut_size, cut_size, 2] holding ``cutn`` random square crops per image.

    The crops are stacked along the grid's height, so one grid_sample call cuts them all. With ``wrap`` a crop
    may start anywhere and run on past the right and bottom borders; the grid then addresses the image as
    :func:`wrap_pad` pads it, where those borders continue into the left and top ones.
    """
    shorter = min(height, width)
    low = min(shorter, max(1, round(shorter * MIN_FRACTION), cut_size // 4))
    u = torch.rand(batch, cutn, device=device)
    sizes = (u.pow(cut_pow) * (shorter - low) + low).round().clamp(low, shorter)
    span_x = torch.full_like(sizes, width) if wrap else (width - sizes + 1).clamp(min=1)
    span_y = torch.full_like(sizes, height) if wrap else (height - sizes + 1).clamp(min=1)
    left = (torch.rand(batch, cutn, device=device) * span_x).floor()
    top = (torch.rand(batch, cutn, device=device) * span_y).floor()
    if wrap:  # coordinates in the padded image: one pixel of the other side before, a crop's length after
        left, top, width, height = left + 1, top + 1, width + 1 + shorter, height + 1 + shorter
    steps = (torch.arange(cut_size, device=device, dtype=torch.float32) + 0.5) / cut_size  # (0,1) pixel centres
    xs = (left[..., None] + steps * sizes[..., None]) / width * 2 - 1     # [batch, cutn, cut_size]
    ys = (top[..., None] + steps * sizes[..., None]) / height * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :], ys[:, :, :, None]), dim=-1)
    return grid.reshape(batch, cutn * cut_size, cut_size, 2)


def wrap_pad(image: Tensor) -> Tensor:
    """The image padded circularly, one pixel before the left and top borders and the shorter side's length after
    the right and bottom ones: every crop of a tiled image lies inside, and bilinear sampling at the seam mixes
    the last and first pixels as it mixes any two neighbours."""
    shorter = min(image.shape[-2:])
    return F.pad(image, (1, shorter, 1, shorter), mode="circular")


def augmentations(settings: CutoutSettings) -> nn.Module:
    """The kornia pipeline the switches ask for (identity when all are off)."""
    steps: list[nn.Module] = []
    if settings.flip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    if settings.affine:
        steps.append(K.RandomAffine(degrees=15, translate=0.1, p=0.7, padding_mode="border"))
    if settings.perspective:
        steps.append(K.RandomPerspective(distortion_scale=0.7, p=0.7))
    if settings.jitter:
        steps.append(K.ColorJitter(brightness=0.05, contrast=0.05, saturation=0.1, hue=0.1, p=0.7))
    return nn.Sequential(*steps)


class MakeCutouts(nn.Module):
    """image [B,3,H,W] in [0,1] -> cutouts [B*cutn,3,S,S], image-major (image b's crops are contiguous)."""

    def __init__(self, cut_size: int, settings: CutoutSettings) -> None:
        super().__init__()
        self.cut_size = cut_size
        self.settings = settings
        self.augment = augmentations(settings)

    def forward(self, image: Tensor) -> Tensor:
        batch, channels, height, width = image.shape
        cutn, size = self.settings.cutn, self.cut_size
        wrap = self.settings.wrap
        grid = crop_grid(batch, cutn, height, width, size, self.settings.cut_pow, image.device, wrap)
        source = wrap_pad(image) if wrap else image
        cuts = F.grid_sample(source, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        cuts = cuts.view(batch, channels, cutn, size, size).transpose(1, 2).reshape(batch * cutn, channels, size, size)
        # Kornia's perspective warp now and then draws a degenerate homography and returns a crop of NaNs
        # (seen with distortion 0.7 on the bundled VQGAN); such pixels fall back to the un-augmented crop so
        # that one unlucky draw cannot end a run with a NaN loss.
        augmented = self.augment(cuts)
        cuts = torch.where(torch.isfinite(augmented), augmented, cuts)
        if self.settings.noise:
            strength = torch.rand(batch * cutn, 1, 1, 1, device=image.device, dtype=image.dtype) * self.settings.noise
            cuts = cuts + strength * torch.randn_like(cuts)
        return cuts


def overview_cutouts(image: Tensor, cut_size: int, count: int, wrap: bool = False) -> Tensor:
    """``count`` views of the whole image (padded to a square, resized), every second one mirrored.

    Overview cuts show the perceptor the composition; [B*count,3,S,S], image-major. With ``wrap`` (a tile) the
    views show the image rolled by a random offset, so the seam is as often in the middle as anywhere.
    """
    batch, _, height, width = image.shape
    if wrap:
        shift = torch.randint(height, ()).item(), torch.randint(width, ()).item()
        image = image.roll(shift, dims=(-2, -1))
    side = max(height, width)
    pad_x, pad_y = side - width, side - height
    square = F.pad(image, (pad_x // 2, pad_x - pad_x // 2, pad_y // 2, pad_y - pad_y // 2), mode="replicate")
    view = F.interpolate(square, size=(cut_size, cut_size), mode="bilinear", align_corners=False, antialias=True)
    views = torch.stack([view.flip(-1) if i % 2 else view for i in range(count)], dim=1)
    return views.reshape(batch * count, *view.shape[1:])
