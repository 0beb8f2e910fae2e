"""How a rendered image is brought into [0,1] before CLIP scores it, and what gradient flows back through that.

Each generator names its rule (``scoring_clamp``) because each follows its own reference: the VQGAN+CLIP
notebook clamps its decoded image with a gradient that never pushes a saturated pixel further out, while the
CLIP-guided diffusion notebooks let the whole gradient reach x_t. The forward value is the same clamp in both.
"""

from __future__ import annotations

import torch
from torch import Tensor


def clamp_straight_through(image: Tensor) -> Tensor:
    """Clamp to [0,1] for scoring, letting the gradient through unchanged."""
    return image + (image.clamp(0, 1) - image).detach()


class _ClampTowardRange(torch.autograd.Function):
    """Forward: clamp to [0,1]. Backward: a pixel's gradient passes where a descent step along it (x - lr * grad)
    keeps the pixel in range or moves it back toward it, and is zeroed where it would push it further out."""

    @staticmethod
    def forward(ctx, image: Tensor) -> Tensor:
        ctx.save_for_backward(image)
        return image.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (image,) = ctx.saved_tensors
        outside = image - image.clamp(0, 1)  # > 0 above the range, < 0 below it, 0 inside
        return grad * (grad * outside >= 0)


def clamp_toward_range(image: Tensor) -> Tensor:
    """Clamp to [0,1] as the VQGAN+CLIP notebook's ClampWithGrad does: the gradient of a pixel outside the
    range passes only where following it brings the pixel back, so saturated pixels are not pushed further
    out (inside the range every gradient passes unchanged)."""
    return _ClampTowardRange.apply(image)
