"""The CLIP wrapper: any open_clip model by name and pretrained tag, or from a local checkpoint file.

Named weights download through open_clip's own hub code, or load without network from a copy placed by hand
in artgen's cache or already in the Hugging Face cache; a local file (``--clip-checkpoint``) needs no network.
Every file is read without running code from it (TorchScript archives included, see models/torchscript.py).
Each model gets its own input size and normalization.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from .errors import UsageError, UserError
from .files import readable_file
from .models import hub, integrity
from .models.attention import use_batch_first_attention
from .models.checkpoints import load_safely, load_script_weights
from .models.torchscript import is_torchscript
from .speed import maybe_compile, to_channels_last

SPEC_HINT = 'write CLIP models as "name:pretrained:weight", e.g. "ViT-B-32:openai" or "RN50:openai:0.5"'
OPENAI_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")  # metadata in OpenAI's files
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's hub file names
SCRIPT_FIX = "give OpenAI's original .pt, an open_clip state dict or a .safetensors file"


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP model, which weights, and its weight in the ensemble."""

    model: str
    pretrained: str | None
    weight: float = 1.0
    checkpoint: str | None = None


def parse_clip_spec(text: str, checkpoint: str | None = None) -> ClipSpec:
    """``"ViT-B-32:openai"``, ``"RN50:openai:0.5"``, ``"ViT-B-32"`` or ``"ViT-B-32::0.5"``."""
    parts = text.split(":")
    if not parts[0].strip() or len(parts) > 3:
        raise UsageError(f"--clip {text!r}: {SPEC_HINT}")
    weight = 1.0
    if len(parts) == 3:
        try:
            weight = float(parts[2])
        except ValueError:
            raise UsageError(f"--clip {text!r}: weight {parts[2]!r} is not a number; {SPEC_HINT}") from None
        if not math.isfinite(weight):
            raise UsageError(f"--clip {text!r}: the weight must be a finite number")
    pretrained = parts[1].strip() if len(parts) > 1 and parts[1].strip() else None
    return ClipSpec(parts[0].strip(), pretrained, weight, checkpoint)


def with_bundled_weights(spec: ClipSpec) -> ClipSpec:
    """A bundled CLIP (such as shapes-clip): register its config; use its weights unless a checkpoint is given.

    A checkpoint of the same architecture (say, one retrained with lab/training/train_clip.py) then loads by name.
    """
    known = hub.KNOWN_MODELS.get(spec.model)
    if known is None or known.kind != "clip":
        return spec
    register_model_config(hub.resolve(spec.model, "config"))
    if spec.checkpoint:
        return spec
    return dataclasses.replace(spec, checkpoint=str(hub.resolve(spec.model, "checkpoint")))


def register_model_config(path: str | Path) -> str:
    """Make a custom open_clip model-config JSON known to open_clip; returns its model name (the file stem)."""
    path = readable_file(path, "CLIP model config")
    open_clip.add_model_config(path)
    return path.stem


