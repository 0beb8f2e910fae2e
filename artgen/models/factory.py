"""Building models from names and paths: a known model's name, or local config and checkpoint files.

Callers pass plain values (a name, paths, a device), never a settings object, so a generator, the VQGAN's
diffusion prior, training scripts and tests build models the same way. Local files win over a name; a name is
resolved to local files by hub.py (the bundled models, or the cache, downloading when missing). The UNet
architectures of the known guided-diffusion checkpoints are data files in ``configs/<name>.yaml`` beside the
registry, read like a user's own --diffusion-config; a known model that carries its own config (the bundled
one) uses that instead.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import torch
import yaml

from ..errors import UsageError
from ..files import readable_file
from . import hub
from .unet import UNetConfig, UNetModel, load_unet
from .vqgan import VQGAN, load_vqgan

DIFFUSION_CONFIG_FLAG = "--diffusion-config"
"""The option that names a local UNet config; a caller with options of its own names (the prior) passes its
flag instead, so errors point at what the user typed."""


def vqgan_files(model: str, config: str | Path | None, checkpoint: str | Path | None) -> tuple[Path, Path]:
    """The .yaml and .ckpt to load: the local files when both are given, else the known model's."""
    if config and checkpoint:
        return Path(config), Path(checkpoint)
    files = hub.resolve_all(model, kind="vqgan")  # fetches or names every missing file at once
    return files["config"], files["checkpoint"]


def load_vqgan_model(model: str, config: str | Path | None, checkpoint: str | Path | None,
                     device: torch.device) -> VQGAN:
    """A frozen VQGAN on ``device``, from local files or the known model ``model``."""
    config_path, checkpoint_path = vqgan_files(model, config, checkpoint)
    return load_vqgan(config_path, checkpoint_path, map_location=device)


def architecture_file(model: str) -> Path:
    """Where the UNet architecture of the known guided-diffusion model ``model`` is kept (package data)."""
    return Path(str(resources.files("artgen.models") / "configs" / f"{model}.yaml"))


def unet_config(model: str, config_path: str | Path | None,
                config_flag: str = DIFFUSION_CONFIG_FLAG) -> UNetConfig:
    """The UNet architecture: from the local YAML when given, else the known model's (its own config file
    when it carries one, else its architecture file)."""
    if config_path:
        return _config_from_file(Path(config_path), config_flag)
    known = hub.known_model(model, "diffusion")
    if "config" in known.files:  # a model that carries its own config, such as the bundled one
        return _config_from_file(hub.resolve(model, "config", kind="diffusion"), config_flag)
    return _config_from_file(architecture_file(model), "UNet architecture")


def _config_from_file(path: Path, what: str) -> UNetConfig:
    """The UNetConfig in a YAML file; ``what`` names the file in errors (the option that gave it)."""
    readable_file(path, what, error=UsageError)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as error:
        raise UsageError(f"{what} {path} is not readable YAML ({type(error).__name__}): fix the file") from None
    names = {f.name for f in dataclasses.fields(UNetConfig)}
    if not isinstance(values, dict) or not set(values) <= names:
        unknown = sorted(set(values) - names) if isinstance(values, dict) else "not a mapping"
        raise UsageError(f"{what} {path}: expected UNet settings ({', '.join(sorted(names))}); "
                         f"got {unknown}")
    return UNetConfig(**values)


def load_unet_model(model: str, checkpoint: str | Path | None, config_path: str | Path | None,
                    device: torch.device, fp16: bool, config_flag: str = DIFFUSION_CONFIG_FLAG) -> UNetModel:
    """A frozen UNet on ``device`` from a local checkpoint or the known model's; its torso in half precision
    when ``fp16`` and the device is CUDA (``fp16`` is ignored elsewhere)."""
    config = unet_config(model, config_path, config_flag)
    if device.type == "cuda" and fp16:
        config = dataclasses.replace(config, use_fp16=True)
    local = config_flag.replace("-config", "-checkpoint") + " PATH"  # --prior-checkpoint for the VQGAN's prior
    path = Path(checkpoint) if checkpoint else hub.resolve(model, "checkpoint", kind="diffusion", local_flags=local)
    return load_unet(path, config, map_location=device)
