"""The pixels generator: its Fourier parametrization inverts exactly, an init image is the first render, and a run
through the CLI with the tiny CLIP moves the image toward a lower loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from artgen.generators import Canvas
from artgen.generators.pixels import ImageField, PixelsGenerator, PixelsOptions
from artgen.loop import Guide, optimize

CPU = torch.device("cpu")


@pytest.mark.parametrize("space", ["fourier", "rgb"])
@pytest.mark.parametrize("size", [(32, 32), (24, 40), (33, 17)])
def test_an_image_round_trips_through_the_parametrization(space, size):
    height, width = size
    field = ImageField(space, height, width, 1.0, CPU)
    image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    assert torch.allclose(field.image(field.params(image)), image, atol=1e-5)


def test_the_fourier_start_is_smooth_where_a_plain_one_is_noise():
    """1/f scaling: neighbouring pixels of the random start are more alike than in per-pixel noise (measured:
    half the relative step between neighbours)."""
    def roughness(space):
        torch.manual_seed(0)
        field = ImageField(space, 64, 64, 1.0, CPU)
        params = field.random(1, CPU) * (100 if space == "fourier" else 1)
        image = field.image(params)
        return (image[..., 1:] - image[..., :-1]).abs().mean() / image.std()
    assert roughness("fourier") < roughness("rgb") * 0.7


def test_an_init_image_is_the_first_render_to_the_8_bit_value():
    pixels = torch.randint(0, 256, (1, 3, 24, 32), generator=torch.Generator().manual_seed(1)).float() / 255
    generator = PixelsGenerator.create(PixelsOptions(), Canvas(32, 24, 2, 5, CPU), pixels)
    first = generator.snapshot()
    assert first.shape == (2, 3, 24, 32)
    assert torch.equal(first.mul(255).round(), pixels.mul(255).round().expand(2, -1, -1, -1))


def test_the_loop_lowers_a_loss_and_state_dicts_restore():
    torch.manual_seed(0)
    generator = PixelsGenerator.create(PixelsOptions(pixels_lr=0.3), Canvas(16, 16, 1, 30, CPU))
    saved = generator.state_dict()
    start = generator.snapshot()
    losses = [s.loss.item() for s in optimize(generator, lambda image, progress: (image - 0.9).square().mean())]
    assert losses[-1] < losses[0] / 2
    generator.load_state_dict(saved)
    assert torch.equal(generator.snapshot(), start)
    generator.step(Guide(lambda image, progress: image.mean(), 0.0))
    assert not torch.equal(generator.snapshot(), start)


def test_a_cli_run_draws_at_any_size_and_the_seed_decides(artgen, tiny_models):
    def run(name, seed):
        result = artgen("generate", "a red circle", "--generator", "pixels", *tiny_models.clip_flags, "--width", "30",
                        "--height", "20", "--steps", "3", "--cutn", "4", "--seed", seed, "-o", name, "--quiet")
        assert result.code == 0, result.err
        with Image.open(name) as image:
            return np.asarray(image.convert("RGB"))
    first, again, other = run("a.png", "5"), run("b.png", "5"), run("c.png", "6")
    assert first.shape == (20, 30, 3)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_its_options_show_under_its_own_heading_and_foreign_ones_are_refused(artgen, tiny_models):
    shown = artgen("generate", "--generator", "pixels", "--help").out
    assert "Pixels options (--generator pixels)" in shown and "--pixels-space" in shown and "--lr " not in shown
    refused = artgen("generate", "x", "--generator", "pixels", "--lr", "0.1", *tiny_models.clip_flags)
    assert refused.code == 2 and "--lr is an option of the vqgan generator" in refused.err
