"""Run in a fresh process by test_upscale: the growth of the resident set (MiB) while 64x64 is brought to
SIZE x SIZE with the bundled models, in 64-pixel tiles (``tiles``) or as one run at the output size (``one``).

The growth is measured from after the models are loaded (Linux: /proc/self/clear_refs resets the peak), so it
is what the drawing itself needs, not the libraries and weights every run pays once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from artgen.session import Session
from artgen.settings import UpscaleSettings, build_settings
from artgen.upscale import refine, tile_settings


def resident(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(mode: str, size: int) -> None:
    torch.set_num_threads(1)
    settings = build_settings("offline-vqgan", None, dict(prompts=["a red circle"], prior_scale=0.0, steps=1, cutn=2,
                                                          seed=0, save_scale=1))
    session = Session(settings, progress=False)
    session.objective(), session.generator()  # CLIP and the VQGAN loaded
    start = torch.rand(1, 3, size, size)
    Path("/proc/self/clear_refs").write_text("5")
    before = resident("VmRSS:")
    if mode == "tiles":
        upscale = UpscaleSettings(scale=size // 64, upscale_tile=64, upscale_overlap=16)
        refine(session, tile_settings(session.settings, 64), start, upscale)
    else:
        one = session.settings.replace(width=size, height=size)
        session.drive(session.generator(one, start), session.objective())
    print(json.dumps({"growth": resident("VmHWM:") - before}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
