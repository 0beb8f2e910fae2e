import os

import numpy as np
import pytest
import torch
from PIL import Image

from artgen.errors import UsageError, UserError
from artgen.output import contact_sheet, ensure_writable, read_metadata, resolve_outputs, save_png, step_path
from artgen.settings import build_settings


def settings(**kw):
    return build_settings(None, None, {"prompts": ["a red circle:2|sky"], "seed": 7, **kw})


def test_png_round_trips_settings(tmp_path):
    path = tmp_path / "x.png"
    image = torch.rand(1, 3, 8, 12)
    save_png(image, path, {"settings": settings().to_dict(), "step": 3})
    meta = read_metadata(path)
    assert meta["settings"] == settings().to_dict()
    assert meta["step"] == 3 and "artgen_version" in meta
    with Image.open(path) as picture:
        assert picture.size == (12, 8)
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1) / 255
    assert torch.allclose(pixels, image[0], atol=1 / 255)
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temporary left behind


def test_template_fields_and_counter(tmp_path):
    template = str(tmp_path / "{prompt}-{seed}-{n}.png")
    [first] = resolve_outputs(template, settings())
    assert first.name == "a_red_circle-7-1.png"
    first.write_bytes(b"")
    assert resolve_outputs(template, settings())[0].name == "a_red_circle-7-2.png"
    assert [p.name for p in resolve_outputs(template, settings(), count=2)] == ["a_red_circle-7-2.png", "a_red_circle-7-3.png"]


def test_several_images_get_numbered_names(tmp_path):
    paths = resolve_outputs(str(tmp_path / "out.png"), settings(), count=3)
    assert [p.name for p in paths] == ["out-1.png", "out-2.png", "out-3.png"]


def test_existing_file_is_refused_without_overwrite(tmp_path):
    (tmp_path / "out.png").write_bytes(b"keep")
    template = str(tmp_path / "out.png")
    with pytest.raises(UserError, match="--overwrite"):
        resolve_outputs(template, settings())
    assert resolve_outputs(template, settings(), overwrite=True)[0].name == "out.png"
    assert (tmp_path / "out.png").read_bytes() == b"keep"


@pytest.mark.parametrize("template, message", [("{nope}.png", "unknown field"), ("x.jpg", "must end in .png"),
                                               ("{seed.png", "not a valid template")])
def test_bad_templates(template, message):
    with pytest.raises(UsageError, match=message):
        resolve_outputs(template, settings())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UserError, match="cannot write"):
        ensure_writable(locked / "sub")


def test_folder_under_a_file_is_unwritable(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(UserError, match="cannot write to output folder"):
        ensure_writable(tmp_path / "file" / "sub")


def test_a_png_without_a_recipe(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="carries no artgen settings"):
        read_metadata(tmp_path / "plain.png")


def test_step_path_sits_beside_the_output(tmp_path):
    assert step_path(tmp_path / "a.png", 50).name == "a.step00050.png"


def test_contact_sheet_enlarges_small_tiles_until_their_captions_fit():
    red, blue = torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    red[:, 0], blue[:, 2] = 1, 1
    labels = ["#1 seed 0: 0.392", "#2 seed 1: 0.390"]
    sheet = np.asarray(contact_sheet([red, blue], labels, columns=2))
    tile = sheet.shape[1] // 2
    assert tile % 32 == 0 and tile > 32
    assert (sheet[:tile, :tile] == (255, 0, 0)).all() and (sheet[:tile, tile:] == (0, 0, 255)).all()
    caption = sheet[tile:]  # the captions' row: each caption's dark pixels stay within its own tile
    assert (caption[:, :tile] < 128).any() and (caption[:, tile - 2:tile + 2] == 255).all()


def test_contact_sheet_keeps_large_tiles_as_they_are():
    sheet = contact_sheet([torch.rand(1, 3, 200, 200)], ["#1 seed 0: 0.5"])
    assert sheet.size == (4 * 200, 200 + 14)


def test_written_png_gets_the_permissions_of_a_plain_new_file(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_png(torch.rand(1, 3, 8, 8), tmp_path / "a.png", {})
        kept = save_png(torch.rand(1, 3, 8, 8), tmp_path / "b.png", {}, overwrite=False)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644 and kept.stat().st_mode & 0o777 == 0o644
