"""Hostile or odd files a user may be handed: oversized images, forged recipes, shared PNGs whose recipe points
elsewhere, output templates that reach objects. Each ends in one `artgen: error:` line (or works safely)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL import Image, PngImagePlugin

from artgen import images, output
from artgen.errors import UsageError, UserError
from artgen.images import load_image
from artgen.output import read_metadata, resolve_outputs, save_png
from artgen.recipe import rerun_recipe
from artgen.settings import RunSettings, build_settings


def one_error_line(result, code: int | None = None) -> str:
    """The single `artgen: error:` line of a failed run, with no traceback and no raw warning."""
    assert result.code != 0 and (code is None or result.code == code), result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("artgen: error: "), result.err
    assert "Warning" not in result.err and "Traceback" not in result.err
    return lines[0]


def claimed_size_png(path: Path, width: int, height: int) -> Path:
    """A tiny valid PNG whose header claims width x height (the IHDR patched, its CRC fixed): a few bytes."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def png_with_text(path: Path, text: str, compressed: bool = False) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(output.METADATA_KEY, text, zip=compressed)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


def recipe_png(path: Path, **settings) -> Path:
    """A PNG as artgen writes it, with the given settings recorded."""
    recipe = build_settings(None, None, {"prompts": ["x"], "seed": 3, **settings}, animation=True).to_dict()
    save_png(Image.new("RGB", (4, 4)), path, {"settings": recipe})
    return path


# --- oversized images ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["generate", "x", "--init-image", "bomb.png"],
                                     ["generate", "--image-prompt", "bomb.png"],
                                     ["show-settings", "bomb.png"], ["generate", "--from", "bomb.png"]])
def test_an_image_claiming_too_many_pixels_is_refused_in_one_line(artgen, tiny_models, command):
    claimed_size_png(Path("bomb.png"), 100000, 100000)
    runs = command[0] == "generate" and "--from" not in command
    line = one_error_line(artgen(*command, *(tiny_models.vqgan_flags if runs else []),
                                 *(["--quiet"] if command[0] == "generate" else [])))
    assert "bomb.png is 100000x100000 pixels" in line and "smaller image" in line
    assert not list(Path(".").glob("outputs/*.png"))


def test_a_large_image_under_the_limit_opens_without_pil_warning(tmp_path, monkeypatch, recwarn):
    """PIL's own limit (here lowered as if the image were huge) neither warns nor raises in artgen's reading."""
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)  # PIL would warn above 100 px and raise above 200
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", "init image").size == (60, 40)
    reduced = load_image(tmp_path / "big.png", "init image", cover=(16, 16))
    assert reduced.size == (30, 20) and reduced.mode == "RGB"  # shrunk 2x: the largest factor still covering 16x16
    assert not [w for w in recwarn if issubclass(w.category, PIL.Image.DecompressionBombWarning)]


def test_the_pixel_limit_is_artgens_own(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    Image.new("RGB", (11, 10)).save(tmp_path / "a.png")
    with pytest.raises(UserError, match="11x10 pixels, more than"):
        load_image(tmp_path / "a.png", "init image")


def test_a_large_init_image_runs_through_the_cli_without_warnings(artgen, tiny_models, monkeypatch, recwarn):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1500)  # a 128x96 picture is a "bomb" to PIL now
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)).save("photo.png")
    result = artgen("generate", "x", "--init-image", "photo.png", *tiny_models.vqgan_flags, "--steps", "1",
                    "--cutn", "2", "-o", "out.png", "--quiet")
    assert result.code == 0, result.err
    assert "Warning" not in result.err and Path("out.png").is_file()
    assert not [w for w in recwarn if issubclass(w.category, PIL.Image.DecompressionBombWarning)]


# --- forged recipes -----------------------------------------------------------------------------------------

