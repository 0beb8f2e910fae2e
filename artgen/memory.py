"""Will this size fit? A coarse, honest estimate of a run's memory, checked before anything big is allocated.

A run's memory at large sizes is dominated by the generator's activations, kept for the backward pass: the
VQGAN decoder's (or the UNet's) feature maps at every resolution level, times the batch, which grow with the
pixel count P; and its self-attention blocks, whose heads x T x T weights (T = P / rate^2 positions) grow with
P squared. The cutouts (cutn x 3 x S x S at the perceptor's input size S), the VQGAN's diffusion prior (it runs
at its UNet's own size) and the models do not grow. The
estimate counts, per output pixel, the channels of every block at every level scaled by that level's share of
the pixels (``units``), and the attention weights per P^2, then multiplies by calibrated constants and a safety
factor.

Calibration (benchmarks/memory_calibration.py): peak RSS (VmHWM from /proc/self/status, a fresh process per
run) of one 2-step CPU run, cutn 2, at 64x64 and 192x192, for the tiny test models and the bundled shapes
models. The growth between the two sizes, measured against estimated (before the safety factor), on
2026-12-07: tiny VQGAN 269 / 280 MiB, shapes VQGAN 180 / 186, tiny UNet 9388 / 10519 (its attention at half
resolution dominates), shapes UNet 1976 / 1874: within 0.95-1.12x, and SAFETY covers the rest. Model weights,
CLIP and torch itself are not counted: they do not depend on the size, so the check refuses only sizes whose
own activations cannot fit. The bundled presets at their sizes estimate 3 GiB (default) to 16 GiB
(diffusion-512, fp32 on a CPU), so none is refused on a 24 GiB machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .settings import Settings

BYTES_PER_UNIT = 4 * 15.0   # float32 x the tensors a block keeps for backward per channel (conv, norm, swish, ...)
BYTES_PER_IMAGE_VALUE = 4 * 24.0  # float32 x the full-size copies of the image itself (decode, clamp, losses)
BYTES_PER_CUTOUT_VALUE = 4 * 8.0  # float32 x the copies of each cutout (grid sample, augmentations, noise)
SAFETY = 1.25               # what the count leaves out (skip concatenations, upsampling, allocator slack)
CLIP_INPUT = 224            # the usual CLIP input side, when the model's config is not at hand
# taming-transformers' decoder of every downloadable VQGAN (imagenet, wikiart, coco, gumbel): used when the
# config is not in the cache yet, so that the check needs no download
TAMING_DDCONFIG = {"ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                   "resolution": 256}


@dataclass(frozen=True)
class Footprint:
    """Bytes per output pixel and per pixel squared (for the whole batch), and fixed bytes, of what a size costs."""

    per_pixel: float
    per_pixel_squared: float
    fixed: float
    factor: int       # sizes must be multiples of this
    what: str         # what dominates, for the message

    def bytes_at(self, width: int, height: int) -> float:
        pixels = width * height
        return SAFETY * (self.per_pixel_squared * pixels ** 2 + self.per_pixel * pixels + self.fixed)

    def largest(self, width: int, height: int, available: float) -> tuple[int, int] | None:
        """The largest size of the same aspect ratio that fits ``available`` bytes, or None when none does."""
        a, b, c = self.per_pixel_squared, self.per_pixel, self.fixed - available / SAFETY
        pixels = -c / b if a == 0 else (-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)
        if pixels < self.factor ** 2:
            return None
        scale = math.sqrt(pixels / (width * height))
        side = lambda n: max(self.factor, int(n * scale) // self.factor * self.factor)  # noqa: E731
        return side(width), side(height)


def _levels(channels: list[float], blocks: int) -> list[float]:
    """Units of each level: its channels times its blocks, over the share of output pixels it holds (1/4 a level)."""
    return [c * blocks / 4 ** level for level, c in enumerate(channels)]


def _activation_bytes(levels: list[float], checkpointing: bool) -> float:
    """Bytes per output pixel kept at once: every level's saved tensors; with checkpointing only each block's
    input (one float32 per unit) plus the saved tensors of the one level being recomputed."""
    if checkpointing:
        return 4 * sum(levels) + BYTES_PER_UNIT * max(levels)
    return BYTES_PER_UNIT * sum(levels)


def _attention(blocks: list[tuple[int, int, int]]) -> float:
    """Attention bytes per pixel squared of (rate, heads, count) blocks: each keeps its softmax (heads x T^2
    float32) for backward, measured as about 1.5 copies a block, and the largest needs two more at once in the
    backward pass (the gradients of the weights and of the scores)."""
    kept = sum(heads * count / rate ** 4 for rate, heads, count in blocks)
    return 4 * (1.5 * kept + 2 * max(heads / rate ** 4 for rate, heads, _ in blocks))


def vqgan_shape(ddconfig: dict[str, Any]) -> tuple[list[float], float, int]:
    """The decoder's units per level (full resolution first), attention bytes per P^2, downsampling factor."""
    mult = list(ddconfig["ch_mult"])
    blocks, lowest = ddconfig["num_res_blocks"] + 1, len(mult) - 1
    attention = [(2 ** level, 1, blocks) for level in range(len(mult))
                 if ddconfig["resolution"] // 2 ** level in ddconfig.get("attn_resolutions", [])]
    attention.append((2 ** lowest, 1, 1))  # the middle block's
    return _levels([ddconfig["ch"] * m for m in mult], blocks), _attention(attention), 2 ** lowest


def unet_shape(config: Any) -> tuple[list[float], float, int]:
    """The UNet's units per level (encoder and decoder blocks), attention bytes per P^2, downsampling factor."""
    from .models.unet import _attention_downsample_rates, _channel_mult

    mult = _channel_mult(config)
    channels = [config.num_channels * m for m in mult]
    blocks, lowest = 2 * config.num_res_blocks + 1, len(mult) - 1

    def heads(level: int) -> int:
        return (config.num_heads if config.num_head_channels == -1
                else max(1, int(channels[level]) // config.num_head_channels))

    rates = _attention_downsample_rates(config)
    attention = [(2 ** level, heads(level), blocks) for level in range(len(mult)) if 2 ** level in rates]
    attention.append((2 ** lowest, heads(lowest), 1))  # the middle block's
    return _levels(channels, blocks), _attention(attention), 2 ** lowest


@dataclass(frozen=True)
class NetworkShape:
    """A generator network's activation profile, from its architecture: what a generator's options report."""

    levels: Any       # as from vqgan_shape / unet_shape
    attention: float
    factor: int
    what: str
    half: bool = False  # activations in half precision


def footprint(settings: Settings, device: torch.device = torch.device("cpu"),
              clip_input: int = CLIP_INPUT) -> Footprint:
    """What the run's size costs, from the generator's architecture (read from local files only)."""
    shape = settings.options.network_shape(device.type == "cuda")
    per_pixel = _activation_bytes(shape.levels, settings.run.checkpointing) + BYTES_PER_IMAGE_VALUE * 3
    attention = shape.attention
    if shape.half:
        per_pixel, attention = per_pixel / 2, attention / 2
    cutouts = max(settings.run.cutn, 1) * 3 * clip_input ** 2 * BYTES_PER_CUTOUT_VALUE
    batch = settings.run.batch
    return Footprint(per_pixel * batch, attention * batch, cutouts * batch, shape.factor, shape.what)


def vqgan_ddconfig(model: str, config: str | None) -> dict[str, Any]:
    """The decoder settings of a taming config (a local file, or the known model's when cached), else taming's."""
    from .models import hub
    from .models.vqgan import read_config

    path = Path(config) if config else hub.model_path(model, "config")
    if not config and not path.is_file():
        return TAMING_DDCONFIG
    try:
        return read_config(path)["model"]["params"]["ddconfig"]
    except (KeyError, TypeError):
        return TAMING_DDCONFIG  # a malformed config is reported by the loader, with its own message


def available_bytes(device: torch.device) -> int:
    """Memory a run may still take: free CUDA memory, or the kernel's MemAvailable (RAM plus reclaimable cache)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(settings: Settings, device: torch.device) -> None:
    """Refuse, in one line, a size whose estimated memory exceeds what this device has free."""
    cost = footprint(settings, device)
    needed = cost.bytes_at(settings.width, settings.height)
    available = available_bytes(device)
    if needed <= available:
        return
    where = "GPU memory free" if device.type == "cuda" else "memory available"
    routes = []
    largest = cost.largest(settings.width, settings.height, available)
    if largest:
        routes.append(f"the largest size that fits is about --width {largest[0]} --height {largest[1]}")
    if not settings.checkpointing:
        lean_cost = footprint(settings.replace(checkpointing=True), device)
        lean = lean_cost.largest(settings.width, settings.height, available)
        if lean and (not largest or lean[0] > largest[0]):
            routes.append(f"--checkpointing fits up to about {lean[0]}x{lean[1]}")
    if settings.batch > 1:
        routes.append("a smaller --batch")
    fix = "; ".join(routes) or "this device has too little memory for any size of this model"
    checkpointed = " with gradient checkpointing" if settings.checkpointing else ""
    raise UserError(f"{settings.width}x{settings.height} needs about {readable(needed)} for {cost.what}{checkpointed} "
                    f"(estimate), more than the {readable(available)} of {where} on {device.type}: {fix}")


def readable(count: float) -> str:
    """Bytes in GiB, or in MiB below one GiB (where 0.0 GiB would say nothing)."""
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.0f} MiB"
