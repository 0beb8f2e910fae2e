"""A UNet whose state dict is interchangeable with OpenAI guided-diffusion's ``UNetModel``.

Module names and parameter shapes follow that layout exactly, so the released checkpoints
(``256x256_diffusion_uncond.pt``, ``512x512_diffusion_uncond_finetune_008100.pt``) load unchanged:
``time_embed.*``, ``input_blocks.N.M.*``, ``middle_block.*``, ``output_blocks.*``, ``out.*``. Only 2-D
images are supported, and gradient checkpointing is left out: inference is all artgen needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from .checkpoints import load_safely

NUM_CLASSES = 1000  # ImageNet labels, for class-conditional checkpoints

# The per-level channel multipliers guided-diffusion picks when channel_mult is left empty.
DEFAULT_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


@dataclass
class UNetConfig:
    """Architecture of a guided-diffusion UNet; field names match its ``model_and_diffusion_defaults``."""

    image_size: int = 256
    num_channels: int = 256
    num_res_blocks: int = 2
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_resolutions: str = "32,16,8"
    channel_mult: str = ""
    dropout: float = 0.0
    learn_sigma: bool = True
    class_cond: bool = False
    use_checkpoint: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    use_fp16: bool = False
    use_new_attention_order: bool = False


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of (possibly fractional) timesteps: cosines first, then sines, as trained."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    angles = timesteps.float()[:, None] * freqs[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm over 32 groups, computed in float32 even when the torso runs in half precision."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding, optionally resampling by 2 (``up``/``down``)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), _conv3x3(channels, out_channels))
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _conv3x3(out_channels, out_channels))
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # Resampling happens between the activation and the first conv, on both branches.
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self._resample(norm_act(x)))
        x = self._resample(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = out_rest(out_norm(h + emb_out))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all spatial positions, with a residual connection."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        elif channels % num_head_channels:
            raise ValueError(f"{channels} attention channels do not split into heads of {num_head_channels}")
        else:
            self.num_heads = channels // num_head_channels
        # The legacy order packs each head's q, k, v together; the new order packs all q, then all k, all v.
        self.new_order = use_new_attention_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def _split_heads(self, qkv: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, width, length = qkv.shape
        head_ch = width // (3 * self.num_heads)
        if self.new_order:
            return tuple(part.reshape(batch * self.num_heads, head_ch, length) for part in qkv.chunk(3, dim=1))
        return qkv.reshape(batch * self.num_heads, 3 * head_ch, length).split(head_ch, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, *spatial = x.shape
        x = x.reshape(batch, channels, -1)
        q, k, v = self._split_heads(self.qkv(self.norm(x)))
        # Scaling q and k by ch^-1/4 each (rather than the product by ch^-1/2) keeps fp16 in range.
        scale = q.shape[1] ** -0.25
        weights = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        weights = torch.softmax(weights.float(), dim=-1).type(weights.dtype)
        attended = torch.einsum("bts,bcs->bct", weights, v).reshape(batch, channels, -1)
        return (x + self.proj_out(attended)).reshape(batch, channels, *spatial)


class TimestepSequential(nn.Sequential):
    """A stage of the UNet: passes the time embedding to the ResBlocks among its layers."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Strided 3x3 conv halving the resolution (used when ``resblock_updown`` is off)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = _conv3x3(channels, channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling followed by a 3x3 conv (used when ``resblock_updown`` is off)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _channel_mult(config: UNetConfig) -> tuple[float, ...]:
    if config.channel_mult:
        try:
            return tuple(float(m) for m in config.channel_mult.split(","))
        except ValueError:
            raise UserError(f"bad channel_mult {config.channel_mult!r}: "
                            "give comma-separated numbers like '1,2,4'") from None
    if config.image_size not in DEFAULT_CHANNEL_MULT:
        sizes = ", ".join(str(s) for s in DEFAULT_CHANNEL_MULT)
        raise UserError(f"no default channel_mult for image_size {config.image_size}: "
                        f"use one of {sizes} or set channel_mult explicitly")
    return DEFAULT_CHANNEL_MULT[config.image_size]


def downsample_factor(config: UNetConfig) -> int:
    """How much the UNet shrinks an image at its lowest level: image sides must be multiples of this."""
    return 2 ** (len(_channel_mult(config)) - 1)


