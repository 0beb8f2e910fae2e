"""``artgen doctor``: what this machine gives a run, before one is started: the device, what the automatic
settings choose there and why, the versions and the CPU's abilities (the models cache is listed by the command).

Why: a run is fast or slow, fits or not, mostly because of the device; this says so without loading a model,
and it is what to paste into a bug report.
"""

from __future__ import annotations

import os
import platform

import torch

from . import __version__
from .auto import AUTOMATIC, settle, shown
from .session import resolve_device
from .settings import Settings, build_settings, flag
from .speed import native_bf16


def report(device_name: str = "auto", preset: str | None = None) -> list[str]:
    """The lines ``artgen doctor`` prints: versions, the device, the CPU, and the automatic choices for a run of
    ``preset`` (or the defaults) there."""
    device = resolve_device(device_name)
    # nothing is drawn: a placeholder prompt only lets the settings validate
    settings = build_settings(preset, None, {"prompts": ["doctor"], "device": device_name})
    made = {c.name: c for c in settle(settings, device)[1]}
    free = {c.name: c for c in settle(settings.replace(**{name: None for name in AUTOMATIC}), device)[1]}
    cuda = torch.version.cuda or "none (torch built without CUDA)"
    lines = [f"artgen {__version__}, Python {platform.python_version()}, torch {torch.__version__}, CUDA {cuda}",
             f"device: {_describe(device)}",
             f"CPU: {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
             f"kernels at {torch.backends.cpu.get_cpu_capability()}; {native_bf16(torch.device('cpu'))[1]}",
             f"auto on {device}, for {_run_of(settings, preset)}:"]
    for name in AUTOMATIC:
        if name in made:
            lines.append(f"  {made[name]}")
        else:
            lines.append(f"  --{flag(name)} {shown(getattr(settings.run, name))}: set by the preset (auto would "
                         f"choose {shown(free[name].value)})")
    return lines


def _describe(device: torch.device) -> str:
    if device.type != "cuda":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return f"cpu ({found} CUDA devices found)"
    major, minor = torch.cuda.get_device_capability(device)
    free, total = torch.cuda.mem_get_info(device)
    return (f"{device} {torch.cuda.get_device_name(device)}, compute capability {major}.{minor}, "
            f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")


def _run_of(settings: Settings, preset: str | None) -> str:
    what = f"preset {preset}" if preset else "the default settings"
    return f"{what} ({settings.generator}, {settings.width}x{settings.height})"
