"""Controls for every generator: --symmetry, --tile and --palette, each measured against a run without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

import artgen
from artgen.cutouts import CutoutSettings, MakeCutouts, overview_cutouts
from artgen.generators import Canvas, ModelCache
from artgen.generators.vqgan import VQGANGenerator, VQGANOptions
from artgen.losses import palette_distance, symmetry
from artgen.models import factory
from artgen.models.tiling import make_periodic
from artgen.objective import CutPlan, Objective, regularizers
from artgen.session import Session
from artgen.settings import build_settings

CPU = torch.device("cpu")
PLAIN = CutoutSettings(cutn=200, cut_pow=50.0, flip=False, affine=False, perspective=False, jitter=False, noise=0.0)
RED_BLUE = "#ff0000,#0000ff"


def seam_ratio(image: Tensor) -> float:
    """Mean absolute difference across the wrap (last column to first, last row to first) over the mean absolute
    difference of neighbouring columns and rows inside: about 1 for a seamless tile, well above 1 for a picture
    with borders. A test's measure, so it lives here rather than in the package."""
    wrap = (image[..., :, -1] - image[..., :, 0]).abs().mean() + (image[..., -1, :] - image[..., 0, :]).abs().mean()
    inside = ((image[..., :, 1:] - image[..., :, :-1]).abs().mean()
              + (image[..., 1:, :] - image[..., :-1, :]).abs().mean())
    return (wrap / inside).item()


def read(path) -> Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("flags, words", [
    (["--symmetry", "radial:1"], "radial symmetry needs a whole number of folds of 2 or more"),
    (["--symmetry", "radial:x"], "radial symmetry needs a whole number of folds of 2 or more"),
    (["--symmetry", "diagonal"], "unknown --symmetry 'diagonal': choose one of none, horizontal"),
    (["--palette", "#ff0000,#12345g"], "--palette entry '#12345g' is not a colour"),
    (["--palette", "sepia"], "unknown --palette 'sepia'"),
    (["--symmetry-end", "1.5"], "--symmetry-end is a share of the run: give 0 to 1"),
    (["--symmetry-scale", "-1"], "--symmetry-scale must not be negative"),
])
def test_bad_controls_are_refused_in_one_line(artgen, flags, words):
    result = artgen("generate", "a cat", "--generator", "pixels", *flags)
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and words in lines[0], result.err


def test_symmetry_loss_is_zero_exactly_for_the_symmetric_image():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 24, 24)
    quarter_turns = sum(image.rot90(k, (-2, -1)) for k in range(4)) / 4
    cases = {"horizontal": (image + image.flip(-1)) / 2, "vertical": (image + image.flip(-2)) / 2,
             "both": (image + image.flip(-1) + image.flip(-2) + image.flip(-1, -2)) / 4, "radial:4": quarter_turns}
    for kind, symmetric in cases.items():
        assert symmetry(symmetric, kind) < 1e-10 < 0.05 < symmetry(image, kind), kind
    assert symmetry(quarter_turns, "radial:3") > 0.01  # four-fold is not three-fold
    assert symmetry(image, "none") == 0


def test_palette_distance_is_zero_on_palette_colours_only():
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    on_palette = colours[torch.randint(2, (1, 8, 8))].permute(0, 3, 1, 2)
    assert palette_distance(on_palette, colours) == 0
    assert palette_distance(torch.full((1, 3, 8, 8), 0.5), colours) == pytest.approx(0.75)


def test_symmetry_switches_off_after_symmetry_end():
    run = build_settings(None, None, {"prompts": ["x"], "symmetry": "horizontal", "symmetry_end": 0.5,
                                      "symmetry_scale": 1.5, "clip_guidance_scale": 2.0}).run
    objective = Objective([], regularizers(run, CPU), run.clip_guidance_scale, CutPlan(1))
    image = torch.rand(1, 3, 16, 16)
    assert objective(image, 0.4) == pytest.approx(3.0 * symmetry(image, "horizontal").item())  # times CLIP's
    assert objective(image, 0.5) == 0 and objective(image, 0.9) == 0


def marked_image(size: int = 32) -> Tensor:
    """Black, with the left column red and the right column green, the top row blue and the bottom row white."""
    image = torch.zeros(1, 3, size, size)
    image[:, 0, :, 0] = 1
    image[:, 1, :, -1] = 1
    return image


def both_borders(cuts: Tensor) -> int:
    """How many cutouts show the left column's red and the right column's green."""
    return int(((cuts[:, 0].amax(dim=(-2, -1)) > 0.2) & (cuts[:, 1].amax(dim=(-2, -1)) > 0.2)).sum())


def test_wrapped_cutouts_run_across_the_borders_into_the_other_side():
    image = marked_image()
    torch.manual_seed(0)
    wrapped = MakeCutouts(16, CutoutSettings(**{**PLAIN.__dict__, "wrap": True}))(image)
    torch.manual_seed(0)
    plain = MakeCutouts(16, PLAIN)(image)
    assert both_borders(wrapped) >= 5 and both_borders(plain) == 0  # small crops: only a wrapped one holds both
    rows = image.transpose(-2, -1)
    torch.manual_seed(0)
    assert both_borders(MakeCutouts(16, CutoutSettings(**{**PLAIN.__dict__, "wrap": True}))(rows)) >= 5


def test_wrapped_overview_shows_the_image_rolled():
    image = torch.rand(1, 3, 16, 16)
    torch.manual_seed(1)
    view = overview_cutouts(image, 16, 1, wrap=True)[0]
    shifts = [(dy, dx) for dy in range(16) for dx in range(16)
              if torch.allclose(view, image[0].roll((dy, dx), dims=(-2, -1)), atol=1e-5)]
    assert len(shifts) == 1 and shifts[0] != (0, 0)


