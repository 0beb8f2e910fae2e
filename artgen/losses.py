"""Regularizers on the rendered image ([N,3,H,W], meant to lie in [0,1]); each returns a scalar.

Design: plain functions of the image, so the objective weighs them (--tv-scale, --range-scale, --sat-scale,
--symmetry-scale, --palette-scale) and any generator gets them without doing anything. The symmetry and
palette losses add up over a batch, as the prompt losses do, so each image of a batch is pulled as hard as a
lone one: their weights are relative to the CLIP scale and must keep their balance with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError

SYMMETRIES = ("none", "horizontal", "vertical", "both", "radial:N")


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels: penalizes high-frequency noise."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def out_of_range(image: Tensor) -> Tensor:
    """Mean squared excursion outside [0,1]: keeps values the writer would clip inside the range."""
    return (image - image.clamp(0, 1)).pow(2).mean()


def saturation(image: Tensor) -> Tensor:
    """Mean spread between the largest and smallest channel: a positive weight mutes colours."""
    return (image.amax(dim=-3) - image.amin(dim=-3)).mean()


def parse_symmetry(text: str) -> tuple[str, int]:
    """(kind, folds) of a --symmetry value: ("none", 1), ("horizontal", 2), ..., ("radial", N) for radial:N."""
    value = text.strip().lower()
    if value in ("none", "horizontal", "vertical"):
        return value, 1 if value == "none" else 2
    if value == "both":
        return value, 4
    kind, _, folds = value.partition(":")
    if kind == "radial":
        if not folds.isdigit() or int(folds) < 2:
            raise UsageError(f"--symmetry {text!r}: radial symmetry needs a whole number of folds of 2 or more, "
                             "like radial:6")
        return kind, int(folds)
    raise UsageError(f"unknown --symmetry {text!r}: choose one of {', '.join(SYMMETRIES)}")


def symmetry(image: Tensor, kind: str) -> Tensor:
    """Mean squared difference between each image and its mirror (horizontal: left-right, vertical: top-bottom,
    both: the two added) or, for radial:N, its turn by 360/N degrees about the centre, compared inside the
    inscribed disc (the corners have no partner under a turn). Zero exactly when the image has that symmetry."""
    name, folds = parse_symmetry(kind)
    if name == "none":
        return image.new_zeros(())
    if name == "radial":
        return radial_asymmetry(image, folds)
    loss = image.new_zeros(())
    if name in ("horizontal", "both"):
        loss = loss + per_image_mean((image - image.flip(-1)).square())
    if name in ("vertical", "both"):
        loss = loss + per_image_mean((image - image.flip(-2)).square())
    return loss


def per_image_mean(values: Tensor) -> Tensor:
    """The mean of each image's values ([N, ...]), summed over the batch."""
    return values.flatten(1).mean(dim=1).sum()


def radial_asymmetry(image: Tensor, folds: int) -> Tensor:
    """Mean squared difference between each image and itself turned by 360/folds degrees (bilinear), inside the
    disc inscribed in the image, one pixel in from its edge so no sample falls outside the picture; summed over
    the batch."""
    batch, _, height, width = image.shape
    angle = 2 * math.pi / folds
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid works in [-1,1] coordinates per axis: scale x and y so the turn is round in pixels
    aspect = width / height
    theta = torch.tensor([[cos, -sin / aspect, 0.0], [sin * aspect, cos, 0.0]], dtype=image.dtype,
                         device=image.device).expand(batch, 2, 3)
    grid = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    turned = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    ys = torch.arange(height, device=image.device, dtype=image.dtype) - (height - 1) / 2
    xs = torch.arange(width, device=image.device, dtype=image.dtype) - (width - 1) / 2
    radius = min(height, width) / 2 - 1
    inside = (ys[:, None].square() + xs[None, :].square() <= radius ** 2).to(image.dtype)
    return ((image - turned).square() * inside).sum() / (inside.sum() * image.shape[1])


def palette_distance(image: Tensor, colours: Tensor) -> Tensor:
    """Mean over pixels of the squared RGB distance to the nearest of ``colours`` ([K,3] in [0,1]): zero when
    every pixel is one of them. Each pixel is pulled toward its own nearest colour only."""
    distance = (image[:, None] - colours.to(image.dtype)[None, :, :, None, None]).square().sum(dim=2)
    return per_image_mean(distance.amin(dim=1))