class Perceptor(nn.Module):
    """One CLIP model, frozen: encodes [0,1] images (at its input size) and texts to unit vectors."""

    def __init__(self, model: nn.Module, spec: ClipSpec, mean: tuple[float, ...], std: tuple[float, ...],
                 channels_last: bool = False, compile: bool = False, fast_attention: bool = False) -> None:
        super().__init__()
        if fast_attention:  # rounds differently: for runs under bf16 / fp16 autocast (artgen.models.attention)
            use_batch_first_attention(model)
        self.model = to_channels_last(model.eval().requires_grad_(False), channels_last)
        self._encode_image = maybe_compile(self.model.encode_image, compile, f"CLIP {spec.model}")
        self.spec = spec
        size = model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.tokenizer = open_clip.get_tokenizer(spec.model)

    def encode_image(self, images: Tensor) -> Tensor:
        """[N,3,S,S] in [0,1] -> [N,D] unit vectors (float32); differentiable w.r.t. the images."""
        normalized = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return F.normalize(self._encode_image(normalized).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> Tensor:
        """Texts -> [N,D] unit vectors; the tokenizer cuts each at the model's context length (see ignored_text)."""
        tokens = self.tokenizer(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def ignored_text(self, text: str) -> str:
        """The end of a text that this model's tokenizer cuts off (CLIP reads a fixed number of tokens, its start
        and end tokens included); empty when the text fits, or when the tokenizer cannot say."""
        room = getattr(self.tokenizer, "context_length", 0) - 2
        if room <= 0 or not hasattr(self.tokenizer, "encode") or not hasattr(self.tokenizer, "decode"):
            return ""
        ids = self.tokenizer.encode(text)
        return self.tokenizer.decode(ids[room:]).strip() if len(ids) > room else ""


def load_perceptors(specs: list[ClipSpec], device: torch.device, channels_last: bool = False,
                    compile: bool = False, fast_attention: bool = False) -> list[Perceptor]:
    return [load_perceptor(spec, device, channels_last, compile, fast_attention) for spec in specs]


def load_perceptor(spec: ClipSpec, device: torch.device, channels_last: bool = False,
                   compile: bool = False, fast_attention: bool = False) -> Perceptor:
    """Build the model; load its weights from the local checkpoint, or from open_clip's hub by tag.
    ``fast_attention``: self-attention without nn.MultiheadAttention's weight copy, for runs under autocast."""
    check_spec(spec)
    quick_gelu = spec.pretrained == "openai"  # OpenAI's weights were trained with QuickGELU
    if spec.checkpoint:
        path = Path(spec.checkpoint)
        state, openai_layout = _read_state(path)
        if openai_layout and not quick_gelu and not _config_has_quick_gelu(spec.model):
            _warn_quick_gelu(spec.model, path)
            quick_gelu = True
        model = _create(spec.model, None, quick_gelu)
        _load_local(model, state, path)
    elif spec.pretrained:
        model = _download(spec, quick_gelu)
    else:
        logging.getLogger("artgen").warning("CLIP %s has no pretrained weights: using random weights", spec.model)
        model = _create(spec.model, None, quick_gelu)
    mean, std = _normalization(model, spec)
    return Perceptor(model, spec, mean, std, channels_last, compile, fast_attention).to(device)


def check_spec(spec: ClipSpec) -> None:
    """Refuse an unknown model name or pretrained tag before anything is loaded."""
    known = open_clip.list_models()
    if spec.model not in known:
        near = difflib.get_close_matches(spec.model, known, n=3)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise UsageError(f"unknown CLIP model {spec.model!r}: {hint}see open_clip.list_models() for all names")
    if spec.pretrained and not spec.checkpoint:
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        if spec.pretrained not in tags:
            raise UsageError(f"unknown pretrained tag {spec.pretrained!r} for CLIP {spec.model}: "
                             f"choose one of {', '.join(tags) or '(none: give --clip-checkpoint)'}")


def _create(name: str, pretrained: str | None, quick_gelu: bool) -> nn.Module:
    quiet = logging.getLogger("root")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # open_clip logs a warning for every randomly initialised model
    try:
        with torch.random.fork_rng(devices=[]):  # initial weights must not use up the run's randomness
            return open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu)
    finally:
        quiet.setLevel(level)


def _download(spec: ClipSpec, quick_gelu: bool) -> nn.Module:
    """Named weights: a copy placed by hand or already in the hub's cache loads without network; else
    open_clip downloads them, after a short probe, so that an offline run fails at once and says what to fetch."""
    config = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
    url, target = pretrained_file(spec, config)
    local = target if target.is_file() else _hub_cached(config.get("hf_hub", ""))
    if local == target:  # placed by hand in artgen's cache (huggingface_hub checks its own)
        integrity.check(target, None, f"CLIP {spec.model}:{spec.pretrained}")
    if local is not None:
        model = _create(spec.model, None, quick_gelu)
        _load_local(model, _read_state(local)[0], local)
        return model
    probe = _hub_endpoint() if config.get("hf_hub") else url
    if not hub.reachable(probe):
        raise _fetch_by_hand(spec, hub.unreachable(probe), url, target)
    try:
        return _create(spec.model, spec.pretrained, quick_gelu)
    except Exception as error:  # open_clip and huggingface_hub raise many types for a failed download
        if _is_network_error(error):
            raise _fetch_by_hand(spec, type(error).__name__, url, target) from None
        raise


def pretrained_file(spec: ClipSpec, config: dict[str, Any]) -> tuple[str, Path]:
    """Where a pretrained tag's weights can be fetched by hand, and where artgen looks for them."""
    url = config.get("url") or _hub_url(config.get("hf_hub", ""))
    return url, hub.home() / "clip" / f"{spec.model}-{spec.pretrained}" / url.rsplit("/", 1)[-1].split("?")[0]


def _hub_url(hf_hub: str) -> str:
    repo, name = hf_hub.rsplit("/", 1)
    return f"{_hub_endpoint()}/{repo}/resolve/main/{name or HUB_WEIGHTS[-1]}"


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "https://huggingface.co"
    return constants.ENDPOINT


def _hub_cached(hf_hub: str) -> Path | None:
    """The weights open_clip would load from the Hugging Face cache, when an earlier run fetched them."""
    if not hf_hub:
        return None
    try:
        import huggingface_hub
    except ImportError:
        return None
    repo, name = hf_hub.rsplit("/", 1)
    for candidate in ([name] if name else HUB_WEIGHTS):
        found = huggingface_hub.try_to_load_from_cache(repo, candidate)
        if isinstance(found, str):
            return Path(found)
    return None


def _fetch_by_hand(spec: ClipSpec, reason: str, url: str, target: Path) -> UserError:
    return UserError(hub.fetch_by_hand(f"CLIP {spec.model}:{spec.pretrained}", reason, [(url, target)],
                                       hub.LOCAL_FLAGS["clip"]))


def _is_network_error(error: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(error)}
    return bool(names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "URLError",
                         "HfHubHTTPError", "ConnectError", "Timeout", "TimeoutError", "gaierror",
                         "MaxRetryError", "NameResolutionError", "ReadTimeout", "ConnectTimeout"})


