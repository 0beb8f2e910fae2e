"""The fast paths, each switched by a setting with a safe default: mixed precision, channels_last memory
layout, torch.compile with a clean fallback. Gradient checkpointing lives in the models themselves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, ContextManager

import torch
from torch import nn

log = logging.getLogger("artgen")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_context(precision: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of the context the forward passes run in: autocast to bf16/fp16, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def to_channels_last(module: nn.Module, enabled: bool) -> nn.Module:
    """Convolutions run faster on NHWC memory on recent GPUs (and some CPUs); the numbers stay the same."""
    return module.to(memory_format=torch.channels_last) if enabled else module


def maybe_compile(function: Callable[..., Any], enabled: bool, what: str) -> Callable[..., Any]:
    """``torch.compile(function)`` when enabled; if compiling is unavailable or fails (no compiler, an
    unsupported platform), warn once and keep running the eager function."""
    if not enabled:
        return function
    try:
        compiled = torch.compile(function)
    except Exception as error:  # torch.compile itself may refuse (e.g. an unsupported Python)
        log.warning("--compile: cannot compile %s (%s); running it uncompiled", what, _first_line(error))
        return function
    current = [compiled]

    def run(*args: Any, **kwargs: Any) -> Any:
        if current[0] is function:
            return function(*args, **kwargs)
        try:
            return current[0](*args, **kwargs)
        except Exception as error:  # compilation happens on the first call and can fail in many ways
            log.warning("--compile: compiling %s failed (%s); running it uncompiled", what, _first_line(error))
            current[0] = function
            return function(*args, **kwargs)

    return run


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:160]
