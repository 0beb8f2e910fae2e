"""--save-scale: a nearest-neighbour enlargement beside the 1:1 PNG, for looking at the bundled models' tiny images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from artgen.output import read_metadata
from artgen.settings import build_settings


def test_enlargement_is_the_image_in_whole_pixel_blocks_and_carries_the_recipe(artgen, tiny_models, tmp_path):
    result = artgen("generate", "a red circle", *tiny_models.vqgan_flags, "--steps", "1", "--seed", "3",
                    "--save-scale", "3", "-o", "out.png", "--quiet")
    assert result.code == 0, result.err
    small = np.asarray(Image.open(tmp_path / "out.png"))
    large = np.asarray(Image.open(tmp_path / "out.x3.png"))
    assert large.shape == (small.shape[0] * 3, small.shape[1] * 3, 3)
    assert np.array_equal(large, small.repeat(3, axis=0).repeat(3, axis=1))
    recipe = read_metadata(tmp_path / "out.x3.png")
    assert recipe["enlarged_from"] == "out.png" and recipe["scale"] == 3
    assert recipe["settings"] == read_metadata(tmp_path / "out.png")["settings"]


def test_scale_one_writes_only_the_image(artgen, tiny_models, tmp_path):
    result = artgen("generate", "a red circle", *tiny_models.vqgan_flags, "--steps", "1", "-o", "out.png", "--quiet")
    assert result.code == 0, result.err
    assert sorted(path.name for path in tmp_path.glob("*.png")) == ["out.png"]


@pytest.mark.parametrize("value", ["0", "-2", "17"])
def test_scales_outside_one_to_sixteen_are_refused_in_one_line(artgen, value):
    result = artgen("generate", "a red circle", "--save-scale", value)
    assert result.code == 2
    assert result.err.startswith("artgen: error: --save-scale must be a whole factor from 1")
    assert result.err.count("\n") == 1


def test_the_offline_presets_enlarge_their_tiny_images():
    assert build_settings("offline", overrides={"prompts": ["a red circle"]}).save_scale == 8
    assert build_settings("offline-vqgan", overrides={"prompts": ["a red circle"]}).save_scale == 4
