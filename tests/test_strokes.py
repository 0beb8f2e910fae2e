"""The strokes generator: the rasterizer's gradient is right, the SVG draws the same picture, a tiled picture wraps
around, an init image colours the strokes, and CLI runs with --svg write and keep their files as told."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from conftest import require_reference
from PIL import Image

from artgen.errors import UsageError
from artgen.generators import Canvas
from artgen.generators.strokes import StrokesGenerator, StrokesOptions, parse_colour, rasterize
from artgen.loop import optimize
from artgen.settings import build_settings

CPU = torch.device("cpu")
SVG_TOLERANCE = 0.03  # mean absolute difference (0-1) between the PNG and resvg's rendering of its SVG


def make(options: StrokesOptions, width: int = 32, height: int = 24, batch: int = 1, tile: bool = False,
         init: torch.Tensor | None = None, seed: int = 0) -> StrokesGenerator:
    torch.manual_seed(seed)
    return StrokesGenerator.create(options, Canvas(width, height, batch, 5, CPU, tile=tile), init)


def tiny_strokes(seed: int = 0):
    """Two one-Bézier strokes on a 7x5 canvas, in float64, for gradcheck."""
    generator = torch.Generator().manual_seed(seed)
    points = (torch.rand(1, 2, 4, 2, generator=generator, dtype=torch.float64) * torch.tensor([7.0, 5.0]))
    widths = 1.5 + 2 * torch.rand(1, 2, generator=generator, dtype=torch.float64)
    colours = 0.2 + 0.6 * torch.rand(1, 2, 4, generator=generator, dtype=torch.float64)
    return points.requires_grad_(), widths.requires_grad_(), colours.requires_grad_()


@pytest.mark.parametrize("tile", [False, True])
def test_the_rasterizer_gradient_matches_finite_differences(tile):
    background = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)

    def draw(points, widths, colours):
        return rasterize(points, widths, colours, background, 5, 7, softness=1.0, tile=tile)
    assert torch.autograd.gradcheck(draw, tiny_strokes(), eps=1e-6, atol=1e-5)

    def widths_cut_off(points, widths, colours):  # control: a missing gradient is caught
        return rasterize(points, widths.detach(), colours, background, 5, 7, softness=1.0, tile=tile)
    assert not torch.autograd.gradcheck(widths_cut_off, tiny_strokes(), eps=1e-6, atol=1e-5, raise_exception=False)


def resvg_pixels(svg: str) -> np.ndarray:
    resvg = require_reference("resvg_py")
    with Image.open(io.BytesIO(bytes(resvg.svg_to_bytes(svg_string=svg)))) as picture:
        return np.asarray(picture.convert("RGB"), dtype=np.float64) / 255


def rendered(generator: StrokesGenerator, index: int = 0) -> np.ndarray:
    return generator.snapshot()[index].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("tile", [False, True])
def test_the_svg_rasterizes_to_the_png_within_a_small_tolerance(tile):
    """Measured mean differences: 0.020 at the default softness (0.5 px), 0.007 at 0.25 px; all of it along the
    edges, where a sigmoid meets resvg's antialiasing. Control: another seed's SVG is far off."""
    options = StrokesOptions(strokes=24, stroke_segments=2, background="#203040", svg=True)
    generator = make(options, 64, 48, tile=tile)
    svg = generator.svg(0)
    assert len(re.findall(r"<path ", svg)) == 24
    assert np.abs(rendered(generator) - resvg_pixels(svg)).mean() < SVG_TOLERANCE
    sharp = make(StrokesOptions(strokes=24, stroke_segments=2, stroke_softness=0.25, svg=True), 64, 48, tile=tile)
    assert np.abs(rendered(sharp) - resvg_pixels(sharp.svg(0))).mean() < SVG_TOLERANCE / 3
    other = make(options, 64, 48, tile=tile, seed=1)
    assert np.abs(rendered(generator) - resvg_pixels(other.svg(0))).mean() > 3 * SVG_TOLERANCE


def test_no_svg_unless_asked():
    assert make(StrokesOptions(strokes=3)).svg(0) is None


def border_stroke(shift_x: float = 0.0, shift_y: float = 0.0) -> tuple[torch.Tensor, ...]:
    """One thick stroke across the right border of a 32x24 canvas, and one inside it."""
    points = torch.tensor([[[[26.0, 6.0], [30.0, 8.0], [34.0, 10.0], [38.0, 12.0]],
                            [[8.0, 16.0], [10.0, 22.0], [14.0, 14.0], [18.0, 20.0]]]])
    points = points + torch.tensor([shift_x, shift_y])
    return points, torch.tensor([[6.0, 4.0]]), torch.tensor([[[0.9, 0.1, 0.1, 1.0], [0.1, 0.2, 0.9, 0.8]]])


def test_a_tiled_picture_wraps_around_its_borders():
    """Moving every stroke by whole pixels rolls the tiled picture by as many, so what leaves one border comes
    back at the other. Control: without tiling the stroke across the border is cut off."""
    background = torch.ones(3)
    for tile, wraps in ((True, True), (False, False)):
        first = rasterize(*border_stroke(), background, 24, 32, 0.5, tile=tile)
        moved = rasterize(*border_stroke(10, 5), background, 24, 32, 0.5, tile=tile)
        rolled = torch.roll(first, shifts=(5, 10), dims=(2, 3))
        assert torch.allclose(moved, rolled, atol=1e-5) == wraps
    tiled = rasterize(*border_stroke(), background, 24, 32, 0.5, tile=True)[0]
    assert tiled[:, 9, 1].sub(torch.tensor([0.9, 0.1, 0.1])).abs().max() < 0.01  # it comes in at the left


def test_steps_keep_strokes_in_range_and_tiled_ones_on_the_canvas():
    for tile in (False, True):
        generator = make(StrokesOptions(strokes=6, strokes_lr=40.0, stroke_width_max=4.0), tile=tile)
        list(optimize(generator, lambda image, progress: -image.std() + image[..., :3].mean()))
        assert generator.widths.min() >= 1 and generator.widths.max() <= 4
        assert generator.colours.min() >= 0 and generator.colours.max() <= 1
        size = torch.tensor([32.0, 24.0])
        if tile:  # each stroke moved by whole canvas sizes to start on the canvas
            first = generator.points[..., 0, :]
            assert (first >= 0).all() and (first < size).all()
        else:
            assert (generator.points >= 0).all() and (generator.points <= size).all()


def test_a_diverged_stroke_shows_in_the_picture_instead_of_crashing():
    """NaN control points (a run that blew up) make a NaN picture, so the driver's divergence check stops it."""
    generator = make(StrokesOptions(strokes=4))
    assert not generator.render().isnan().any()
    with torch.no_grad():
        generator.points[0, 1, 2, 0] = float("nan")
    assert generator.render().isnan().any()


