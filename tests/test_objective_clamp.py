"""The range clamp VQGAN images are scored through: the VQGAN+CLIP notebook's ClampWithGrad behaviour."""

from __future__ import annotations

import torch

from artgen.clamps import clamp_toward_range


def test_clamp_passes_a_gradient_only_where_descent_brings_the_pixel_back_into_range():
    #                      inside      above the range   below the range
    pixels = torch.tensor([0.5, 0.5, 1.5, 1.5, 1.0, -0.5, -0.5, 0.0], requires_grad=True)
    upstream = torch.tensor([2.0, -2.0, 3.0, -3.0, -1.0, 4.0, -4.0, 5.0])
    clamped = clamp_toward_range(pixels)
    clamped.backward(upstream)
    assert clamped.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # x <- x - lr * grad: above the range a positive gradient lowers the pixel (kept), a negative one raises it
    # further (zeroed); below the range the other way round; inside and on the edges every gradient passes.
    assert pixels.grad.tolist() == [2.0, -2.0, 3.0, 0.0, -1.0, 0.0, -4.0, 5.0]


def test_clamp_keeps_the_batch_shape_and_dtype():
    image = (torch.rand(2, 3, 4, 4, dtype=torch.float64) * 3 - 1).requires_grad_(True)
    clamped = clamp_toward_range(image)
    clamped.sum().backward()  # all gradients +1: kept inside and above the range, zeroed below it
    assert clamped.dtype == torch.float64 and clamped.shape == image.shape
    assert torch.equal(image.grad, (image >= 0).double())


def test_each_generator_scores_through_its_references_clamp():
    """VQGAN follows the VQGAN+CLIP notebook (no push further out); diffusion lets the whole gradient reach x_t,
    as the CLIP-guided diffusion notebooks do."""
    from artgen.generators.diffusion import DiffusionGenerator
    from artgen.generators.vqgan import VQGANGenerator

    grads = {}
    for cls in (VQGANGenerator, DiffusionGenerator):
        pixel = torch.tensor([1.5], requires_grad=True)
        cls.scoring_clamp(pixel).backward(torch.tensor([-1.0]))  # descent would raise it further out
        grads[cls.__name__] = pixel.grad.item()
    assert grads == {"VQGANGenerator": 0.0, "DiffusionGenerator": -1.0}
