"""A tiny open_clip model in the real formats (a model-config JSON + a state-dict checkpoint), for tests."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_clip(folder: Path, name: str = "artgen-tiny-clip", seed: int = 0) -> tuple[Path, Path, Path]:
    """Write ``<name>.json`` (an open_clip model config), and its random weights as ``.pt`` and ``.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    checkpoint = folder / f"{name}.pt"
    torch.save(state, checkpoint)
    safetensors = folder / f"{name}.safetensors"
    save_file(state, str(safetensors))
    return config, checkpoint, safetensors
