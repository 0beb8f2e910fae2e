"""Bad inputs a new user can give: each ends in one `artgen: error:` line that names what is wrong (issue 50, 6)."""

from __future__ import annotations

import math
import os
import re
import subprocess

import imageio_ffmpeg
import pytest

from artgen.errors import UserError
from artgen.files import readable_file


def one_error(result, *words: str) -> str:
    """The run failed with exactly one error line (no traceback) that holds every word."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code != 0, result
    assert len(lines) == 1 and lines[0].startswith("artgen: error:"), result.err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- "this path must be a regular readable file": one helper, every kind of wrong path ---

def test_readable_file_names_each_kind_of_wrong_path(tmp_path, monkeypatch):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    regular = tmp_path / "file.yaml"
    regular.write_text("{}")
    cases = {tmp_path / "missing": "does not exist", tmp_path: "is a folder", "/dev/zero": "character device",
             fifo: "named pipe", regular / "below": "is a file, not a folder"}
    for path, words in cases.items():
        with pytest.raises(UserError, match=words):
            readable_file(path, "thing")
    assert readable_file(regular, "thing") == regular
    monkeypatch.setattr("artgen.files.os.access", lambda path, mode: False)  # root reads every file; pretend not
    with pytest.raises(UserError, match="not readable"):
        readable_file(regular, "thing")


def test_a_folder_given_as_preset_is_named_a_folder(artgen, tmp_path):
    (tmp_path / "mine.yaml").mkdir()
    one_error(artgen("generate", "x", "--preset", "mine.yaml"), "mine.yaml", "is a folder")
    one_error(artgen("generate", "x", "--preset", str(tmp_path)), "is a folder")


def test_a_device_given_as_vqgan_config_is_named_a_device(artgen, tiny_models):
    flags = [f if f != str(tiny_models.vqgan_config) else "/dev/null" for f in tiny_models.vqgan_flags]
    one_error(artgen("generate", "x", *flags, "--steps", "1"), "VQGAN config /dev/null", "character device")


def test_a_folder_or_pipe_given_as_diffusion_or_clip_config_is_named(artgen, tiny_models, tmp_path):
    flags = [f if f != str(tiny_models.unet_config) else str(tmp_path) for f in tiny_models.diffusion_flags]
    one_error(artgen("generate", "x", *flags, "--steps", "1"), "--diffusion-config", "is a folder")
    fifo = tmp_path / "clip.json"
    os.mkfifo(fifo)  # reading it would block forever
    flags = [f if f != str(tiny_models.clip_config) else str(fifo) for f in tiny_models.vqgan_flags]
    one_error(artgen("generate", "x", *flags, "--steps", "1"), "CLIP model config", "named pipe")


def test_a_device_given_as_checkpoint_is_named_a_device(artgen, tiny_models):
    flags = [f if f != str(tiny_models.vqgan_checkpoint) else "/dev/zero" for f in tiny_models.vqgan_flags]
    one_error(artgen("generate", "x", *flags, "--steps", "1"), "VQGAN checkpoint /dev/zero", "character device")


@pytest.fixture
def audio_only(tmp_path):
    path = tmp_path / "a.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc",
                    "-t", "0.2", str(path)], check=True)
    return path


def test_an_audio_only_video_is_named_so(artgen, tiny_models, audio_only):
    line = one_error(artgen("stylize-video", audio_only, "a painting", *tiny_models.vqgan_flags, "--steps", "1"),
                     "has no video stream", "audio")
    assert "output files" not in line


def test_an_empty_video_is_named_empty(artgen, tiny_models, tmp_path):
    (tmp_path / "e.mp4").write_bytes(b"")
    one_error(artgen("stylize-video", tmp_path / "e.mp4", "a painting", *tiny_models.vqgan_flags, "--steps", "1"),
              "e.mp4 is empty (0 bytes)")


def test_an_output_in_proc_says_the_folder_takes_no_files(artgen, tiny_models):
    line = one_error(artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "-o", "/proc/x.png"),
                     "/proc", "does not take new files")
    assert "No such file or directory:" not in line


def test_an_output_below_a_file_names_the_file(artgen, tiny_models, tmp_path):
    (tmp_path / "taken").write_text("")
    one_error(artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "-o", "taken/x.png"),
              "taken is a file, not a folder")


# --- the models cache ---

@pytest.mark.parametrize("command", [("models", "list"), ("models", "path"),
                                     ("generate", "x", "--clip", "ViT-B-32:openai", "--steps", "1")])
def test_artgen_home_pointing_at_a_file_is_one_line(artgen, tmp_path, monkeypatch, command):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache"))
    result = artgen(*command)
    one_error(result, "ARTGEN_HOME=", "is a file, not a folder")
    assert result.out == ""  # no table or path printed before the error


def test_artgen_home_below_a_file_is_one_line(artgen, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache" / "artgen"))
    one_error(artgen("models", "list"), "ARTGEN_HOME=", "cache is a file")


# --- sizes that cannot fit ---

@pytest.fixture
def no_allocation(monkeypatch):
    """Fail loudly if a run gets as far as building its generator or CLIP models."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run went on to allocate")
    monkeypatch.setattr("artgen.generators.vqgan.VQGANGenerator.create", refuse)
    monkeypatch.setattr("artgen.generators.diffusion.DiffusionGenerator.create", refuse)
    monkeypatch.setattr("artgen.session.load_perceptors", refuse)


