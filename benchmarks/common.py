"""Shared pieces of the benchmarks: the real architectures with random weights, timing and peak memory."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Architecture of taming-transformers' vqgan_imagenet_f16_16384 (its model.yaml), weights left random.
VQGAN_F16_16384 = {
    "model": {
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 256, "n_embed": 16384,
            "ddconfig": {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
                         "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                         "dropout": 0.0},
        },
    },
}


def parse_fast(items: list[str]) -> dict:
    """``precision=bf16 channels_last compile checkpointing`` -> settings overrides."""
    fast = {}
    for item in items:
        key, _, value = item.partition("=")
        fast[key] = value if value else True
    return fast


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's resident-set high-water mark."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak stays the process's lifetime peak


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated by torch; CPU: the process's peak resident set since the last reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def write_record(name: str, rows: list[dict]) -> Path:
    """Append the rows to benchmarks/results/NAME.json with the machine they ran on."""
    folder = Path(__file__).resolve().parent / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.json"
    record = json.loads(path.read_text()) if path.exists() else []
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    record.append({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": device, "cpus": os.cpu_count(),
                   "torch": str(torch.__version__), "rows": rows})
    path.write_text(json.dumps(record, indent=1))
    return path


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step after warm-up, synchronizing CUDA so the clock sees the work."""
    for _ in range(warmup):
        step()
    reset_peak_memory(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
