"""Shared fixtures: tiny models in the real formats, and a way to run the CLI in-process."""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from pathlib import Path

import pytest
import yaml
from tiny_clip import write_tiny_clip
from tiny_taming import write_tiny_taming
from tiny_unet import tiny_unet_config, write_tiny_unet_checkpoint

from artgen.cli import main


def require_reference(module_name: str) -> ModuleType:
    """Import a reference package a test compares against. Missing, it skips the test (or the module, at module
    level), except under CI=true, where a missing reference fails: CI must not pass by comparing nothing."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        reason = f"the reference {module_name!r} cannot be imported ({error})"
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"{reason}: under CI=true the reference comparisons must run; install the test dependencies",
                    pytrace=False)
    pytest.skip(reason, allow_module_level=True)


# The suite's tolerances and recorded numbers are fp32's, and auto picks bf16 on some CPUs only: runs with the tiny
# models pin fp32 arithmetic (a test may still ask for bf16), and tests/test_auto.py tests what auto picks.
FP32 = {"precision": "fp32", "channels_last": False}
FP32_FLAGS = ["--precision", "fp32", "--no-channels-last"]


@dataclass
class TinyModels:
    """Paths of a tiny taming VQGAN, guided-diffusion UNet and open_clip model, and the flags that use them."""

    folder: Path
    vqgan_config: Path
    vqgan_checkpoint: Path
    unet_config: Path
    unet_checkpoint: Path
    clip_config: Path
    clip_checkpoint: Path

    @property
    def clip_flags(self) -> list[str]:
        return ["--clip", "artgen-tiny-clip", "--clip-checkpoint", str(self.clip_checkpoint),
                "--clip-config", str(self.clip_config), *FP32_FLAGS]

    @property
    def vqgan_flags(self) -> list[str]:
        return ["--vqgan-config", str(self.vqgan_config), "--vqgan-checkpoint", str(self.vqgan_checkpoint),
                "--width", "32", "--height", "32", "--cutn", "4", *self.clip_flags]

    @property
    def diffusion_flags(self) -> list[str]:
        return ["--generator", "diffusion", "--diffusion-config", str(self.unet_config),
                "--diffusion-checkpoint", str(self.unet_checkpoint), "--width", "32", "--height", "32",
                "--diffusion-steps", "100", "--timestep-respacing", "4", "--cutn", "4", *self.clip_flags]

    def settings(self, generator: str = "vqgan", **overrides) -> dict:
        """Keyword settings for ``artgen.generate`` that use the tiny models."""
        values = dict(prompts=["a red circle"], clip=["artgen-tiny-clip"], clip_checkpoint=[str(self.clip_checkpoint)],
                      clip_config=[str(self.clip_config)], width=32, height=32, cutn=4, steps=4, seed=0, **FP32)
        if generator == "vqgan":
            values |= dict(vqgan_config=str(self.vqgan_config), vqgan_checkpoint=str(self.vqgan_checkpoint))
        else:
            values |= dict(generator="diffusion", diffusion_config=str(self.unet_config),
                           diffusion_checkpoint=str(self.unet_checkpoint), diffusion_steps=100, timestep_respacing="4")
        return values | overrides


@pytest.fixture
def ctrl_c_at_drive(monkeypatch):
    """``ctrl_c_at_drive(n)``: Ctrl-C at the n-th call of the run driver (an animation's n-th frame) from now on;
    ``ctrl_c_at_drive(None)`` lets the driver run again."""
    from artgen.session import Session
    real_drive = Session.drive

    def arm(call: int | None) -> None:
        calls = []

        def drive(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == call:
                raise KeyboardInterrupt
            return real_drive(self, *args, **kwargs)

        monkeypatch.setattr(Session, "drive", real_drive if call is None else drive)
    return arm


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    folder = tmp_path_factory.mktemp("tiny-models")
    vqgan_config, vqgan_checkpoint = write_tiny_taming(folder)
    unet_checkpoint = write_tiny_unet_checkpoint(folder / "tiny-unet.pt")
    unet_config = folder / "tiny-unet.yaml"
    unet_config.write_text(yaml.safe_dump(dataclasses.asdict(tiny_unet_config())))
    clip_config, clip_checkpoint, _ = write_tiny_clip(folder)
    return TinyModels(folder, vqgan_config, vqgan_checkpoint, unet_config, unet_checkpoint, clip_config, clip_checkpoint)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def artgen(capsys, monkeypatch, tmp_path):
    """Run ``artgen ARGS`` in-process in a temporary folder; returns the exit code and the captured output."""
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(arg) for arg in args])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
