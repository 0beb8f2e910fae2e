"""The fast paths, each switched by a setting: mixed precision, channels_last memory layout, torch.compile with a
clean fallback; and what the device computes natively, from which artgen.auto chooses the first two when they are
left automatic. Gradient checkpointing lives in the models themselves.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

log = logging.getLogger("artgen")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags (Linux /proc/cpuinfo) of bf16 arithmetic in hardware: x86 AVX512-BF16 and AMX, Arm's BF16 extension
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def precision_context(precision: str, device: torch.device) -> Callable[[], ContextManager]:
    """A factory of the context the forward passes run in: autocast to bf16/fp16, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (avx512_bf16 or AMX on x86, BF16 on Arm).

    Why it matters: without it, autocast to bf16 (or fp16) on the CPU converts every operand in software and
    loses the vectorized kernels; on an AVX2-only AMD EPYC a VQGAN+CLIP step took 15-55 times longer than in
    fp32. Where the flags cannot be read (no /proc/cpuinfo) the answer is False: fp32 is the safe guess.
    """
    if torch.backends.cpu.get_cpu_capability() in ("NO AVX", "AVX2"):
        return False  # torch's kernels for this process do not use AVX-512, whatever the CPU has
    return bool(_cpu_flags() & NATIVE_BF16_FLAGS)


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 in hardware, and what says so (for the user): on CUDA the compute
    capability (8.0, Ampere, and later have bf16 tensor cores), on a CPU its flags (:func:`cpu_has_native_bf16`)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        verdict = "computes bf16 natively" if major >= 8 else "has no native bf16 (8.0 and later do)"
        return major >= 8, f"CUDA compute capability {major}.{minor} {verdict}"
    if cpu_has_native_bf16():
        return True, "this CPU computes bf16 natively (avx512_bf16 or AMX)"
    return False, "this CPU has no native bf16 (no avx512_bf16 or AMX): bf16 would be emulated, many times slower"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo ("flags" on x86, "Features" on Arm); empty where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def warn_if_slow_precision(precision: str, device: torch.device) -> None:
    """One warning when half precision is asked on a CPU that would emulate it: the run would be much slower."""
    if device.type == "cpu" and PRECISIONS[precision] is not None and not cpu_has_native_bf16():
        log.warning("--precision %s on this CPU (no avx512_bf16 or AMX) is much slower than fp32, often 10-50 "
                    "times: --precision fp32 is the fast choice here", precision)


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
