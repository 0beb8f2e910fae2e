"""The automatic settings: --precision auto, and channels-last and checkpointing when not given, settle on the
device's abilities (faked here both ways), the PNG records what ran, and `artgen doctor` says what auto picks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import artgen.memory as memory
import artgen.speed as speed
from artgen import animate, generate
from artgen.auto import settle
from artgen.output import read_metadata
from artgen.settings import build_settings

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
AUTO = {"precision": "auto", "channels_last": None, "checkpointing": None}  # over the fixture's fp32 pin
PIN = ("--precision", "fp32", "--no-channels-last")  # the fixture's pin in flags


@pytest.fixture
def plenty_of_memory(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2**30)


def auto_settings(tiny_models, **overrides):
    return build_settings(None, None, tiny_models.settings(**AUTO | overrides))


@pytest.mark.parametrize("capability, precision", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp32"),
                                                   ((6, 1), "fp32")])
def test_auto_on_cuda_follows_the_compute_capability(tiny_models, monkeypatch, plenty_of_memory, capability,
                                                     precision):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    settled, choices = settle(auto_settings(tiny_models), CUDA)
    assert (settled.precision, settled.channels_last, settled.checkpointing) == (precision, precision == "bf16", False)
    assert f"compute capability {capability[0]}.{capability[1]}" in str(choices[0])


@pytest.mark.parametrize("native, precision", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_follows_its_bf16_instructions(tiny_models, monkeypatch, plenty_of_memory, native, precision):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
    settled, _ = settle(auto_settings(tiny_models), CPU)
    assert (settled.precision, settled.channels_last) == (precision, native)


def test_what_is_given_is_kept(tiny_models, monkeypatch, plenty_of_memory):
    """A value given (or recorded before auto existed: fp32 and booleans) is not second-guessed."""
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    old_recipe = {"precision": "fp32", "channels_last": False, "checkpointing": True}
    flags = {key: value for key, value in tiny_models.settings().items() if key not in AUTO}
    settled, choices = settle(build_settings(None, old_recipe, flags), CPU)
    assert (settled.precision, settled.channels_last, settled.checkpointing) == ("fp32", False, True)
    assert choices == []


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_the_recipe_records_what_auto_chose_and_from_repeats_it(artgen, tiny_models, monkeypatch, plenty_of_memory):
    """Drawn where bf16 is native, rerun with --from where it is not: the recipe's bf16 is what runs again (the
    same pixels), while a run left to auto there takes fp32 (other pixels: the control)."""
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    generate(progress=False, **tiny_models.settings(**AUTO, steps=2, output="first.png"))
    recorded = read_metadata("first.png")["settings"]
    assert (recorded["precision"], recorded["channels_last"], recorded["checkpointing"]) == ("bf16", True, False)

    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    rerun = artgen("generate", "--from", "first.png", "-o", "again.png", "--quiet")
    assert rerun.code == 0, rerun.err
    assert read_metadata("again.png")["settings"]["precision"] == "bf16"
    assert np.array_equal(pixels("again.png"), pixels("first.png"))
    fresh = artgen("generate", "--from", "first.png", "--precision", "auto", "--no-channels-last", "-o", "auto.png",
                   "--quiet")
    assert fresh.code == 0, fresh.err
    assert read_metadata("auto.png")["settings"]["precision"] == "fp32"
    assert not np.array_equal(pixels("auto.png"), pixels("first.png"))


def test_a_resumed_animation_keeps_the_precision_its_frames_were_drawn_with(tiny_models, monkeypatch, tmp_path,
                                                                           plenty_of_memory):
    """Frames drawn in fp32 (as every frame before auto existed) go on in fp32 where auto would now pick bf16."""
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: True)
    settings = tiny_models.settings(steps=1, frames=1, frames_dir=str(tmp_path / "frames"))  # pinned to fp32
    animate(progress=False, **settings)
    resumed = animate(progress=False, **settings | AUTO | {"frames": 2, "resume": True})
    assert [read_metadata(path)["settings"]["precision"] for path in resumed.frames] == ["fp32", "fp32"]


def test_a_run_says_what_auto_chose_and_why(artgen, tiny_models, monkeypatch, plenty_of_memory):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    flags = [flag for flag in tiny_models.vqgan_flags if flag not in PIN]
    result = artgen("generate", "x", *flags, "--steps", "1", "-o", "out.png", "--verbose", "--quiet")
    assert result.code == 0, result.err
    [line] = [line for line in result.err.splitlines() if "auto settings" in line]
    assert "--precision fp32: this CPU has no native bf16" in line and "--channels-last off" in line
    assert "--checkpointing off" in line and "warning" not in result.err


def test_doctor_prints_the_device_and_what_auto_picks(artgen, monkeypatch, plenty_of_memory):
    for native, precision in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
        result = artgen("doctor", "--device", "cpu")
        assert result.code == 0, result.err
        assert f"torch {torch.__version__}" in result.out and "device: cpu" in result.out
        assert f"--precision {precision}: this CPU" in result.out
        assert f"--channels-last {'on' if native else 'off'}" in result.out and "--checkpointing off" in result.out
        assert "models cache:" in result.out and "shapes-clip" in result.out
    pinned = artgen("doctor", "--device", "cpu", "--preset", "offline")
    assert "--precision fp32: set by the preset (auto would choose fp32)" in pinned.out


def between_footprints(settings) -> float:
    """Free memory that the size needs more than without checkpointing and less than with it."""
    plain = memory.footprint(settings.replace(checkpointing=False)).bytes_at(settings.width, settings.height)
    lean = memory.footprint(settings.replace(checkpointing=True)).bytes_at(settings.width, settings.height)
    assert lean < plain
    return (lean + plain) / 2


def test_checkpointing_turns_on_when_the_size_needs_more_than_is_free(artgen, tiny_models, monkeypatch):
    settings = auto_settings(tiny_models, precision="fp32")
    monkeypatch.setattr(memory, "available_bytes", lambda device: between_footprints(settings))
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "-o", "lean.png", "--quiet")
    assert result.code == 0, result.err
    [warning] = [line for line in result.err.splitlines() if line.strip()]
    assert warning.startswith("artgen: warning: gradient checkpointing is on: 32x32 needs about")
    assert read_metadata("lean.png")["settings"]["checkpointing"] is True

    refused = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "--no-checkpointing", "-o", "no.png")
    assert refused.code != 0 and "--checkpointing fits up to" in refused.err


def test_checkpointing_stays_off_where_the_size_fits(artgen, tiny_models, plenty_of_memory):
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "-o", "plain.png", "--quiet")
    assert result.code == 0 and result.err == "", result.err
    assert read_metadata("plain.png")["settings"]["checkpointing"] is False


def test_an_unknown_precision_is_one_line(artgen, tmp_path):
    result = artgen("generate", "x", "--precision", "fp64")
    assert result.code == 2 and result.err.count("\n") == 1 and "'auto', 'fp32', 'bf16', 'fp16'" in result.err
    (tmp_path / "mine.yaml").write_text("precision: fp8\n")
    result = artgen("generate", "x", "--preset", "mine.yaml")
    assert result.code == 2 and result.err.strip() == ("artgen: error: unknown precision 'fp8': choose one of auto, "
                                                       "fp32, bf16, fp16")
