"""artgen upscale: the tiling plan, refusals, the recorded recipe, memory that follows the tile and not the output,
and a blend that shows no seam where an unfeathered one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from artgen.output import read_metadata, save_png
from artgen.session import Session
from artgen.settings import UpscaleSettings, build_settings
from artgen.upscale import Blend, plan_tiles, ramp, refined_tiles, spans, tile_settings

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ["--preset", "offline-vqgan", "--prior-scale", "0", "--cutn", "2", "--save-scale", "1", "-s", "3"]
SEAM_MARGIN = 1.5  # tile borders may carry at most 1.5 times the image's mean gradient


def test_tiles_cover_the_picture_and_their_weights_cross_fade():
    for length in (128, 200, 256):
        starts = spans(length, 64, 16)
        assert starts[0] == 0 and starts[-1] + 64 == length
        assert all(b - a <= 64 - 16 for a, b in zip(starts, starts[1:]))  # neighbours share at least 16
    assert len(plan_tiles(128, 256, 64, 16)) == 3 * 5
    rising = ramp(64, 16, before=True, after=False)
    assert torch.allclose(rising[:16] + rising[:16].flip(0), torch.ones(16))  # two neighbours' weights sum to 1
    assert rising[16:].eq(1).all() and ramp(64, 16, False, False).eq(1).all()


def seam_figure(image: torch.Tensor, tile: int, overlap: int) -> float:
    """Mean absolute step between neighbouring pixels across the tiles' edges, over the whole image's mean."""
    height, width = image.shape[-2:]
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=(0, 1))
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(0, 1))
    xs = {x for left in spans(width, tile, overlap) for x in (left, left + tile) if 0 < x < width}
    ys = {y for top in spans(height, tile, overlap) for y in (top, top + tile) if 0 < y < height}
    border = torch.cat([dx[:, [x - 1 for x in sorted(xs)]].flatten(), dy[[y - 1 for y in sorted(ys)], :].flatten()])
    return (border.mean() / torch.cat([dx.flatten(), dy.flatten()]).mean()).item()


def test_feathered_blend_shows_no_seam_where_a_plain_average_does():
    """The same refined tiles of a 64x64 picture brought to 128x128, blended with feathered weights and without."""
    settings = build_settings("offline-vqgan", None, dict(prompts=["a red circle"], prior_scale=0.0, steps=1,
                                                          cutn=2, seed=0, save_scale=1))
    session = Session(settings, progress=False)
    rows, columns = torch.meshgrid(torch.linspace(-1, 1, 128), torch.linspace(-1, 1, 128), indexing="ij")
    disc = (rows.square() + columns.square() < 0.4).float()
    start = torch.stack([0.5 + 0.4 * disc, 0.5 - 0.2 * disc, 0.5 - 0.2 * disc])[None]
    upscale = UpscaleSettings(scale=2, strength=0.0).sized(64, 64)
    tiles = list(refined_tiles(session, tile_settings(session.settings, upscale.upscale_tile), start, upscale))
    figures = {}
    for feathered in (True, False):
        blend = Blend(128, 128, upscale.upscale_overlap, feathered)
        for tile, left, top, _ in tiles:
            blend.add(tile, left, top)
        figures[feathered] = seam_figure(blend.result(), upscale.upscale_tile, upscale.upscale_overlap)
    assert figures[True] <= SEAM_MARGIN, figures
    assert figures[False] > SEAM_MARGIN, figures  # the control: plain averaging leaves steps at the tile edges


def growth(mode: str, size: int) -> float:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "upscale_memory_probe.py"), mode, str(size)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["growth"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable peak memory")
def test_memory_follows_the_tile_not_the_output():
    """Each size in a fresh process; a one-piece run at the output size is the control that grows."""
    tiled = {size: growth("tiles", size) for size in (128, 256)}
    whole = {size: growth("one", size) for size in (128, 256)}
    assert tiled[256] < 1.5 * tiled[128], tiled
    assert whole[256] > 2.5 * whole[128], whole


def test_upscale_refusals(artgen, tmp_path):
    plain = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(plain)
    for args, message in [(["--scale", "3"], "--scale must be 2 or 4"),
                          (["--upscale-tile", "128", "a red circle"], "larger than the 64x64 output"),
                          (["--upscale-overlap", "40", "a red circle"], "more than half"),
                          (["--width", "64", "a red circle"], "--width is decided by the upscale"),
                          ([], "carries no artgen recipe to take a prompt from: give a prompt")]:
        result = artgen("upscale", plain, *args)
        assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    taken = tmp_path / "photo.up2.png"
    taken.write_bytes(b"")
    result = artgen("upscale", plain, "a red circle")
    assert result.code == 1 and "already exists: pass --overwrite" in result.err


def test_generate_upscale_and_the_upscale_command_agree(artgen, tmp_path):
    """generate --upscale 2 writes the image and its upscale; artgen upscale of that image, from its recipe,
    makes the same picture; the PNG records the source and the upscale, and a --from of it is refused."""
    result = artgen("generate", "a red circle", *BUNDLED, "-n", "1", "-o", "red.png", "--upscale", "2")
    assert result.code == 0, result.err
    assert result.out.split() == ["red.png", "red.up2.png"]
    with Image.open(tmp_path / "red.up2.png") as picture:
        assert picture.size == (128, 128)
    again = artgen("upscale", "red.png", "-o", "again.png", "--quiet")
    assert again.code == 0, again.err
    with Image.open(tmp_path / "red.up2.png") as first, Image.open(tmp_path / "again.png") as second:
        assert first.tobytes() == second.tobytes()
    recorded = read_metadata(tmp_path / "again.png")
    assert recorded["upscale"]["scale"] == 2 and recorded["upscale"]["upscale_tile"] == 64
    source = recorded["upscale"]["source"]
    assert source["file"] == "red.png" and source["settings"]["prompts"] == ["a red circle"]
    assert len(source["sha256"]) == 64 and recorded["settings"]["width"] == 64
    shown = artgen("show-settings", "again.png")
    assert shown.code == 0 and "# upscale x2 of red.png" in shown.out
    refused = artgen("generate", "--from", "again.png")
    assert refused.code == 1 and "is an upscale of red.png" in refused.err


def test_a_prompt_replaces_a_missing_recipe(artgen, tmp_path):
    save_png(torch.rand(1, 3, 32, 32), tmp_path / "noise.png", {"note": "no settings"})
    result = artgen("upscale", "noise.png", "a blue square", *BUNDLED, "-n", "1", "--upscale-tile", "32",
                    "--quiet")
    assert result.code == 0, result.err
    recorded = read_metadata(tmp_path / "noise.up2.png")
    assert recorded["settings"]["prompts"] == ["a blue square"] and recorded["upscale"]["source"]["settings"] is None


def test_animation_upscales_each_frame_beside_it(tmp_path, tiny_models):
    """Each frame gets frame_0000N.up2.png; the video is still made of the frames alone."""
    import imageio.v3 as iio

    import artgen as api

    result = api.animate(progress=False, **tiny_models.settings(frames=2, steps=1, upscale=2, zoom="1.05",
                                                                frames_dir=str(tmp_path / "frames")))
    assert sorted(path.name for path in result.folder.iterdir()) == [
        "frame_00001.png", "frame_00001.up2.png", "frame_00002.png", "frame_00002.up2.png"]
    with Image.open(result.folder / "frame_00002.up2.png") as picture:
        assert picture.size == (64, 64)
    assert iio.imread(result.video, plugin="FFMPEG", index=None).shape == (2, 32, 32, 3)


def test_diffusion_tiles_start_from_the_noised_tile(tmp_path, tiny_models, monkeypatch):
    """Diffusion skips --strength of its sampling steps per tile (its own meaning of strength, from for_frame)."""
    from artgen.generators.diffusion import DiffusionGenerator
    from artgen.upscale import upscale

    save_png(torch.rand(1, 3, 16, 16), tmp_path / "small.png", {"note": "no settings"})
    made = []
    real_create = DiffusionGenerator.create.__func__

    def create(cls, options, canvas, init=None, models=None):
        made.append((options.skip_steps, None if init is None else tuple(init.shape)))
        return real_create(cls, options, canvas, init, models)

    monkeypatch.setattr(DiffusionGenerator, "create", classmethod(create))
    settings = tiny_models.settings("diffusion")
    for name in ("width", "height"):
        settings.pop(name)
    result = upscale(tmp_path / "small.png", UpscaleSettings(scale=2, upscale_tile=24, strength=0.5),
                     progress=False, **settings)
    assert result.image.shape == (1, 3, 32, 32) and result.path.name == "small.up2.png"
    assert made and all(entry == (2, (1, 3, 24, 24)) for entry in made), made  # half of 4 respaced steps
