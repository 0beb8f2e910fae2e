"""Generators side by side: iterations per second and peak memory of each at the same size and cutouts.

    .venv/bin/python benchmarks/bench_generators.py --size 256 512 --cutn 32 --steps 5
    .venv/bin/python benchmarks/bench_generators.py --generators pixels pixel-art --size 256 --steps 3

Models: VQGAN is taming's vqgan_imagenet_f16_16384 architecture with random weights, timed as in
bench_vqgan_clip.py; the CLIP is an open_clip ViT-B-32 with random weights; nothing downloads. By default every
registered generator that needs no model weights is measured next to VQGAN, each with its preset when one carries
its name (else its defaults), built and stepped the way a run does it: a Session makes the generator and the
objective, artgen's loop steps it. Peak memory: CUDA, torch's peak allocation; CPU, the process's peak resident set
while stepping, models included. Appends the table to benchmarks/results/generators.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vqgan_clip import PROMPT, time_artgen  # noqa: E402
from common import peak_memory_mib, pick_device, print_table, time_steps, write_record  # noqa: E402

from artgen.generators import GENERATORS, Canvas, ModelCache  # noqa: E402
from artgen.loop import optimize  # noqa: E402
from artgen.session import Session  # noqa: E402
from artgen.settings import build_settings, preset_names  # noqa: E402
from artgen.speed import precision_context  # noqa: E402

WARMUP = 1


class NoModels(ModelCache):
    """A model cache that refuses every model: a generator built with it needs no weights."""

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        raise LookupError(key)


def weightless() -> list[str]:
    """The registered generators that draw without any model of their own (CLIP aside), found by building each
    with its default options and a cache that refuses every model, so a new one is measured without a line here."""
    canvas = Canvas(256, 256, 1, 100, torch.device("cpu"))
    names = []
    for name, cls in GENERATORS.items():
        try:
            cls.create(cls.Options(), canvas, None, NoModels())
        except LookupError:
            continue
        names.append(name)
    return names


def time_generator(name: str, size: int, cutn: int, clip: str, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds per step and peak MiB of a generator that needs no weights, with its preset (if any) at this size,
    in the settings the session settled (auto precision and channels-last as a run gets them)."""
    preset = name if name in preset_names() else None
    settings = build_settings(preset, None, dict(generator=name, prompts=[PROMPT], clip=[clip], width=size,
                                                 height=size, cutn=cutn, steps=WARMUP + steps, device=str(device)))
    session = Session(settings, progress=False)
    generator = session.generator()
    objective = session.objective()
    generator.begin(objective.score, False)
    forward = precision_context(session.settings.run.precision, session.device)
    states = optimize(generator, objective, forward_context=forward)
    seconds = time_steps(lambda: next(states), steps, warmup=WARMUP, device=session.device)
    return seconds, peak_memory_mib(session.device)


def bench(name: str, size: int, cutn: int, clip: str, steps: int, device: torch.device) -> dict:
    if name == "vqgan":
        seconds, memory = time_artgen(size, cutn, clip, steps, device)
    else:
        seconds, memory = time_generator(name, size, cutn, clip, steps, device)
    gc.collect()
    return {"device": str(device), "generator": name, "size": size, "cutn": cutn, "clip": clip,
            "it/s": round(1 / seconds, 3), "MiB": round(memory)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", nargs="+", default=None,
                        help="default: vqgan and every registered generator that needs no weights")
    parser.add_argument("--size", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--clip", default="ViT-B-32", help="an open_clip model name, with random weights")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, after one warm-up step")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    known = ["vqgan", *weightless()]
    names = args.generators or known
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"--generators {' '.join(unknown)}: choose from {' '.join(known)} (the others need weights)")
    device = pick_device(args.device)
    rows = [bench(name, size, args.cutn, args.clip, args.steps, device) for size in args.size for name in names]
    print_table(rows)
    print(f"recorded in {write_record('generators', rows)}")


if __name__ == "__main__":
    main()
