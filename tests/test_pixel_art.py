"""The pixel-art generator: palette parsing, palette-only output, cell structure, init mapping, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from artgen.errors import UsageError
from artgen.generators import Canvas, ModelCache
from artgen.generators.pixel_art import PixelArtGenerator, PixelArtOptions
from artgen.palettes import NAMED_PALETTES, parse_palette
from artgen.loop import Guide
from artgen.settings import build_settings

PICO8 = {tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in NAMED_PALETTES["pico-8"]}


def test_hex_palettes_parse_with_and_without_hash_and_short_form():
    assert parse_palette("#1a1c2c,#5d275d") == [(0x1a, 0x1c, 0x2c), (0x5d, 0x27, 0x5d)]
    assert parse_palette(" 1A1C2C , #fff ") == [(0x1a, 0x1c, 0x2c), (255, 255, 255)]


def test_named_palettes():
    assert len(parse_palette("pico-8")) == 16
    assert set(parse_palette("PICO-8")) == PICO8
    assert parse_palette("gameboy") == [(0x0f, 0x38, 0x0f), (0x30, 0x62, 0x30), (0x8b, 0xac, 0x0f), (0x9b, 0xbc, 0x0f)]
    assert len(parse_palette("cga")) == 16


@pytest.mark.parametrize("text, words", [
    ("#1a1c2c,#zz0000", ["'#zz0000'", "#rrggbb"]),
    ("#1a1c2c,,#000000", ["''", "#rrggbb"]),
    ("pico8", ["unknown --palette", "pico-8", "gameboy", "cga"]),
    ("#123456", ["at least 2 colours"]),
])
def test_bad_palettes_name_the_fix(text, words):
    with pytest.raises(UsageError) as error:
        parse_palette(text)
    assert all(word in str(error.value) for word in words), str(error.value)


def make(options: PixelArtOptions, width=32, height=32, init=None, steps=5, palette=None) -> PixelArtGenerator:
    colours = tuple(parse_palette(palette)) if palette else None
    canvas = Canvas(width, height, 1, steps, torch.device("cpu"), palette=colours)
    return PixelArtGenerator.create(options, canvas, init, ModelCache())


def test_cells_are_blocks_of_one_palette_colour_at_any_point_of_the_run():
    torch.manual_seed(0)
    generator = make(PixelArtOptions(pixel_size=4), palette="gameboy")
    palette = torch.tensor(parse_palette("gameboy"), dtype=torch.float32) / 255
    for image in (generator.snapshot(), generator.render(0.0), generator.render(0.5, hard=True)):
        blocks = image[0].reshape(3, 8, 4, 8, 4)
        assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))
    hard = generator.snapshot()[0].reshape(3, -1).T
    assert all(any(torch.equal(pixel, colour) for colour in palette) for pixel in hard)


def test_init_image_maps_each_cell_to_the_nearest_palette_colour():
    palette = torch.tensor(parse_palette("pico-8"), dtype=torch.float32) / 255
    torch.manual_seed(1)
    cells = torch.rand(1, 3, 4, 4)
    init = cells.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    image = make(PixelArtOptions(pixel_size=8), init=init, palette="pico-8").snapshot()
    nearest = ((cells[0].reshape(3, -1).T[:, None] - palette[None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(image[0, :, ::8, ::8].reshape(3, -1).T, palette[nearest])


def test_a_learned_palette_starts_from_the_init_image_colours():
    init = torch.zeros(1, 3, 16, 16)
    init[:, 0, :8] = 1.0  # red top half, black bottom half
    generator = make(PixelArtOptions(pixel_size=4, palette_size=2), width=16, height=16, init=init)
    image = generator.snapshot()
    assert torch.allclose(image, init, atol=1e-6)
    assert len(generator.palette_colours()) == 2


def test_temperature_falls_from_start_to_end():
    generator = make(PixelArtOptions(temperature=2.0, temperature_end=0.02))
    assert generator.temperature(0.0) == pytest.approx(2.0)
    assert generator.temperature(0.5) == pytest.approx(0.2)
    assert generator.temperature(1.0) == pytest.approx(0.02)


@pytest.mark.parametrize("hard_fraction", [0.0, 1.0])
def test_steps_pull_cells_toward_what_the_loss_wants_soft_and_straight_through(hard_fraction):
    torch.manual_seed(4)
    generator = make(PixelArtOptions(pixel_size=4, pixel_lr=0.5, pixel_hard_fraction=hard_fraction), steps=30,
                     palette="pico-8")
    red = torch.tensor([1.0, 0.0, 0.302])[None, :, None, None]  # PICO-8's red #ff004d
    distance = lambda image: (image - red).square().mean()  # noqa: E731
    before = distance(generator.snapshot())
    for step in range(generator.num_steps):
        generator.step(Guide(lambda image, progress: distance(image), step / generator.num_steps))
    assert distance(generator.snapshot()) < before / 4


def test_state_dict_round_trips():
    torch.manual_seed(2)
    first = make(PixelArtOptions(pixel_size=4))
    torch.manual_seed(3)
    second = make(PixelArtOptions(pixel_size=4))
    second.load_state_dict(first.state_dict())
    assert torch.equal(first.snapshot(), second.snapshot())


def run_cli(artgen, tiny_models, *extra: str, out: str = "p.png"):
    return artgen("generate", "a red circle", "--generator", "pixel-art", *tiny_models.clip_flags, "--width", "32",
                  "--height", "32", "--pixel-size", "4", "--steps", "5", "--cutn", "4", "--seed", "7", *extra,
                  "-o", out)


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_cli_run_saves_only_palette_colours_in_cell_blocks(artgen, tiny_models, tmp_path):
    result = run_cli(artgen, tiny_models, "--palette", "pico-8")
    assert result.code == 0, result.err
    image = pixels(tmp_path / "p.png")
    assert image.shape == (32, 32, 3)
    assert {tuple(int(v) for v in pixel) for pixel in image.reshape(-1, 3)} <= PICO8
    blocks = image.reshape(8, 4, 8, 4, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_cli_learned_palette_uses_at_most_palette_size_colours(artgen, tiny_models, tmp_path):
    result = run_cli(artgen, tiny_models, "--palette-size", "3")
    assert result.code == 0, result.err
    assert len(np.unique(pixels(tmp_path / "p.png").reshape(-1, 3), axis=0)) <= 3


def test_same_seed_same_image(artgen, tiny_models, tmp_path):
    assert run_cli(artgen, tiny_models, out="a.png").code == 0
    assert run_cli(artgen, tiny_models, out="b.png").code == 0
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert run_cli(artgen, tiny_models, "--seed", "8", out="c.png").code == 0  # control: the seed matters
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "c.png"))


@pytest.mark.parametrize("flags, words", [
    (["--width", "30"], "--width 30 is not a multiple of --pixel-size 4: use 28 or 32"),
    (["--height", "2"], "--height 2 is not a multiple of --pixel-size 4: use 4"),
    (["--palette", "#12345g,#000000"], "--palette entry '#12345g' is not a colour"),
    (["--palette", "nes"], "unknown --palette 'nes': choose one of pico-8, gameboy, cga"),
    (["--palette", "#000000"], "--palette needs at least 2 colours"),
    (["--pixel-size", "0"], "--pixel-size must be a positive integer"),
    (["--palette-size", "1"], "--palette-size needs at least 2 colours"),
])
def test_refusals_exit_2_with_one_line(artgen, tiny_models, flags, words):
    result = run_cli(artgen, tiny_models, *flags)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.err


def test_help_shows_the_pixel_art_options(artgen):
    result = artgen("generate", "--generator", "pixel-art", "--help")
    assert result.code == 0
    assert "Pixel art" in result.out and "--pixel-size" in result.out and "--palette" in result.out


def test_the_preset_builds():
    settings = build_settings("pixel-art", overrides={"prompts": ["x"]})
    assert settings.run.generator == "pixel-art"
    assert settings.run.palette == "pico-8" and settings.options.pixel_size == 8
    assert (settings.run.width, settings.run.height) == (256, 256)
