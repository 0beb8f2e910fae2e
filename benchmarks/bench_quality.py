"""Do the fast settings move the result? VQGAN+CLIP with the bundled offline models, fp32 eager against the
settings given by --fast, same seed; compares the final CLIP loss under one fixed draw of cutouts.

    .venv/bin/python benchmarks/bench_quality.py --fast precision=bf16 channels_last

Issue 7's bar: the two final losses differ by less than 2%. Prints one row per prompt and step count, and
appends them to benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse_fast, print_table, write_record  # noqa: E402

from artgen.loop import optimize  # noqa: E402
from artgen.objective import build_objective  # noqa: E402
from artgen.perceptor import load_perceptors  # noqa: E402
from artgen.run import prepare  # noqa: E402
from artgen.settings import build_settings  # noqa: E402
from artgen.speed import precision_context  # noqa: E402

PROMPTS = ["a blue square", "a red circle", "a yellow star"]


def final_loss(prompt: str, seed: int, steps: int, **fast) -> float:
    """Run the offline VQGAN preset; the objective of its last image under cutouts drawn from a fixed seed."""
    settings, device, cls, specs = prepare(build_settings("offline-vqgan", overrides={
        "prompts": [prompt], "steps": steps, "seed": seed, **fast}))
    objective = build_objective(settings, load_perceptors(specs, device), device)
    torch.manual_seed(settings.seed)
    generator = cls.from_settings(settings, device)
    for _ in optimize(generator, objective, forward_context=precision_context(settings.precision, device)):
        pass
    return fixed_cut_loss(objective, generator.snapshot())


def fixed_cut_loss(objective: Callable[[Tensor, float], Tensor], image: Tensor) -> float:
    """The objective under one fixed draw of cutouts, so two images are compared on equal terms."""
    torch.manual_seed(123)
    with torch.no_grad():
        return objective(image, 0.0).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", nargs="+", default=["precision=bf16", "channels_last"])
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    fast = parse_fast(args.fast)
    rows = []
    for steps in args.steps:
        for prompt in PROMPTS:
            reference, quick = final_loss(prompt, args.seed, steps), final_loss(prompt, args.seed, steps, **fast)
            gap = abs(quick - reference) / reference if math.isfinite(quick) else math.inf
            rows.append({"prompt": prompt, "steps": steps, "fp32": round(reference, 4), "fast": round(quick, 4),
                         "gap %": round(100 * gap, 2), "under 2%": gap < 0.02})
    print(f"fast settings: {' '.join(args.fast)}")
    print_table(rows)
    print(f"record: {write_record('quality', rows)}")


if __name__ == "__main__":
    main()