def _chain(error: BaseException | None):
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _config_has_quick_gelu(name: str) -> bool:
    return bool((open_clip.get_model_config(name) or {}).get("quick_gelu"))


def _warn_quick_gelu(name: str, path: Path) -> None:
    hint = f" (say so with --clip {name}-quickgelu)" if f"{name}-quickgelu" in open_clip.list_models() else ""
    logging.getLogger("artgen").warning("CLIP checkpoint %s holds OpenAI-layout weights trained with QuickGELU: "
                                        "building %s with QuickGELU%s", path, name, hint)


def _load_local(model: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    """Load a state dict read from ``path`` into the model, checking every key and shape first."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise UserError(f"CLIP checkpoint {path} lacks {key}: it is not a {model.__class__.__name__} of this "
                            "architecture; give the --clip name it was made for")
        if state[key].shape != tensor.shape:
            raise UserError(f"CLIP checkpoint {path} does not match the model: {key} has shape "
                            f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}; "
                            "give the --clip name it was made for")
    model.load_state_dict({k: v for k, v in state.items() if k in expected})


def _read_state(path: Path) -> tuple[dict[str, Tensor], bool]:
    """A state dict from .safetensors, a TorchScript archive (only its tensors are read) or a .pt/.bin;
    and whether the file shows OpenAI's layout (its metadata keys, or QuickGELU modules), whose
    weights need QuickGELU."""
    readable_file(path, "CLIP checkpoint", "check the --clip-checkpoint path")
    quick_gelu_modules = False
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors raises assorted types for damaged files
            raise UserError(f"CLIP checkpoint {path} is unreadable or truncated ({type(error).__name__}): "
                            "download it again") from None
    elif is_torchscript(path):
        weights = load_script_weights(path, "CLIP checkpoint", SCRIPT_FIX)
        state = weights.state
        quick_gelu_modules = any(name.endswith(".QuickGELU") for name in weights.classes)
    else:
        state = load_safely(path, "CLIP checkpoint", "check the --clip-checkpoint path")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"CLIP checkpoint {path} is not a state dict of tensors: give an open_clip checkpoint")
    openai_layout = quick_gelu_modules or any(key in state for key in OPENAI_ONLY_KEYS)
    return {k.removeprefix("module."): v for k, v in state.items() if k not in OPENAI_ONLY_KEYS}, openai_layout


def _normalization(model: nn.Module, spec: ClipSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std the weights were trained with: from the pretrained tag, else the model's config."""
    if spec.pretrained:
        config = open_clip.get_pretrained_cfg(spec.model, spec.pretrained)
        if config.get("mean") and config.get("std"):
            return tuple(config["mean"]), tuple(config["std"])
    preprocess = getattr(model.visual, "preprocess_cfg", {}) or {}
    return (tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)))