FORGED = {
    "list": ("[1, 2]", "holds a list, not a JSON object"),
    "null": ("null", "holds null, not a JSON object"),
    "deep": ("[" * 100000 + "]" * 100000, "nests deeper"),
    "deep-but-parsable": ('{"settings": {"prompts": ' + "[" * 50 + "]" * 50 + "}}", "nests deeper"),
    "huge": (json.dumps({"settings": {"prompts": ["x" * 300000]}}), "more than the"),
    "no-settings": (json.dumps({"artgen_version": "0.1"}), "carries no artgen settings"),
    "settings-list": (json.dumps({"settings": ["steps", 3]}), "not a mapping"),
    "wrong-type": (json.dumps({"settings": {"steps": {"a": 1}}}), "steps must be an integer"),
    "unknown-name": (json.dumps({"settings": {"stepz": 3}}), "unknown setting 'stepz'"),
}


@pytest.mark.parametrize("kind", FORGED)
@pytest.mark.parametrize("command", ["show-settings", "generate --from"])
def test_forged_recipes_give_one_line(artgen, kind, command):
    text, words = FORGED[kind]
    png_with_text(Path("forged.png"), text)
    line = one_error_line(artgen(*command.split(), "forged.png", *(["--quiet"] if "--from" in command else [])))
    assert "forged.png" in line and words in line


@pytest.mark.parametrize("command", ["show-settings", "generate --from"])
def test_a_compressed_chunk_expanding_past_pils_limit_gives_one_line(artgen, command):
    png_with_text(Path("zip.png"), json.dumps({"settings": {"prompts": ["x" * (2 * 2**20)]}}), compressed=True)
    assert Path("zip.png").stat().st_size < 20000
    line = one_error_line(artgen(*command.split(), "zip.png", *(["--quiet"] if "--from" in command else [])))
    assert "zip.png" in line and "oversized text chunk" in line


@pytest.mark.parametrize("command", ["show-settings", "generate --from"])
def test_a_file_that_is_not_an_image_gives_one_line(artgen, command):
    Path("notes.png").write_text("not a png")
    line = one_error_line(artgen(*command.split(), "notes.png", *(["--quiet"] if "--from" in command else [])))
    assert "notes.png" in line


def test_show_settings_prints_a_genuine_recipe(artgen):
    recipe_png(Path("real.png"), steps=7)
    result = artgen("show-settings", "real.png")
    assert result.code == 0 and "steps: 7" in result.out and result.out.startswith("# artgen ")


# --- output templates ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["{prompt.__class__}.png", "{seed[0]}.png", "{prompt!r}.png",
                                      "{n:{seed}}.png", "{n:999999999}.png", "{0}.png", "{}.png"])
def test_templates_reach_only_the_documented_fields(artgen, template):
    line = one_error_line(artgen("generate", "x", "-o", template, "--quiet"), code=2)
    assert template in line
    assert not [path for path in Path(".").rglob("*.png")]


def test_plain_format_specs_still_work(tmp_path):
    settings = RunSettings(prompts=["a cat"], seed=7)
    [path] = resolve_outputs(str(tmp_path / "{prompt}-{seed:05d}-{n:03d}-{width}.png"), settings)
    assert path.name == f"a_cat-00007-001-{settings.width}.png"


def test_a_too_long_file_name_is_refused_before_any_work(artgen, tiny_models):
    line = one_error_line(artgen("generate", "x", "-o", "a" * 250 + "-{n}.png", *tiny_models.vqgan_flags,
                                 "--quiet"), code=2)
    assert "shorten the template" in line


def test_frames_dir_is_checked_the_same_way(artgen):
    line = one_error_line(artgen("animate", "x", "--frames", "2", "--frames-dir", "out/{seed.real}", "--quiet"),
                          code=2)
    assert "--frames-dir" in line and "{seed.real}" in line


def test_template_checks_in_the_library():
    with pytest.raises(UsageError, match="not a plain field"):
        output.check_template("{n!s}.png")
    output.check_template("{prompt:>10}-{n:03d}-{{literal}}.png")


# --- a shared PNG's recipe ----------------------------------------------------------------------------------