def test_the_loop_lowers_a_loss_and_state_dicts_restore():
    generator = make(StrokesOptions(strokes=8, strokes_lr=2.0))
    saved, start = generator.state_dict(), generator.snapshot()
    target = torch.zeros(1, 3, 24, 32)
    losses = [s.loss.item() for s in optimize(generator, lambda image, progress: (image - target).square().mean())]
    assert losses[-1] < losses[0] * 0.9
    generator.load_state_dict(saved)
    assert torch.equal(generator.snapshot(), start)


def test_an_init_image_colours_each_stroke_by_what_lies_under_it():
    """A uniform init gives every stroke its colour; a left-red, right-blue init gives strokes on the left more red
    than those on the right (control: random colours, as without an init, do not sort so)."""
    uniform = torch.tensor([0.2, 0.6, 0.4])[None, :, None, None].expand(1, 3, 24, 32)
    colours = make(StrokesOptions(strokes=10, stroke_width_max=4.0), init=uniform, batch=2).colours
    assert colours.shape == (2, 10, 4) and torch.allclose(colours[..., :3], torch.tensor([0.2, 0.6, 0.4]), atol=1e-5)
    halves = torch.zeros(1, 3, 24, 32)
    halves[:, 0, :, :16], halves[:, 2, :, 16:] = 1, 1
    for init in (halves, None):
        generator = make(StrokesOptions(strokes=30, stroke_width_max=4.0), init=init)
        centre = generator.points[0, :, :, 0].mean(dim=1)
        redness = generator.colours[0, :, 0] - generator.colours[0, :, 2]
        left, right = redness[centre < 10].mean(), redness[centre > 22].mean()
        assert (left - right > 1) == (init is not None)


def test_an_init_image_is_the_ground_the_strokes_are_laid_over_in_the_png_and_the_svg():
    """Where no stroke lies the picture is the init (control: without an init it is the background colour); the
    SVG embeds the init under its paths and still rasterizes to the PNG within the tolerance."""
    torch.manual_seed(1)
    init = torch.rand(1, 3, 24, 32)
    options = StrokesOptions(strokes=3, stroke_width_max=2.0, svg=True)
    for ground in (init, None):
        generator = make(options, init=ground)
        picture = generator.snapshot()[0]
        expected = init[0] if ground is not None else torch.ones(3, 24, 32)
        untouched = (picture - expected).abs().amax(dim=0) < 1e-4
        assert untouched.float().mean() > 0.5
        assert ("<image " in generator.svg(0)) == (ground is not None)
    assert np.abs(rendered(generator) - resvg_pixels(generator.svg(0))).mean() < SVG_TOLERANCE
    styled = make(options, init=init)
    assert np.abs(rendered(styled) - resvg_pixels(styled.svg(0))).mean() < SVG_TOLERANCE


