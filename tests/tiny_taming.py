"""Tiny VQGANs written exactly as taming-transformers writes them: a ``.yaml`` config and a Lightning ``.ckpt``.

The checkpoint is the dict Lightning saves (epoch, global_step, state_dict with the training-only ``loss.*``
weights, optimizer states, and callback states keyed by the ``ModelCheckpoint`` class itself), so the loader
meets the same pickle the real downloads hold. pytorch_lightning is not installed here, so while saving a
module of that name is put in ``sys.modules`` for pickle to name the class; the bytes are the same.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch
import yaml
from tiny_unet import randomize_

from artgen.models.vqgan import TRANSFORMER_TARGET, VQGAN

# The f16 architecture of vqgan_imagenet_f16_16384 (five levels, attention at 16x16), narrowed to 32 channels.
TINY_F16_DDCONFIG = {
    "double_z": False, "z_channels": 8, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0,
}
# The Gumbel f8 model's layout (four levels, attention at 32x32 in a 256 model), narrowed the same way.
TINY_F8_DDCONFIG = {**TINY_F16_DDCONFIG, "ch_mult": [1, 1, 2, 4], "attn_resolutions": [8], "z_channels": 8}

LOSS_CONFIG = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
               "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 250001,
                          "disc_weight": 0.8, "codebook_weight": 1.0}}


def taming_config(gumbel: bool = False, n_embed: int = 64, embed_dim: int = 8) -> dict[str, Any]:
    """The content of a taming VQModel / GumbelVQ .yaml, with the keys the real files carry."""
    params: dict[str, Any] = {"embed_dim": embed_dim, "n_embed": n_embed, "monitor": "val/rec_loss",
                              "ddconfig": dict(TINY_F8_DDCONFIG if gumbel else TINY_F16_DDCONFIG),
                              "lossconfig": LOSS_CONFIG}
    if gumbel:
        params["kl_weight"] = 1.0e-08
        params["temperature_scheduler_config"] = {
            "target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
            "params": {"warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9, "lr_max": 0.9,
                       "lr_min": 1.0e-06}}
    target = "taming.models.vqgan.GumbelVQ" if gumbel else "taming.models.vqgan.VQModel"
    return {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}


def transformer_config(first_stage: dict[str, Any]) -> dict[str, Any]:
    """A Net2NetTransformer config (as sflckr ships) whose first stage is the given VQ model."""
    return {"model": {"base_learning_rate": 4.5e-06, "target": TRANSFORMER_TARGET, "params": {
        "cond_stage_key": "segmentation",
        "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                               "params": {"vocab_size": 64, "block_size": 16, "n_layer": 1, "n_head": 1, "n_embd": 8}},
        "first_stage_config": first_stage["model"],
        "cond_stage_config": {"target": "taming.models.vqgan.VQModel", "params": {}},
    }}}


def random_vqgan(config: dict[str, Any], seed: int = 0) -> VQGAN:
    """Our VQGAN for a config, every parameter random (norm scales near 1) so no layer can hide."""
    return randomize_(VQGAN.from_config(config), seed).eval()


def lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, Any], types.ModuleType]:
    """Wrap a state dict the way pytorch_lightning 1.x saves a training run; also returns the callback's module."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    model_checkpoint = type("ModelCheckpoint", (), {"__module__": module.__name__})
    module.ModelCheckpoint = model_checkpoint
    state = dict(state_dict)
    state["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    state["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 4, 1, 1)
    return {"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8", "state_dict": state,
            "callbacks": {model_checkpoint: {"best_model_score": torch.tensor(0.5), "best_model_path": "last.ckpt"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-06, "params": [0]}]}],
            "lr_schedulers": []}, module


def save_lightning(checkpoint: dict[str, Any], module: types.ModuleType, path: Path) -> None:
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", module.__name__]
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update({name: types.ModuleType(name) for name in names[:2]})
    sys.modules[module.__name__] = module
    try:
        torch.save(checkpoint, path)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def write_tiny_taming(folder: str | Path, gumbel: bool = False, seed: int = 0, name: str = "tiny-vqgan",
                      as_transformer: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.yaml`` and ``<name>.ckpt`` for a random tiny VQGAN; returns (config, checkpoint)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = taming_config(gumbel)
    state = random_vqgan(config, seed).state_dict()
    if as_transformer:
        config = transformer_config(config)
        state = {f"first_stage_model.{key}": value for key, value in state.items()}
        state["transformer.tok_emb.weight"] = torch.zeros(64, 8)
        state["cond_stage_model.quantize.embedding.weight"] = torch.zeros(4, 8)
    config_path, checkpoint_path = folder / f"{name}.yaml", folder / f"{name}.ckpt"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoint, module = lightning_checkpoint(state)
    save_lightning(checkpoint, module, checkpoint_path)
    return config_path, checkpoint_path