def test_from_does_not_follow_the_recorded_output(artgen, tiny_models):
    Path("shared").mkdir()
    first = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "--cutn", "2", "--seed", "4",
                   "-o", "shared/made.png", "--quiet")
    assert first.code == 0, first.err
    metadata = read_metadata("shared/made.png")
    metadata["settings"]["output"] = "../../escaped/{seed}.png"
    save_png(Image.open("shared/made.png"), Path("shared/forged.png"), metadata)
    again = artgen("generate", "--from", "shared/forged.png", "--quiet")
    assert again.code == 0, again.err
    assert not Path("../escaped").exists() and not Path("escaped").exists()
    assert again.out.strip() == "outputs/x-4-1.png" and Path("outputs/x-4-1.png").is_file()
    assert "does not follow" in again.err and "../../escaped/{seed}.png" in again.err


@pytest.mark.parametrize("field, value", [("init_image", "/etc/hostname"), ("init_image", "../outside.png"),
                                          ("image_prompts", ["../outside.png:0.5"]), ("init_image", "missing.png")])
def test_recorded_input_paths_outside_the_folder_are_refused(artgen, field, value):
    Image.new("RGB", (4, 4)).save("outside.png")
    Path("shared").mkdir()
    recipe_png(Path("shared/made.png"), **{field: value})
    line = one_error_line(artgen("generate", "--from", "shared/made.png", "--quiet"))
    flag = "--init-image" if field == "init_image" else "--image-prompt"
    assert f"give the file again with {flag} PATH" in line


def test_recorded_input_paths_inside_the_folder_resolve_from_there(tmp_path):
    (tmp_path / "shared" / "pics").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "shared" / "pics" / "a.png")
    source = recipe_png(tmp_path / "shared" / "made.png", init_image="pics/a.png",
                        image_prompts=["pics/a.png:0.5|pics/a.png"])
    recipe = rerun_recipe(read_metadata(source)["settings"], source, given=())
    inside = str(tmp_path / "shared" / "pics" / "a.png")
    assert recipe["init_image"] == inside and recipe["image_prompts"] == [f"{inside}:0.5|{inside}"]
    assert "output" not in recipe and "overwrite" not in recipe


def test_a_flag_given_again_replaces_the_recorded_path(tmp_path):
    source = recipe_png(tmp_path / "made.png", init_image="/etc/hostname")
    with pytest.raises(UserError, match="--init-image PATH"):
        rerun_recipe(read_metadata(source)["settings"], source, given=())
    assert "init_image" not in rerun_recipe(read_metadata(source)["settings"], source, given={"init_image"})


def test_hyphenated_recorded_names_are_checked_too(tmp_path):
    source = tmp_path / "made.png"
    png_with_text(source, json.dumps({"settings": {"prompts": ["x"], "init-image": "/etc/hostname"}}))
    with pytest.raises(UserError, match="--init-image PATH"):
        rerun_recipe(read_metadata(source)["settings"], source, given=())


# --- --from never replaces its source -----------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_from_never_replaces_the_image_it_reproduces(artgen, tiny_models, overwrite):
    flags = [*tiny_models.vqgan_flags, "--steps", "1", "--cutn", "2", "--quiet"]
    assert artgen("generate", "x", *flags, "-o", "img.png").code == 0
    before = Path("img.png").read_bytes()
    again = artgen("generate", "--from", "img.png", "-o", "img.png", *flags, *overwrite)
    assert again.code == 0, again.err
    assert Path("img.png").read_bytes() == before
    assert again.out.strip() == "img-2.png" and Path("img-2.png").is_file()
    assert "img.png is the image being reproduced: writing to img-2.png" in again.err


def test_from_with_overwrite_skips_the_source_among_numbered_outputs(artgen, tiny_models):
    flags = [*tiny_models.vqgan_flags, "--steps", "1", "--cutn", "2", "--seed", "5", "--quiet"]
    assert artgen("generate", "x", *flags).code == 0
    source = Path("outputs/x-5-1.png")
    before = source.read_bytes()
    again = artgen("generate", "--from", str(source), *flags, "--overwrite")
    assert again.code == 0, again.err
    assert source.read_bytes() == before and again.out.strip() == "outputs/x-5-2.png"
