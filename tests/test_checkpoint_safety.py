"""User-supplied checkpoint files are read without running code from them, and refusals say what the file is."""

from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import open_clip
import pytest
import torch

from artgen.models.torchscript import read_torchscript
from artgen.perceptor import ClipSpec, load_perceptor

CPU = torch.device("cpu")
TORCH_WARNINGS = ("Warning", "Detected pickle protocol", "torch.jit.load", "weights_only")


class Payload(torch.nn.Module):
    """A scripted module whose __setstate__ writes to the file named in its state when torch.jit.load runs it."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.target = target
        self.written = torch.zeros(16, dtype=torch.uint8)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.weight, self.target, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        self.written = torch.from_file(state[1], shared=True, size=16, dtype=torch.uint8).fill_(65)
        self.weight = state[0]
        self.target = state[1]
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class Boom:
    """Pickled code: unpickling it calls print."""

    def __reduce__(self):
        return (print, ("pwned",))


def tiny_clip(tiny_models, quick_gelu: bool = False) -> torch.nn.Module:
    """The tiny open_clip model: OpenAI's module and parameter names, random weights."""
    torch.manual_seed(1)
    return open_clip.create_model("artgen-tiny-clip", pretrained=None, force_quick_gelu=quick_gelu).eval()


def save_traced(model: torch.nn.Module, path: Path) -> Path:
    traced = torch.jit.trace(model, (torch.rand(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)),
                             check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def run_cli(artgen, *args: str):
    """Run the CLI with every Python warning shown, so that one leaking to the user lands in ``err``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = artgen(*args)
    result.err += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    return result


def generate(artgen, tiny_models, *flags: str, clip_checkpoint: Path | None = None):
    """A one-step VQGAN run with the tiny models, with some of their files replaced."""
    base = list(tiny_models.vqgan_flags)
    if clip_checkpoint is not None:
        base[base.index("--clip-checkpoint") + 1] = str(clip_checkpoint)
    return run_cli(artgen, "generate", "a red circle", *base, *flags, "--steps", "1", "--quiet", "-o", "out.png")


def assert_one_error(result, *words: str) -> None:
    lines = result.err.strip().splitlines()
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("artgen: error:"), result.err
    assert all(word in lines[0] for word in words), lines[0]
    assert not any(text in result.err for text in TORCH_WARNINGS), result.err


def test_a_torchscript_clip_with_a_scripted_setstate_runs_nothing(artgen, tiny_models, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_bytes(b"x" * 16)
    for target in (existing, tmp_path / "new.txt"):
        evil = tmp_path / f"evil-{target.stem}.pt"
        torch.jit.script(Payload(str(target))).save(str(evil))
        result = generate(artgen, tiny_models, clip_checkpoint=evil)
        assert_one_error(result, "TorchScript archive", "__setstate__", "never runs")
    assert existing.read_bytes() == b"x" * 16
    assert not (tmp_path / "new.txt").exists()


def test_a_torchscript_archive_naming_other_code_is_refused(artgen, tiny_models, tmp_path):
    archive = save_traced(tiny_clip(tiny_models), tmp_path / "clip.pt")
    forged = tmp_path / "forged.pt"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(forged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, pickle.dumps(Boom(), protocol=2) if item.filename.endswith("/data.pkl") else data)
    assert_one_error(generate(artgen, tiny_models, clip_checkpoint=forged), "TorchScript archive", ".print, which is not")


def test_a_traced_openai_layout_clip_reads_to_exactly_its_weights(artgen, tiny_models, tmp_path):
    model = tiny_clip(tiny_models)
    archive = save_traced(model, tmp_path / "clip.pt")
    state = read_torchscript(archive).state
    reference = torch.jit.load(str(archive)).state_dict()  # safe here: the test wrote this archive itself
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    loaded = load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(archive)), CPU).model
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())
    result = generate(artgen, tiny_models, clip_checkpoint=archive)
    assert result.code == 0 and result.err.strip() == "", result.err


def test_openai_weights_build_the_model_with_quick_gelu(artgen, tiny_models, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="artgen")
    archive = save_traced(tiny_clip(tiny_models, quick_gelu=True), tmp_path / "quick.pt")
    state = {k: v.contiguous() for k, v in tiny_clip(tiny_models).state_dict().items()}
    with_metadata = tmp_path / "openai-state.pt"
    torch.save(state | {"input_resolution": torch.tensor(32), "context_length": torch.tensor(77),
                        "vocab_size": torch.tensor(49408)}, with_metadata)
    for path in (archive, with_metadata):
        caplog.clear()
        model = load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(path)), CPU).model
        assert isinstance(model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
        assert [r.message for r in caplog.records if r.name == "artgen" and "QuickGELU" in r.message]
    result = generate(artgen, tiny_models, clip_checkpoint=archive)
    warnings = result.err.strip().splitlines()
    assert result.code == 0 and len(warnings) == 1 and "QuickGELU" in warnings[0], result.err
    plain = load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(tiny_models.clip_checkpoint)), CPU)
    assert not isinstance(plain.model.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)


def test_a_protocol_4_state_dict_loads_without_torch_warnings(artgen, tiny_models, tmp_path):
    state = torch.load(tiny_models.clip_checkpoint, weights_only=True)
    clip4 = tmp_path / "clip4.pt"
    torch.save(state, clip4, pickle_protocol=4)
    unet4 = tmp_path / "unet4.pt"
    torch.save(torch.load(tiny_models.unet_checkpoint, weights_only=True), unet4, pickle_protocol=4)
    loaded = load_perceptor(ClipSpec("artgen-tiny-clip", None, checkpoint=str(clip4)), CPU).model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    flags = list(tiny_models.diffusion_flags)
    flags[flags.index("--diffusion-checkpoint") + 1] = str(unet4)
    result = run_cli(artgen, "generate", "a red circle", *flags, "--steps", "1", "--quiet", "-o", "out.png")
    assert result.code == 0 and result.err.strip() == "", result.err


@pytest.mark.parametrize("kind", ["bare pickle", "protocol 4 code", "old format 4", "truncated"])
def test_unloadable_checkpoints_say_what_they_are(artgen, tiny_models, tmp_path, kind):
    state = torch.load(tiny_models.unet_checkpoint, weights_only=True)
    path = tmp_path / "unet.pt"
    if kind == "bare pickle":
        path.write_bytes(pickle.dumps(state))
        words = ("bare Python pickle", "protocol 4", "torch.save(state_dict, path)")
    elif kind == "protocol 4 code":
        torch.save({"x": Boom()}, path, pickle_protocol=4)
        words = ("contains pickled code", "builtins.print")
    elif kind == "old format 4":
        torch.save(state, path, pickle_protocol=4, _use_new_zipfile_serialization=False)
        words = ("old-format", "protocol 4", "torch.save(state_dict, path)")
    else:
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[:3000])
        words = ("unreadable or truncated",)
    flags = list(tiny_models.diffusion_flags)
    flags[flags.index("--diffusion-checkpoint") + 1] = str(path)
    assert_one_error(run_cli(artgen, "generate", "a red circle", *flags, "--steps", "1", "--quiet"), "diffusion checkpoint", *words)


@pytest.mark.parametrize("flag", ["--diffusion-checkpoint", "--vqgan-checkpoint"])
def test_a_torchscript_archive_as_a_model_checkpoint_says_so(artgen, tiny_models, tmp_path, flag):
    archive = save_traced(tiny_clip(tiny_models), tmp_path / "script.pt")
    flags = list(tiny_models.diffusion_flags if flag == "--diffusion-checkpoint" else tiny_models.vqgan_flags)
    flags[flags.index(flag) + 1] = str(archive)
    expected = "guided-diffusion UNet .pt state dict" if "diffusion" in flag else "taming-transformers Lightning .ckpt"
    assert_one_error(run_cli(artgen, "generate", "a red circle", *flags, "--steps", "1", "--quiet"), "is a TorchScript archive", expected)