@pytest.mark.parametrize("generator", ["vqgan", "diffusion"])
def test_a_size_that_cannot_fit_is_refused_before_allocating(artgen, tiny_models, no_allocation, generator):
    flags = tiny_models.vqgan_flags if generator == "vqgan" else tiny_models.diffusion_flags
    one_error(artgen("generate", "x", *flags, "--steps", "1", "--width", "100000", "--height", "100000"),
              "100000x100000 needs about", "GiB", "memory available on cpu", "the largest size that fits", "--width")


def test_checkpointing_is_offered_where_it_helps(artgen, no_allocation, tmp_path, monkeypatch):
    """The downloadable VQGANs' decoder (read before its download) is dominated by its full-size feature maps.
    Left automatic, checkpointing is on already at such a size, and the size offered is the one it fits."""
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache"))
    huge = ["generate", "x", "--width", "100000", "--height", "100000", "--steps", "1"]
    plain = one_error(artgen(*huge, "--no-checkpointing"), "the VQGAN decoder's activations",
                      "the largest size that fits", "--checkpointing fits up to")
    lean = one_error(artgen(*huge), "activations with gradient checkpointing", "the largest size that fits")
    offered = lambda line: int(line.split("--width ")[1].split()[0])  # noqa: E731
    assert "--checkpointing fits" not in lean and offered(lean) > offered(plain)


def test_animations_and_candidates_are_checked_too(artgen, tiny_models, no_allocation):
    big = ["--width", "100000", "--height", "100000", "--steps", "1"]
    one_error(artgen("animate", "x", *tiny_models.vqgan_flags, *big, "--frames", "2"), "100000x100000 needs about")
    one_error(artgen("generate", "x", *tiny_models.vqgan_flags, *big, "--candidates", "2"), "needs about")


def test_the_largest_size_offered_fits_and_checkpointing_needs_less(tiny_models):
    from artgen.memory import footprint
    from artgen.settings import build_settings

    settings = build_settings(None, None, tiny_models.settings("diffusion", width=64, height=32))
    cost = footprint(settings)
    width, height = cost.largest(64, 32, 8 * 2**30)
    assert abs(width / height - 2) < 0.05 and width % cost.factor == height % cost.factor == 0
    assert cost.bytes_at(width, height) <= 8 * 2**30 < cost.bytes_at(width + 2 * cost.factor, height + cost.factor)
    lean = footprint(settings.replace(checkpointing=True))
    assert lean.bytes_at(512, 512) < cost.bytes_at(512, 512)


def test_cuda_reads_its_free_memory(monkeypatch):
    import torch

    from artgen.memory import available_bytes

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * 2**30, 80 * 2**30))
    assert available_bytes(torch.device("cuda")) == 3 * 2**30
    assert available_bytes(torch.device("cpu")) > 0


@pytest.mark.parametrize("preset", ["default", "fast", "quality", "wikiart", "diffusion-256", "diffusion-512",
                                    "offline", "offline-vqgan"])
def test_the_presets_fit_a_24_gib_machine(monkeypatch, preset):
    """A 24 GiB machine has about 22 GiB available with the system running: no preset's size is refused there."""
    import torch

    from artgen.memory import check_fits
    from artgen.settings import build_settings

    monkeypatch.setattr("artgen.memory.available_bytes", lambda device: 22 * 2**30)
    check_fits(build_settings(preset, None, {"prompts": ["x"]}), torch.device("cpu"))


