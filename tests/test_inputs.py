"""Bad inputs a new user can give: each ends in one `artgen: error:` line that names what is wrong (issue 50, 6)."""

from __future__ import annotations

import os
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
    one_error(artgen(*command), "ARTGEN_HOME=", "is a file, not a folder")


def test_artgen_home_below_a_file_is_one_line(artgen, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache" / "artgen"))
    one_error(artgen("models", "list"), "ARTGEN_HOME=", "cache is a file")
