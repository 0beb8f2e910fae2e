"""A tiny guided-diffusion UNet in the real checkpoint format, for tests that need a diffusion model."""

from __future__ import annotations

from pathlib import Path

import torch

from artgen.models.unet import UNetConfig, create_unet


def tiny_unet_config() -> UNetConfig:
    """32x32, two levels (32 and 64 channels), attention at 16x16 and in the middle: fast on a CPU."""
    return UNetConfig(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                      attention_resolutions="16", num_heads=4, num_head_channels=16)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values, zero-initialised output layers included, so they cannot hide bugs.

    Weights get std 1/sqrt(fan_in) (outputs stay of order one), biases small offsets, norm scales 1 +- 0.1.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() > 1:
                param.copy_(noise / param[0].numel() ** 0.5)
            elif name.endswith(".weight"):  # the only 1-D weights are GroupNorm scales
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return model


def write_tiny_unet_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised tiny UNet as guided-diffusion does: a flat state dict via torch.save."""
    path = Path(path)
    model = randomize_(create_unet(tiny_unet_config()), seed)
    torch.save(model.state_dict(), path)
    return path
