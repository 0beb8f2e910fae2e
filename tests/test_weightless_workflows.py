"""The generators that need no weights of their own go through every workflow the others do: recipes and
--from, --save-every, candidates, init-image stylization, animation frames and an exact --resume."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import artgen
from artgen.errors import RunInterrupted
from artgen.output import read_metadata

WEIGHTLESS = ["pixels", "pixel-art", "strokes"]
OWN_FLAGS = {"pixels": [], "pixel-art": ["--pixel-size", "4"], "strokes": ["--strokes", "8"]}


def settings(tiny_models, generator: str, **overrides) -> dict:
    values = dict(generator=generator, prompts=["a red circle"], clip=["artgen-tiny-clip"],
                  clip_checkpoint=[str(tiny_models.clip_checkpoint)], clip_config=[str(tiny_models.clip_config)],
                  width=32, height=32, cutn=4, steps=4, seed=3)
    values |= {"pixel-art": {"pixel_size": 4}, "strokes": {"strokes": 8}}.get(generator, {})
    return values | overrides


def rgb(path) -> np.ndarray:
    return iio.imread(path)[..., :3]


@pytest.mark.parametrize("generator", WEIGHTLESS)
def test_the_recipe_reruns_to_the_same_pixels_and_save_every_writes_steps(artgen, tiny_models, generator):
    flags = ["--generator", generator, *OWN_FLAGS[generator], *tiny_models.clip_flags, "--width", "32",
             "--height", "32", "--cutn", "4", "--steps", "4", "--seed", "5"]
    first = artgen("generate", "a blue square", *flags, "--save-every", "2", "-o", "run/first.png", "--quiet")
    assert first.code == 0, first.err
    assert sorted(p.name for p in Path("run").glob("*.png")) == ["first.png", "first.step00002.png"]
    assert read_metadata("run/first.png")["settings"]["generator"] == generator
    again = artgen("generate", "--from", "run/first.png", "-o", "again.png", "--quiet")
    assert again.code == 0, again.err
    assert np.array_equal(rgb("run/first.png"), rgb("again.png"))
    assert not np.array_equal(rgb("run/first.png"), rgb("run/first.step00002.png"))


@pytest.mark.parametrize("generator", WEIGHTLESS)
def test_candidates_keep_the_best_and_sheet_all(tmp_path, tiny_models, generator):
    result = artgen.generate(progress=False, **settings(tiny_models, generator, candidates=2,
                                                        output=str(tmp_path / "c.png")))
    assert result.paths == [tmp_path / "c.png"] and result.contact_sheet.exists()
    assert len(read_metadata(result.contact_sheet)["scores"]) == 2
    assert result.scores[0] == max(read_metadata(result.contact_sheet)["scores"])


@pytest.mark.parametrize("generator", WEIGHTLESS)
def test_an_init_image_is_stylized_not_replaced(tmp_path, tiny_models, generator):
    """Two small steps from a two-colour init stay near it (strokes: painted over it, each in the colour under
    it); the same run from the generator's own start does not."""
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[:, :16] = (255, 0, 77)    # PICO-8's red and blue, so pixel-art's palette holds them exactly
    picture[:, 16:] = (41, 173, 255)
    Image.fromarray(picture).save(tmp_path / "init.png")
    small_steps = {"pixels": {"pixels_lr": 0.001}, "pixel-art": {"pixel_lr": 0.001, "palette": "pico-8"},
                   "strokes": {"strokes_lr": 0.001}}[generator]
    common = settings(tiny_models, generator, steps=2, **small_steps)
    styled = artgen.generate(progress=False, init_image=str(tmp_path / "init.png"),
                             **common | {"output": str(tmp_path / "styled.png")})
    plain = artgen.generate(progress=False, **common | {"output": str(tmp_path / "plain.png")})
    expected = picture / 255
    assert np.abs(rgb(styled.path) / 255 - expected).mean() < (0.1 if generator == "strokes" else 0.02)
    assert np.abs(rgb(plain.path) / 255 - expected).mean() > 0.2


@pytest.mark.parametrize("generator", WEIGHTLESS)
def test_an_animation_resumed_after_a_kill_equals_the_whole_one(tmp_path, tiny_models, ctrl_c_at_drive, generator):
    def animation(folder: Path) -> dict:
        return settings(tiny_models, generator, frames=3, steps=2, zoom="1.05", angle="3",
                        frames_dir=str(folder / "frames"))

    whole = artgen.animate(progress=False, **animation(tmp_path / "a"))
    ctrl_c_at_drive(3)
    with pytest.raises(RunInterrupted, match="frame 3 of 3"):
        artgen.animate(progress=False, **animation(tmp_path / "b"))
    ctrl_c_at_drive(None)
    resumed = artgen.animate(progress=False, resume=True, **animation(tmp_path / "b"))
    assert len(resumed.frames) == 3
    for first, second in zip(whole.frames, resumed.frames, strict=True):
        assert np.array_equal(rgb(first), rgb(second)), second.name
    assert not np.array_equal(rgb(whole.frames[0]), rgb(whole.frames[-1]))
