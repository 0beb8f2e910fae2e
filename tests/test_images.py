"""Reading the images a user gives: one decode of the init image for every generator, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from artgen.errors import UserError
from artgen.images import cover_resize, fit_image, load_image, pil_to_tensor, read_init_image


def noise_image(path, width, height, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("source, target", [
    ((40, 30), (32, 32)),    # wider than the target: cropped at the sides
    ((20, 50), (32, 16)),    # taller: cropped at top and bottom, and enlarged
    ((32, 32), (32, 32)),    # the size itself
    ((300, 200), (32, 24)),  # several times larger: decoded reduced first
])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_read_init_image_is_the_generators_decode(tmp_path, source, target, suffix):
    """The decode both generators ran on an init image before the run handed them tensors, bit for bit."""
    path = noise_image(tmp_path / f"init{suffix}", *source)
    width, height = target
    expected = pil_to_tensor(cover_resize(load_image(path, "init image", (width, height)), width, height))
    image = read_init_image(path, width, height)
    assert image.shape == (1, 3, height, width) and image.dtype == torch.float32
    assert torch.equal(image, expected)
    assert 0 <= image.min() and image.max() <= 1


def test_read_init_image_keeps_the_centre_of_a_wider_image(tmp_path):
    """A 2:1 picture made square keeps its middle half: blue edges are cropped away, the red centre stays."""
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :, 2] = 255
    array[:, 16:48] = (255, 0, 0)
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = read_init_image(tmp_path / "wide.png", 16, 16)
    assert torch.allclose(image[0, :, 4:12, 4:12].mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.02)


def test_missing_and_unreadable_images(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image(tmp_path / "none.png", "init image")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="init image .*junk.png cannot be read as an image"):
        read_init_image(tmp_path / "junk.png", 8, 8)


def test_fit_image_resizes_only_when_the_size_differs():
    image = torch.rand(2, 3, 8, 12)
    assert fit_image(image, 12, 8) is image
    assert fit_image(image, 6, 4).shape == (2, 3, 4, 6)
