"""The command line: listing commands, and bad input answered with one line and the right exit code."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from artgen.models import hub


def test_python_dash_m_and_version():
    done = subprocess.run([sys.executable, "-m", "artgen", "--version"], capture_output=True, text=True, check=True)
    assert "artgen" in done.stdout


def test_presets_lists_the_bundled_presets(artgen):
    result = artgen("presets")
    assert result.code == 0
    names = [line.split()[0] for line in result.out.splitlines()]
    assert {"default", "fast", "quality", "wikiart", "diffusion-256", "diffusion-512", "disco-like"} <= set(names)


def test_models_list_and_path(artgen, monkeypatch, tmp_path):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache"))
    listed = artgen("models", "list")
    assert listed.code == 0 and "vqgan_imagenet_f16_16384" in listed.out
    assert artgen("models", "path").out.strip() == str(tmp_path / "cache")
    where = artgen("models", "path", "vqgan_imagenet_f16_16384")
    assert where.code == 0 and str(tmp_path / "cache") in where.out and ".ckpt" in where.out
    hub.model_path("vqgan_imagenet_f16_16384", "checkpoint").parent.mkdir(parents=True, exist_ok=True)
    for role in hub.known_model("vqgan_imagenet_f16_16384").files:
        hub.model_path("vqgan_imagenet_f16_16384", role).write_bytes(b"x" * 10)
    cached = next(line for line in artgen("models", "list").out.splitlines() if "f16_16384" in line)
    assert " yes " in cached


def test_missing_model_without_network_says_where_to_place_it(artgen, monkeypatch, tmp_path):
    monkeypatch.setenv("ARTGEN_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = artgen("generate", "x", "--steps", "1", "--quiet")
    target = tmp_path / "cache" / "vqgan_imagenet_f16_16384"
    assert result.code == 1 and result.err.count("\n") == 1
    assert "cannot download vqgan_imagenet_f16_16384" in result.err
    assert f"to {target / 'model.yaml'}" in result.err and f"to {target / 'last.ckpt'}" in result.err
    assert not any(target.glob("*"))


@pytest.fixture
def bad_files(tmp_path, tiny_models):
    """A set of broken inputs in the working folder of the test."""
    Path("notes.txt").write_text("not an image")
    Path("truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save("plain.png")
    ckpt = tiny_models.vqgan_checkpoint.read_bytes()
    Path("truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 3])
    Path("garbage.ckpt").write_bytes(b"\x00garbage" * 100)
    config = yaml.safe_load(tiny_models.vqgan_config.read_text())
    config["model"]["params"]["ddconfig"]["ch"] = 64
    Path("wider.yaml").write_text(yaml.safe_dump(config))
    torch.save({"input_blocks.0.0.weight": torch.zeros(1)}, "wrong-unet.pt")
    Path("bad-preset.yaml").write_text("steps: [1,\n")
    Path("a-file").write_text("x")
    Path("unreadable.png").write_bytes(b"")
    Path("empty.mp4").write_bytes(b"")
    Path("clip.mp4").write_bytes(b"")
    Path("list.yaml").write_text("- 1\n- 2\n")
    Path("typo.yaml").write_text("stepz: 3\n")
    return tmp_path


# (arguments, exit code, words the one-line message must hold). "{vq}" stands for the tiny VQGAN's flags,
# "{df}" for the tiny diffusion model's flags.
BAD_INPUTS = [
    (["generate"], 2, "nothing to aim for"),
    (["generate", "x", "--preset", "nope"], 2, "unknown preset 'nope'"),
    (["generate", "x", "--preset", "bad-preset.yaml"], 2, "not valid YAML"),
    (["generate", "x", "--generator", "plasma"], 2, "unknown generator 'plasma'"),
    (["generate", "x", "--steps", "0"], 2, "--steps must be a positive integer"),
    (["generate", "x", "--steps", "many"], 2, "'many' is not a valid integer"),
    (["generate", "x", "--width", "-16"], 2, "--width must be a positive integer"),
    (["generate", "x", "--lr", "-1"], 2, "--lr must be a positive number"),
    (["generate", "x", "--no-such-flag"], 2, "No such option"),
    (["generate", ":2"], 2, "has no text"),
    (["generate", "x:1e999"], 2, "must be finite"),
    (["generate", "x:1..2"], 2, "'1..2' is not a number"),
    (["generate", "x", "--image-prompt", "pic.png:1.2.3"], 2, "'1.2.3' is not a number"),
    (["generate", "x", "--device", "cuda", "{vq}"], 1, "no CUDA device"),
    (["generate", "x", "--device", "tpu", "{vq}"], 1, "unknown device"),
    (["generate", "x", "--init-image", "missing.png", "{vq}"], 1, "init image"),
    (["generate", "x", "--init-image", "notes.txt", "{vq}"], 1, "init image"),
    (["generate", "x", "--init-image", "truncated.png", "{vq}"], 1, "init image"),
    (["generate", "--image-prompt", "missing.png", "{vq}"], 1, "image prompt"),
    (["generate", "x", "--vqgan-checkpoint", "truncated.ckpt", "--vqgan-config", "{vqgan_config}"], 1, "truncated"),
    (["generate", "x", "--vqgan-checkpoint", "garbage.ckpt", "--vqgan-config", "{vqgan_config}"], 1, "garbage.ckpt"),
    (["generate", "x", "--vqgan-checkpoint", "{vqgan_checkpoint}", "--vqgan-config", "wider.yaml"], 1, "has shape"),
    (["generate", "x", "--vqgan-config", "wider.yaml"], 2, "go together"),
    (["generate", "x", "--vqgan-model", "vqgan_nope"], 2, "vqgan_nope"),
    (["generate", "x", "--clip", "ViT-Q-99:openai"], 2, "unknown CLIP model 'ViT-Q-99'"),
    (["generate", "x", "-o", "a-file/out.png", "{vq}"], 1, "a-file"),
    (["generate", "x", "-o", "out.jpg", "{vq}"], 2, ".png"),
    (["generate", "x", "--from", "plain.png"], 1, "plain.png"),
    (["generate", "x", "--from", "missing.png"], 1, "missing.png"),
    (["show-settings", "notes.txt"], 1, "notes.txt"),
    (["show-settings", "plain.png"], 1, "no artgen settings"),
    (["generate", "x", "{df}", "--width", "33"], 2, "multiples of"),
    (["generate", "x", "{df}", "--skip-steps", "4"], 2, "--skip-steps 4 leaves nothing to do"),
    (["generate", "x", "{df}", "--diffusion-checkpoint", "wrong-unet.pt"], 1, "wrong-unet.pt"),
    (["generate", "x", "{df}", "--sampler", "euler"], 2, "euler"),
    (["generate", "x", "{df}", "--timestep-respacing", "ddimx"], 2, "respacing"),
    (["generate", "x", "--candidates", "2", "--keep", "3"], 2, "--keep"),
    (["models", "path", "nope"], 2, "nope"),
    (["animate", "x", "--frames", "3", "--zoom", "0:(1), 1:(1.1"], 2, "position"),
    (["animate", "x", "--frames", "3", "--zoom", "0:(1), 5:(2)"], 2, "beyond the last frame"),
    (["animate", "x", "--frames", "3", "--angle", "2:(1), 1:(2)"], 2, "increasing order"),
    (["animate", "x", "--frames", "3", "--translation-x", "0:(left)"], 2, "'left' is not a number"),
    (["animate", "x", "--frames", "3", "--init-strength", "0:(1.5)"], 2, "between 0 and 1"),
    (["animate", "x", "--frames", "3", "--steps-per-frame", "0:(0)"], 2, "1 or more"),
    (["animate", "x", "--frames", "3", "--prompts", "0:a|7:b"], 2, "beyond the last frame"),
    (["animate", "--frames", "3", "--prompts", "a|7:b"], 2, "FRAME:prompt"),
    (["animate", "x"], 2, "--frames"),
    (["animate", "x", "--frames", "2", "--fps", "0"], 2, "--fps must be a positive number"),
    (["animate", "x", "--frames", "2", "--fps", "-3"], 2, "--fps must be a positive number"),
    (["animate", "x", "--frames", "2", "--blend", "2"], 2, "--blend"),
    (["animate", "x", "--frames", "2", "--batch", "2"], 2, "without --batch"),
    (["generate", "x", "--preselect", "2"], 2, "--preselect is an option of the diffusion generator"),
    (["animate", "x", "--frames", "2", "--border", "zero"], 2, "'zero' is not one of"),
    (["animate", "x", "--frames", "2", "--resume"], 2, "--resume needs the --seed"),
    (["animate", "x", "--frames", "2", "--frames-dir", "out/{nope}"], 2, "unknown field {nope}"),
    (["stylize-video", "missing.mp4", "x"], 1, "does not exist"),
    (["stylize-video", "notes.txt", "x"], 1, "cannot read video"),
    (["stylize-video", "empty.mp4", "x"], 1, "video"),
    (["stylize-video", "clip.mp4", "x", "--every-nth", "0"], 2, "--every-nth"),
    (["encode", "nowhere"], 1, "no frame_*.png"),
    (["encode", "nowhere", "--fps", "0"], 1, "no frame_*.png"),
    (["generate", "x", "--preset", "list.yaml"], 2, "must be a mapping"),
    (["generate", "x", "--preset", "typo.yaml"], 2, "did you mean 'steps'"),
]


def expand(args: list[str], tiny_models) -> list[str]:
    out: list[str] = []
    for arg in args:
        if arg == "{vq}":
            out += tiny_models.vqgan_flags
        elif arg == "{df}":
            out += tiny_models.diffusion_flags
        else:
            out.append(arg.replace("{vqgan_config}", str(tiny_models.vqgan_config))
                       .replace("{vqgan_checkpoint}", str(tiny_models.vqgan_checkpoint)))
    return out


@pytest.mark.parametrize("args, code, words", BAD_INPUTS, ids=[" ".join(a) for a, _, _ in BAD_INPUTS])
def test_bad_input_gives_one_line_and_the_right_exit_code(artgen, bad_files, tiny_models, args, code, words):
    result = artgen(*expand(args, tiny_models), *(["--quiet"] if args[0] in ("generate", "animate", "stylize-video") else []))
    lines = [line for line in result.err.splitlines() if not line.startswith("artgen: warning")]
    assert result.code == code, result.err
    assert len(lines) == 1 and lines[0].startswith("artgen: error: "), result.err
    assert words.lower() in lines[0].lower()
    assert "Traceback" not in result.err
    assert not list(Path(".").glob("outputs/*.png"))


def test_debug_shows_the_traceback(artgen):
    with pytest.raises(Exception, match="unknown preset"):
        artgen("--debug", "generate", "x", "--preset", "nope")