def _attention_downsample_rates(config: UNetConfig) -> set[int]:
    """Resolutions like "32,16,8" become the downsampling factors at which attention is applied."""
    try:
        return {config.image_size // int(res) for res in config.attention_resolutions.split(",")}
    except ValueError:
        raise UserError(f"bad attention_resolutions {config.attention_resolutions!r}: "
                        "give comma-separated resolutions like '32,16,8'") from None


class UNetModel(nn.Module):
    """The guided-diffusion UNet: predicts noise (and, with learn_sigma, the variance interpolation)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.checkpointing = config.use_checkpoint  # gradient checkpointing of every block
        self.config = config
        self.image_size = config.image_size
        self.in_channels = 3
        self.out_channels = 6 if config.learn_sigma else 3
        self.model_channels = config.num_channels
        self.dtype = torch.float16 if config.use_fp16 else torch.float32
        mults = _channel_mult(config)
        self._attention_rates = _attention_downsample_rates(config)
        emb_dim = 4 * config.num_channels
        self.time_embed = nn.Sequential(nn.Linear(config.num_channels, emb_dim), nn.SiLU(),
                                        nn.Linear(emb_dim, emb_dim))
        if config.class_cond:
            self.label_emb = nn.Embedding(NUM_CLASSES, emb_dim)
        skip_channels = self._build_encoder(mults, emb_dim)
        ch = skip_channels[-1]
        self.middle_block = TimestepSequential(self._res(ch, ch, emb_dim),
                                               self._attention(ch, config.num_heads),
                                               self._res(ch, ch, emb_dim))
        ch = self._build_decoder(mults, emb_dim, skip_channels)
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), _conv3x3(ch, self.out_channels))
        if config.use_fp16:
            self.convert_to_fp16()

    def _res(self, ch: int, out_ch: int, emb_dim: int, up: bool = False, down: bool = False) -> ResBlock:
        return ResBlock(ch, emb_dim, self.config.dropout, out_ch, self.config.use_scale_shift_norm, up, down)

    def _attention(self, ch: int, num_heads: int) -> AttentionBlock:
        return AttentionBlock(ch, num_heads, self.config.num_head_channels, self.config.use_new_attention_order)

    def _build_encoder(self, mults: tuple[float, ...], emb_dim: int) -> list[int]:
        """Fill ``input_blocks``; returns the channel count of each block's output (the skip connections)."""
        cfg = self.config
        ch = int(mults[0] * cfg.num_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(_conv3x3(self.in_channels, ch))])
        skip_channels = [ch]
        rate = 1
        for level, mult in enumerate(mults):
            for _ in range(cfg.num_res_blocks):
                out_ch = int(mult * cfg.num_channels)
                layers: list[nn.Module] = [self._res(ch, out_ch, emb_dim)]
                ch = out_ch
                if rate in self._attention_rates:
                    layers.append(self._attention(ch, cfg.num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(mults) - 1:
                down = self._res(ch, ch, emb_dim, down=True) if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                rate *= 2
        return skip_channels

    def _build_decoder(self, mults: tuple[float, ...], emb_dim: int, skip_channels: list[int]) -> int:
        """Fill ``output_blocks``, consuming the skip channels deepest first; returns the final width."""
        cfg = self.config
        heads = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        skips = list(skip_channels)
        ch = skips[-1]
        rate = 2 ** (len(mults) - 1)
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mults))):
            for i in range(cfg.num_res_blocks + 1):
                out_ch = int(mults[level] * cfg.num_channels)
                layers: list[nn.Module] = [self._res(ch + skips.pop(), out_ch, emb_dim)]
                ch = out_ch
                if rate in self._attention_rates:
                    layers.append(self._attention(ch, heads))
                if level and i == cfg.num_res_blocks:
                    layers.append(self._res(ch, ch, emb_dim, up=True) if cfg.resblock_updown else Upsample(ch))
                    rate //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        return ch

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16, as guided-diffusion does; norms and linears stay fp32."""
        for stage in (self.input_blocks, self.middle_block, self.output_blocks):
            for module in stage.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    module.half()
        self.dtype = torch.float16

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        """Predict from images ``x`` [N,3,H,W] at (original, unrespaced) ``timesteps`` [N]."""
        if (y is not None) != self.config.class_cond:
            raise ValueError("pass class labels y exactly when the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        skips = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))

    def _run(self, block: nn.Module, h: Tensor, emb: Tensor) -> Tensor:
        """A block, recomputed in the backward pass instead of kept in memory when checkpointing."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)


def create_unet(config: UNetConfig) -> UNetModel:
    """Build an untrained UNet for ``config``; see :func:`load_unet` for released weights."""
    return UNetModel(config)


def _read_state_dict(path: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    state = load_safely(path, "diffusion checkpoint", "check the path, or see `artgen models path`",
                        map_location=map_location, expected="a guided-diffusion UNet .pt state dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} is not a guided-diffusion checkpoint (expected a flat state dict of tensors): "
                        "pass the .pt file of a guided-diffusion UNet")
    return state


def _check_matches(path: Path, state: dict[str, Tensor], model: UNetModel) -> None:
    """Raise a UserError naming the first key whose presence or shape disagrees with the config."""
    expected = model.state_dict()
    fix = "use the config it was trained with"
    for key, tensor in expected.items():
        if key not in state:
            raise UserError(f"checkpoint does not match the config ({path} lacks {key}): {fix}")
        if state[key].shape != tensor.shape:
            raise UserError(f"checkpoint does not match the config ({path}: {key} has shape "
                            f"{tuple(state[key].shape)}, the config expects {tuple(tensor.shape)}): {fix}")
    extra = next((key for key in state if key not in expected), None)
    if extra is not None:
        raise UserError(f"checkpoint does not match the config ({path} has unexpected {extra}): {fix}")


def load_unet(path: str | Path, config: UNetConfig, map_location: str | torch.device = "cpu") -> UNetModel:
    """Load a guided-diffusion ``.pt`` into a frozen UNet in eval mode (half-precision torso if use_fp16)."""
    path = Path(path)
    state = _read_state_dict(path, map_location)
    with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not use up the run's randomness
        model = create_unet(config)
    _check_matches(path, state, model)
    model.load_state_dict(state)
    model.to(map_location).eval().requires_grad_(False)
    return model
