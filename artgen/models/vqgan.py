"""A VQGAN compatible with taming-transformers: same modules, same state-dict keys, same numbers.

Loads taming's ``.yaml`` + Lightning ``.ckpt`` pairs (VQModel, GumbelVQ, and the first stage of a
Net2NetTransformer such as sflckr) without running pickled code. Only encoding and decoding are here; the
training losses (``loss.*`` keys) are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from ..files import readable_file
from .checkpoints import load_safely

VQ_TARGETS = ("taming.models.vqgan.VQModel", "taming.models.vqgan.GumbelVQ")
TRANSFORMER_TARGET = "taming.models.cond_transformer.Net2NetTransformer"


def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """Two norm-swish-conv layers with a residual; a 1x1 conv ("nin_shortcut") when channels change."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 convs for q, k, v and the output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, height, width = h.shape
        q = self.q(h).flatten(2).transpose(1, 2)   # [b, hw, c]
        k = self.k(h).flatten(2)                   # [b, c, hw]
        v = self.v(h).flatten(2)
        weights = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)
        out = torch.bmm(v, weights.transpose(1, 2)).view(b, c, height, width)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel on the right and bottom only."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: res blocks, attention where configured, a resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: Tensor) -> Tensor:
        for index, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[index](h)
        return h


class Middle(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    def __init__(self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
                 in_channels: int, resolution: int, z_channels: int, double_z: bool = True, dropout: float = 0.0,
                 **_: Any) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        size, channels = resolution, ch
        for level, mult in enumerate(ch_mult):
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(channels, ch * mult, dropout))
                channels = ch * mult
                if size in attn_resolutions:
                    attns.append(AttnBlock(channels))
            stage = Level(blocks, attns)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(channels)
                size //= 2
            self.down.append(stage)
        self.mid = Middle(channels, dropout)
        self.norm_out = normalize(channels)
        self.conv_out = nn.Conv2d(channels, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, *, ch: int, out_ch: int, ch_mult: list[int], num_res_blocks: int,
                 attn_resolutions: list[int], resolution: int, z_channels: int, dropout: float = 0.0,
                 **_: Any) -> None:
        super().__init__()
        channels = ch * ch_mult[-1]
        size = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, channels, 3, padding=1)
        self.mid = Middle(channels, dropout)
        stages: list[Level] = []
        for level in reversed(range(len(ch_mult))):
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(channels, ch * ch_mult[level], dropout))
                channels = ch * ch_mult[level]
                if size in attn_resolutions:
                    attns.append(AttnBlock(channels))
            stage = Level(blocks, attns)
            if level != 0:
                stage.upsample = Upsample(channels)
                size *= 2
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)  # indexed by level, lowest resolution last, as taming stores it
        self.checkpointing = False  # recompute each level in the backward pass instead of keeping it
        self.norm_out = normalize(channels)
        self.conv_out = nn.Conv2d(channels, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            if self.checkpointing and torch.is_grad_enabled():
                h = checkpoint(stage.run, h, use_reentrant=False)
            else:
                h = stage.run(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantizer (taming's VectorQuantizer2); codebook in ``embedding.weight``."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: Tensor) -> Tensor:
        return vector_quantize(z, self.embedding.weight)


class GumbelQuantizer(nn.Module):
    """Gumbel-softmax quantizer: a 1x1 conv to code logits, a hard sample, the chosen ``embed`` rows.

    As in taming, sampling adds Gumbel noise even in eval mode, so encoding is random under the torch seed.
    """

    def __init__(self, num_hiddens: int, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(num_hiddens, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: Tensor) -> Tensor:
        one_hot = F.gumbel_softmax(self.proj(z), tau=1.0, dim=1, hard=True)
        return torch.einsum("bnhw,nd->bdhw", one_hot, self.embed.weight)


def vector_quantize(z: Tensor, codebook: Tensor) -> Tensor:
    """Snap each vector of z [B,D,H,W] to its nearest codebook row; the gradient passes straight through."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    distances = (flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)
                 - 2 * flat @ codebook.T)
    nearest = codebook[distances.argmin(dim=1)].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
    return z + (nearest - z).detach()


class VQGAN(nn.Module):
    """Encoder, quantizer and decoder under taming's names; images in [-1, 1]."""

    def __init__(self, ddconfig: dict[str, Any], n_embed: int, embed_dim: int, gumbel: bool = False) -> None:
        super().__init__()
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        z_channels = ddconfig["z_channels"]
        self.quantize = (GumbelQuantizer(z_channels, n_embed, embed_dim) if gumbel
                         else VectorQuantizer(n_embed, embed_dim))
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        self.is_gumbel = gumbel
        self.embed_dim = embed_dim
        self.downsample_factor = 2 ** (len(ddconfig["ch_mult"]) - 1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "VQGAN":
        """Build from a taming config mapping (the .yaml's content), untrained."""
        target, params = _vq_params(config)
        try:
            return cls(params["ddconfig"], params["n_embed"], params["embed_dim"], gumbel=target.endswith("GumbelVQ"))
        except (KeyError, TypeError) as error:
            raise UserError(f"VQGAN config lacks {error}: give the .yaml that came with the checkpoint") from None

    @property
    def codebook(self) -> Tensor:
        return self.quantize.embed.weight if self.is_gumbel else self.quantize.embedding.weight

    def encode(self, x: Tensor) -> Tensor:
        """Image in [-1, 1] -> quantized latent, as taming's ``model.encode(x)[0]``."""
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, z_q: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z_q))


def _vq_params(config: Any) -> tuple[str, dict[str, Any]]:
    """The VQ model's target and params, unwrapping a Net2NetTransformer's first stage."""
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "target" not in model:
        raise UserError("not a taming-transformers config (no model.target): give the VQGAN's .yaml file")
    if model["target"] == TRANSFORMER_TARGET:
        model = model.get("params", {}).get("first_stage_config", {})
    if model.get("target") not in VQ_TARGETS:
        raise UserError(f"unsupported VQGAN model {model.get('target')!r}: artgen loads "
                        f"{', '.join(VQ_TARGETS)} and {TRANSFORMER_TARGET} first stages")
    return model["target"], model.get("params", {})


def _first_stage_prefix(config: dict[str, Any]) -> str:
    return "first_stage_model." if config["model"]["target"] == TRANSFORMER_TARGET else ""


class _LightningStandIn:
    """Inert stand-in for Lightning classes that old checkpoints pickle by name (as dict keys only)."""


def _stand_in(module: str, name: str) -> type:
    cls = type(name, (_LightningStandIn,), {"__module__": module})
    cls.__qualname__ = name
    return cls


# The only non-tensor globals taming's Lightning checkpoints hold: callback classes used as dict keys.
LIGHTNING_ALLOWLIST = [
    _stand_in("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    _stand_in("pytorch_lightning.callbacks.lr_monitor", "LearningRateMonitor"),
    _stand_in("pytorch_lightning.callbacks.early_stopping", "EarlyStopping"),
]


def read_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Unpickle a Lightning checkpoint with the weights-only loader and the minimal allowlist above."""
    return load_safely(path, "VQGAN checkpoint", "check the path, or see `artgen models path`",
                       tuple(LIGHTNING_ALLOWLIST), map_location, expected="a taming-transformers Lightning .ckpt")


def read_config(path: Path) -> dict[str, Any]:
    readable_file(path, "VQGAN config", "check the path, or see `artgen models path`")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"VQGAN config {path} is not valid YAML ({type(error).__name__}): give the model's .yaml") from None
    if not isinstance(config, dict):
        raise UserError(f"VQGAN config {path} is not a taming-transformers config: give the model's .yaml")
    return config


def load_vqgan(config_path: str | Path, checkpoint_path: str | Path, map_location: Any = "cpu") -> VQGAN:
    """Load a taming .yaml + .ckpt pair, checking every key and shape against the config."""
    config_path, checkpoint_path = Path(config_path), Path(checkpoint_path)
    config = read_config(config_path)
    try:
        with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not use up the run's randomness
            model = VQGAN.from_config(config)
    except UserError as error:
        raise UserError(f"{config_path}: {error}") from None
    checkpoint = read_checkpoint(checkpoint_path)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"{checkpoint_path} has no 'state_dict': it is not a taming-transformers Lightning checkpoint")
    prefix = _first_stage_prefix(config)
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not k.startswith(prefix + "loss.")}
    _check_shapes(model, weights, checkpoint_path, config_path)
    model.load_state_dict({key: weights[key] for key in model.state_dict()})
    return model.to(map_location).eval().requires_grad_(False)


def _check_shapes(model: VQGAN, weights: dict[str, Tensor], checkpoint: Path, config: Path) -> None:
    fix = f"the checkpoint and {config.name} do not belong together: give the .yaml that came with it"
    for key, tensor in model.state_dict().items():
        if key not in weights:
            raise UserError(f"{checkpoint} lacks {key}: {fix}")
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise UserError(f"{checkpoint}: {key} has shape {tuple(weights[key].shape)} but the config expects "
                            f"{tuple(tensor.shape)}; {fix}")