def test_a_normal_size_runs(artgen, tiny_models):
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "--cutn", "2", "--seed", "0")
    assert result.code == 0, result.err


# --- values that pass validation but make nonsense ---

@pytest.mark.parametrize("flag, value, words", [
    ("--zoom", "0:(1), 1:(1e30)", ("--zoom gives 1e+30 at frame 1", "(0, 10]")),
    ("--angle", "1e30", ("--angle gives 1e+30 at frame 0", "[-360, 360]")),
    ("--translation-x", "0:(0), 1:(-40)", ("--translation-x gives -40 at frame 1", "[-32, 32]")),
    ("--translation-y", "1e30", ("--translation-y", "[-32, 32]")),
    ("--steps-per-frame", "1e30", ("--steps-per-frame gives", "at most 100000")),
])
def test_camera_schedules_out_of_range_are_refused(artgen, tiny_models, no_allocation, flag, value, words):
    result = artgen("animate", "x", *tiny_models.vqgan_flags, "--steps", "1", "--frames", "2", flag, value)
    one_error(result, *words)
    assert result.code == 2


@pytest.mark.parametrize("prompt, words", [
    ("a red circle:1e308", ("weight 1e+308 is outside -10000 to 10000",)),
    ("a red circle:-2e4", ("weight -20000 is outside",)),
    ("a red circle:1:100", ("stop 100 is outside -4.93 to 4.93",)),
])
def test_prompt_weights_and_stops_are_bounded(artgen, tiny_models, prompt, words):
    result = artgen("generate", prompt, *tiny_models.vqgan_flags, "--steps", "1")
    one_error(result, *words)
    assert result.code == 2


def test_a_nan_or_inf_tail_is_read_as_text_with_a_warning(artgen, tiny_models):
    result = artgen("generate", "a red circle:nan|a blue square: -Inf", *tiny_models.vqgan_flags, "--steps", "1",
                    "--cutn", "2")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "read as part of the text" in line]
    assert len(warnings) == 2 and "'nan'" in warnings[0] and "'-Inf'" in warnings[1], result.err


def test_a_prompt_longer_than_clip_reads_warns_once_with_the_ignored_words(artgen, tiny_models):
    words = [f"{colour} {shape}" for colour in ("red", "blue", "green") for shape in ("circle", "square", "star")]
    prompt = " ".join(words * 20)
    result = artgen("generate", prompt, *tiny_models.vqgan_flags, "--clip", "artgen-tiny-clip", "--steps", "1",
                    "--cutn", "2")  # two CLIP models with the same tokenizer: still one warning
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "is longer than CLIP" in line]
    assert len(warnings) == 1, result.err
    quoted = re.search(r"from '(.*)' on$", warnings[0]).group(1)
    assert quoted.endswith(" ...") and len(quoted.split()) == 9 and quoted.removesuffix(" ...") in prompt
    short = artgen("generate", "a red circle", *tiny_models.vqgan_flags, "--steps", "1", "--cutn", "2")
    assert "longer than" not in short.err


def diverged(on_cuda: bool = False, **values) -> str:
    import torch

    from artgen.session import diverged_message
    from artgen.settings import build_settings

    device = torch.device("cuda" if on_cuda else "cpu")
    settled = {"precision": "fp32"}  # a run's message sees its precision settled (never auto)
    return diverged_message(build_settings(None, None, {"prompts": ["x"], "device": "cpu", **settled, **values}),
                            device, 3, math.nan)


def test_the_divergence_message_names_causes_of_this_run():
    vqgan = diverged()
    assert "--lr (now 0.1)" in vqgan and "--clamp-max" not in vqgan and "CUDA" not in vqgan
    assert "fp16" not in vqgan and "--precision" not in vqgan
    diffusion = diverged(generator="diffusion", clip_guidance_scale=5000.0)
    assert "--lr" not in diffusion and "--clip-guidance-scale (now 5000.0)" in diffusion
    assert "--clamp-max (now 0.05)" in diffusion and "--no-diffusion-fp16" not in diffusion
    assert "--precision fp32, now bf16" in diverged(precision="bf16")
    assert "prompt weight (5000 on 'a red circle')" in diverged(prompts=["a red circle:5000"])
    assert "--no-diffusion-fp16" in diverged(on_cuda=True, generator="diffusion")
