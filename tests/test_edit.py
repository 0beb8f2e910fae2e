"""Edits: masks (a PNG, the image's alpha, a box), feathering, outpainting, and the guarantee that every pixel
outside the mask is the input's own, for VQGAN and diffusion, through the CLI and the Python API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artgen
from artgen.errors import UserError
from artgen.masks import context_region, feather, latent_cells, parse_box, parse_extension, reflect
from artgen.output import read_metadata

GENERATORS = ["vqgan", "diffusion"]


def picture(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    """A red square on a grey ground."""
    pixels = np.full((size[1], size[0], 3), 128, np.uint8)
    pixels[10:20, 3:13] = (220, 30, 30)
    Image.fromarray(pixels).save(path)
    return path


def right_half(path: Path, size: tuple[int, int] = (32, 32)) -> Path:
    marked = np.zeros((size[1], size[0]), np.uint8)
    marked[:, size[0] // 2:] = 255
    Image.fromarray(marked, "L").save(path)
    return path


def rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_box_and_extension_syntax():
    assert parse_box("1, 2,3,4") == (1, 2, 3, 4)
    assert parse_extension("left=8,top=4") == dict(left=8, top=4, right=0, bottom=0)
    for bad in ("1,2,3", "1,2,0,4", "-1,0,2,2", "a,b,c,d"):
        with pytest.raises(UserError, match="--mask-box"):
            parse_box(bad)
    for bad in ("left", "up=3", "left=-2", "left=0"):
        with pytest.raises(UserError, match="--extend"):
            parse_extension(bad)


def test_feathering_stays_inside_the_mask_and_reaches_one():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    soft = feather(mask, 4)
    assert soft[mask == 0].abs().max() == 0  # nothing outside moves
    assert soft[..., 14:18, 14:18].min() == 1  # the middle is all repainted
    assert 0 < soft[..., 16, 9] < soft[..., 16, 11] < 1  # a ramp from the edge inward
    edge = torch.zeros(1, 1, 32, 32)
    edge[..., :, 16:] = 1
    assert feather(edge, 4)[..., :, 28:].min() == 1  # the picture's own border is not an edge
    assert torch.equal(feather(mask, 0), mask)


def test_context_region_cells_and_reflection():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 20:30, 40:60] = 1
    top, bottom, left, right = context_region(mask)
    assert (top, bottom, left, right) == (12, 38, 32, 64)  # 8 pixels of context, cut at the border
    cells = latent_cells(mask, 8)
    assert cells.shape[-2:] == (8, 8) and cells[0, 0, 2, 5] == 1 and cells[0, 0, 1, 4] == 1  # dilated by one
    assert cells[0, 0, 6, 2] == 0
    image = torch.arange(12.0).view(1, 1, 3, 4)
    grown = reflect(image, (6, 0, 0, 0))
    assert grown.shape[-1] == 10 and torch.equal(grown[..., 6:], image)


@pytest.mark.parametrize("generator", GENERATORS)
def test_pixels_outside_the_mask_are_the_inputs(tmp_path, tiny_models, generator):
    source, mask = picture(tmp_path / "in.png"), right_half(tmp_path / "mask.png")
    result = artgen.edit(source, progress=False, **tiny_models.settings(
        generator, mask=str(mask), mask_blur=3, output=str(tmp_path / "out.png")))
    out, before = rgb(result.path), rgb(source)
    assert out.shape == before.shape
    assert np.array_equal(out[:, :16], before[:, :16])
    assert not np.array_equal(out[:, 16:], before[:, 16:])
    recorded = read_metadata(result.path)["settings"]
    assert recorded["mask"] == str(mask) and len(recorded["mask_sha256"]) == 64


def test_vqgan_moves_only_the_codes_under_the_mask(tmp_path, tiny_models):
    from artgen.session import Session
    from artgen.settings import build_settings

    source = picture(tmp_path / "in.png")
    settings = build_settings(None, None, tiny_models.settings(init_image=str(source), mask_box="16,0,16,32",
                                                               seed=2))
    session = Session(settings, progress=False)
    generator = session.generator(init=session.init_image())
    start = generator.generator.z.detach().clone()
    session.drive(generator, session.objective())
    moved = (generator.generator.z.detach() - start).abs().sum(dim=1)[0] > 0
    cells = latent_cells(session.edit.soft.cpu(), 32 // start.shape[-1])[0, 0] > 0
    assert moved.any() and not moved[~cells].any()


def test_diffusion_resampling_takes_each_step_again(tmp_path, tiny_models, monkeypatch):
    from artgen.models import sampling

    calls = []
    real = sampling.ddpm_step
    monkeypatch.setattr(sampling, "ddpm_step", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    source, mask = picture(tmp_path / "in.png"), right_half(tmp_path / "mask.png")
    result = artgen.edit(source, progress=False, **tiny_models.settings(
        "diffusion", mask=str(mask), resample=3, output=str(tmp_path / "out.png")))
    assert len(calls) == 3 * 4
    assert np.array_equal(rgb(result.path)[:, :16], rgb(source)[:, :16])


def test_outpainting_grows_the_canvas_around_the_picture(tmp_path, tiny_models):
    source = picture(tmp_path / "in.png", (32, 24))
    result = artgen.edit(source, progress=False, **tiny_models.settings(
        "diffusion", extend="left=8,bottom=8", width=None, height=None, output=str(tmp_path / "out.png")))
    out = rgb(result.path)
    assert out.shape == (32, 40, 3)
    assert np.array_equal(out[:24, 8:], rgb(source))
    noise = artgen.edit(source, progress=False, **tiny_models.settings(
        "vqgan", extend="top=8", extend_fill="noise", width=None, height=None, output=str(tmp_path / "n.png")))
    assert rgb(noise.path).shape == (32, 32, 3) and np.array_equal(rgb(noise.path)[8:], rgb(source))


def test_alpha_masks_candidates_and_save_every_keep_the_rest(tmp_path, tiny_models):
    pixels = np.concatenate([rgb(picture(tmp_path / "rgb.png")), np.full((32, 32, 1), 255)], axis=2).astype(np.uint8)
    pixels[:, 16:, 3] = 0  # the transparent right half is repainted
    Image.fromarray(pixels, "RGBA").save(tmp_path / "in.png")
    result = artgen.edit(tmp_path / "in.png", progress=False, **tiny_models.settings(
        mask="alpha", candidates=2, save_every=2, output=str(tmp_path / "out.png")))
    for path in [result.path, tmp_path / "out.step00002.png"]:
        assert np.array_equal(rgb(path)[:, :16], pixels[:, :16, :3])
    assert result.contact_sheet.exists()


def test_a_rerun_repeats_the_edit_and_refuses_a_changed_mask(artgen, tmp_path, tiny_models):
    picture(Path("in.png"))
    right_half(Path("mask.png"))
    flags = [*tiny_models.diffusion_flags, "--seed", "4", "--quiet"]
    first = artgen("edit", "in.png", "a blue circle", "--mask", "mask.png", *flags, "-o", "first.png")
    assert first.code == 0, first.err
    again = artgen("generate", "--from", "first.png", "-o", "again.png", "--quiet")
    assert again.code == 0, again.err
    assert np.array_equal(rgb("first.png"), rgb("again.png"))
    right_half(Path("mask.png"), (32, 32)).write_bytes(Path("mask.png").read_bytes() + b"\0")  # another file now
    changed = artgen("generate", "--from", "first.png", "-o", "third.png", "--quiet")
    assert changed.code != 0 and "the mask mask.png has changed" in changed.err
    assert changed.err.count("\n") == 1 and not Path("third.png").exists()


def test_bad_masks_are_one_line(artgen, tmp_path, tiny_models):
    picture(Path("in.png"))
    Image.new("L", (32, 32), 0).save("empty.png")
    Image.new("L", (64, 32), 255).save("wide.png")
    Image.new("L", (64, 64), 0).save("big.png")
    Path("broken.png").write_bytes(b"not a png")
    flags = [*tiny_models.vqgan_flags, "--steps", "1", "--quiet"]
    cases = {("--mask", "empty.png"): "marks nothing to repaint",
             ("--mask", "wide.png"): "another shape",
             ("--mask", "broken.png"): "cannot be read as an image",
             ("--mask", "alpha"): "has no transparency",
             ("--mask-box", "20,0,16,8"): "reaches past the 32x32 image",
             ("--mask", "missing.png"): "does not exist"}
    for args, message in cases.items():
        result = artgen("edit", "in.png", "a red circle", *args, *flags)
        assert result.code != 0 and message in result.err, (args, result.err)
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
    unreadable = artgen("edit", "broken.png", "a red circle", "--mask-box", "0,0,4,4", *flags)
    assert unreadable.code == 1 and "image broken.png cannot be read as an image" in unreadable.err
    assert unreadable.err.count("\n") == 1
    no_init = artgen("generate", "a red circle", "--mask", "empty.png", *flags)
    assert no_init.code == 2 and "give it with --init-image" in no_init.err
    resized = artgen("edit", "in.png", "a red circle", "--mask", "big.png", "--invert-mask", *flags, "-o", "whole.png")
    assert resized.code == 0, resized.err
    assert "resized the mask" in resized.err and "covers the whole picture" in resized.err


def test_animations_take_no_mask(tiny_models):
    with pytest.raises(UserError, match="edits single pictures"):
        artgen.animate(progress=False, **tiny_models.settings(init_image="in.png", mask_box="0,0,4,4", frames=2))


def test_an_edit_upscales_its_whole_result(tmp_path, tiny_models):
    source = picture(tmp_path / "in.png")
    result = artgen.edit(source, progress=False, **tiny_models.settings(
        mask_box="16,0,16,32", upscale=2, output=str(tmp_path / "out.png")))
    assert [path.name for path in result.upscaled] == ["out.up2.png"]
    assert Image.open(result.upscaled[0]).size == (64, 64)


@pytest.mark.parametrize("changes, message", [
    (dict(mask_box="0,0,4,4", tile=True), "do not go together"),
    (dict(mask="m.png", mask_box="0,0,4,4"), "give one of them"),
    (dict(invert_mask=True), "--invert-mask swaps"),
    (dict(generator="diffusion", resample=2), "acts on edits"),
    (dict(mask_box="0,0,4,4", mask_blur=-1), "--mask-blur must not be negative")])
def test_edit_flags_that_do_not_fit_are_refused_before_any_model(tiny_models, changes, message):
    from artgen.settings import build_settings

    values = tiny_models.settings(init_image="in.png") | changes
    if changes.get("generator") == "diffusion":
        values = tiny_models.settings("diffusion", init_image="in.png", resample=2)
    with pytest.raises(UserError, match=message):
        build_settings(None, None, values)


def test_an_extension_larger_than_the_picture_is_refused(tmp_path, tiny_models):
    source = picture(tmp_path / "in.png")
    with pytest.raises(UserError, match="grows the picture by more than"):
        artgen.generate(progress=False, **tiny_models.settings(init_image=str(source), extend="left=40"))


def test_a_size_the_vqgan_cannot_draw_is_refused(tmp_path, tiny_models):
    source = picture(tmp_path / "in.png", (30, 30))
    with pytest.raises(UserError, match="draws 16x16 pictures, not the edit's 30x30.*such as 16x16"):
        artgen.edit(source, progress=False, **tiny_models.settings(mask_box="16,0,14,30", width=None, height=None))