def shift_error(network, start: Tensor, shift: int, scale: int) -> float:
    """How far ``network`` of ``start`` rolled by ``shift`` is from its output rolled by ``shift * scale``."""
    with torch.no_grad():
        return (network(start.roll(shift, -1)) - network(start).roll(shift * scale, -1)).abs().max().item()


def test_periodic_networks_shift_with_their_input_and_plain_ones_do_not(tiny_models):
    torch.manual_seed(0)
    vqgan = factory.load_vqgan_model("x", tiny_models.vqgan_config, tiny_models.vqgan_checkpoint, CPU)
    z = torch.randn(1, vqgan.codebook.shape[1], 4, 4)
    assert shift_error(vqgan.decode, z, 1, vqgan.downsample_factor) > 1e-2  # control: zero padding sees borders
    make_periodic(vqgan.decoder)
    assert shift_error(vqgan.decode, z, 1, vqgan.downsample_factor) < 1e-4
    unet = factory.load_unet_model("x", tiny_models.unet_checkpoint, tiny_models.unet_config, CPU, fp16=False)
    denoise = lambda x: unet(x, torch.tensor([10]))  # noqa: E731
    x = torch.randn(1, 3, 32, 32)
    assert shift_error(denoise, x, 8, 1) > 1e-2
    make_periodic(unet)
    assert shift_error(denoise, x, 8, 1) < 1e-4


def test_a_tiled_model_is_cached_apart_from_the_plain_one(tiny_models):
    options = VQGANOptions(vqgan_config=str(tiny_models.vqgan_config), vqgan_checkpoint=str(tiny_models.vqgan_checkpoint))
    models = ModelCache()
    tiled = VQGANGenerator.create(options, Canvas(32, 32, 1, 1, CPU, tile=True), None, models)
    plain = VQGANGenerator.create(options, Canvas(32, 32, 1, 1, CPU), None, models)
    modes = lambda generator: {m.padding_mode for m in generator.model.decoder.modules()  # noqa: E731
                               if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)}
    assert modes(tiled) == {"circular"} and modes(plain) == {"zeros"}


def test_tile_draws_a_seamless_vqgan_image_and_the_plain_decoder_draws_borders(tiny_models, tmp_path):
    def drawn(name: str, tile: bool) -> Tensor:
        values = tiny_models.settings(steps=2, batch=4, tile=tile, output=str(tmp_path / f"{name}-{{n}}.png"))
        return torch.cat([read(path) for path in artgen.generate(progress=False, **values).paths])

    tiled, plain = seam_ratio(drawn("tiled", True)), seam_ratio(drawn("plain", False))
    assert tiled < 1.25 and plain > 1.5, (tiled, plain)


def pixels_run(tiny_models, folder, name: str, **settings) -> Tensor:
    """A short pixels run with a high learning rate, so that 15 steps show where the losses pull."""
    values = {key: value for key, value in tiny_models.settings().items() if not key.startswith("vqgan")}
    values |= dict(generator="pixels", steps=15, pixels_lr=0.5, output=str(folder / f"{name}.png")) | settings
    return read(artgen.generate(progress=False, **values).paths[0])


@pytest.fixture(scope="module")
def pixels_control(tiny_models, tmp_path_factory) -> Tensor:
    """The same pixels run with no control: the prompt alone."""
    return pixels_run(tiny_models, tmp_path_factory.mktemp("control"), "control")


@pytest.mark.parametrize("kind", ["horizontal", "radial:4"])
def test_symmetry_makes_the_image_symmetric(tiny_models, tmp_path, pixels_control, kind):
    pulled = pixels_run(tiny_models, tmp_path, "pulled", symmetry=kind)
    assert symmetry(pulled, kind) < symmetry(pixels_control, kind) / 4


def test_a_palette_pulls_the_colours_toward_it(tiny_models, tmp_path, pixels_control):
    colours = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    pulled = pixels_run(tiny_models, tmp_path, "pulled", palette=RED_BLUE)
    assert palette_distance(pulled, colours) < palette_distance(pixels_control, colours) / 2


def test_a_recipe_of_the_pixel_art_generator_keeps_its_palette():
    settings = build_settings(None, {"generator": "pixel-art", "palette": "gameboy", "prompts": ["x"]})
    assert settings.run.palette == "gameboy" and settings.run.symmetry == "none" and settings.run.tile is False


def test_pixel_art_draws_the_palette_itself_and_the_others_are_pulled_toward_it(tiny_models):
    values = {key: value for key, value in tiny_models.settings().items() if not key.startswith("vqgan")}
    values |= dict(palette=RED_BLUE, pixel_size=4)
    art = Session(build_settings(None, None, values | dict(generator="pixel-art")), progress=False)
    assert art.objective().regularizers == []
    assert torch.equal(art.generator().palette_colours(), torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    values.pop("pixel_size")
    pixels = Session(build_settings(None, None, values | dict(generator="pixels")), progress=False)
    assert len(pixels.objective().regularizers) == 1


@pytest.mark.parametrize("tile, border", [(True, "wrap"), (False, "reflect")])
def test_a_tiled_animation_moves_its_frames_with_wrap_around(tmp_path, tiny_models, monkeypatch, tile, border):
    """The camera move of a tiled animation wraps, whatever --border says (control: untiled keeps --border)."""
    import artgen.animation as animation
    used = []
    real_move = animation.FramePlan.move
    monkeypatch.setattr(animation.FramePlan, "move",
                        lambda self, image, frame, border: used.append(border) or real_move(self, image, frame, border))
    artgen.animate(progress=False, **tiny_models.settings(frames=2, steps=1, tile=tile, zoom="1.1",
                                                           frames_dir=str(tmp_path / "frames")))
    assert used == [border]
