"""The run log: a text file next to the outputs saying what ran, where, how long it took and how it ended.

A PNG already carries its settings; the log adds what a PNG cannot: versions, the device, timings and the
scores, so a slow or surprising run can be understood afterwards.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .settings import Settings

log = logging.getLogger("artgen")


class RunLog:
    """Collects timings while a run goes, then writes them with the settings and results."""

    def __init__(self, settings: Settings, device: torch.device) -> None:
        self.settings, self.device = settings, device
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        """Record the seconds since the previous mark (or the start) under ``phase``."""
        now = time.perf_counter()
        self.timings[phase] = round(now - self.started - sum(self.timings.values()), 3)

    def write(self, path: Path, results: dict[str, Any]) -> Path:
        device = (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                  else f"{torch.get_num_threads()} threads")
        record = {
            "artgen": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "device": f"{self.device} ({device})", "timings_s": self.timings,
            "total_s": round(time.perf_counter() - self.started, 3), **results,
            "settings": self.settings.to_dict(),
        }
        try:
            path.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
        except OSError as error:  # the images are already saved; a missing log must not fail the run
            log.warning("could not write the run log %s (%s)", path, error.strerror or error)
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())
        log.info("on %s: %s; run log in %s", record["device"], phases, path)
        return path