def test_the_same_seed_draws_the_same_strokes():
    assert torch.equal(make(StrokesOptions(strokes=5)).snapshot(), make(StrokesOptions(strokes=5)).snapshot())
    assert not torch.equal(make(StrokesOptions(strokes=5)).snapshot(), make(StrokesOptions(strokes=5), seed=1).snapshot())


def test_colours_parse_in_long_and_short_hex():
    assert parse_colour("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_colour("fff") == (1.0, 1.0, 1.0)
    with pytest.raises(UsageError):
        parse_colour("white")


def run_cli(artgen, *extra: str, out: str = "s.png"):
    return artgen("generate", "a red circle", "--generator", "strokes", "--clip", "shapes-clip", "--width", "32",
                  "--height", "24", "--strokes", "6", "--steps", "2", "--cutn", "2", "--seed", "7", *extra,
                  "-o", out, "--quiet")


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_cli_runs_write_the_svg_when_asked_and_the_seed_decides(artgen, tmp_path):
    assert run_cli(artgen, "--svg", out="a.png").code == 0
    svg = (tmp_path / "a.svg").read_text()
    assert 'width="32" height="24"' in svg and len(re.findall(r"<path ", svg)) == 6
    assert np.abs(pixels(tmp_path / "a.png") / 255 - resvg_pixels(svg)).mean() < SVG_TOLERANCE
    assert run_cli(artgen, out="b.png").code == 0
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert not (tmp_path / "b.svg").exists()  # control: no SVG without --svg
    (tmp_path / "c.svg").write_text("mine")
    result = run_cli(artgen, "--svg", "--seed", "8", out="c.png")
    assert result.code == 0 and "c.svg already exists" in result.err
    assert (tmp_path / "c.svg").read_text() == "mine"
    assert not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "c.png"))


def test_cli_batches_and_candidates_write_an_svg_per_picture(artgen, tmp_path):
    assert run_cli(artgen, "--svg", "--batch", "2", out="b.png").code == 0
    assert (tmp_path / "b-1.svg").is_file() and (tmp_path / "b-2.svg").is_file()
    assert run_cli(artgen, "--svg", "--candidates", "2", "--keep", "1", out="k.png").code == 0
    assert (tmp_path / "k.svg").is_file() and len(list(tmp_path.glob("k*.svg"))) == 1


@pytest.mark.parametrize("flags, words", [
    (["--strokes", "0"], "--strokes must be a positive integer, got 0"),
    (["--stroke-width-min", "6", "--stroke-width-max", "2"], "--stroke-width-min 6 is above --stroke-width-max 2"),
    (["--stroke-width-min", "0"], "--stroke-width-min must be a positive number"),
    (["--stroke-width-max", "-3"], "--stroke-width-max must be a positive number"),
    (["--background", "red"], "--background 'red' is not a colour"),
    (["--background", "#12345"], "--background '#12345' is not a colour"),
    (["--stroke-softness", "0"], "--stroke-softness must be a positive number"),
])
def test_refusals_exit_2_with_one_line(artgen, flags, words):
    result = run_cli(artgen, *flags)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.err


def test_help_shows_the_strokes_options(artgen):
    result = artgen("generate", "--generator", "strokes", "--help")
    assert result.code == 0
    assert "Strokes options" in result.out and "--stroke-width-max" in result.out and "--svg" in result.out


def test_the_preset_builds():
    settings = build_settings("strokes", overrides={"prompts": ["x"]})
    assert settings.run.generator == "strokes" and settings.run.clip == ["ViT-B-32:openai"]
    assert settings.options.strokes == 128 and settings.options.background == "#ffffff"


def test_animation_frames_get_their_svgs(artgen, tmp_path):
    result = artgen("animate", "a red circle", "--generator", "strokes", "--clip", "shapes-clip", "--width", "32",
                    "--height", "24", "--strokes", "4", "--steps", "1", "--cutn", "2", "--seed", "7", "--frames", "2",
                    "--svg", "--frames-dir", "anim", "--quiet")
    assert result.code == 0, result.err
    assert sorted(path.name for path in (tmp_path / "anim").glob("*.svg")) == ["frame_00001.svg", "frame_00002.svg"]
