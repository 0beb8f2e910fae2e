"""Regularizers on the rendered image ([N,3,H,W], meant to lie in [0,1]); each returns a scalar.

Design: plain functions of the image, so the objective weighs them (--tv-scale, --range-scale, --sat-scale)
and any generator gets them without doing anything.
"""

from __future__ import annotations

from torch import Tensor


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
