"""Do the fast settings move the result? VQGAN+CLIP with the bundled offline models, fp32 eager against the
settings given by --fast, same seed; compares the final CLIP loss under one fixed draw of cutouts.

    .venv/bin/python benchmarks/bench_quality.py --fast precision=bf16 channels_last

Issue 7's bar: the two final losses differ by less than 2%. One run is a poor judge of that: the optimization
is chaotic, so any change of float rounding sends it down another path. The benchmark therefore also reruns
fp32 with another CPU thread count (the same arithmetic summed in another order) as the noise floor, and
compares the means over every prompt and seed as well as each run. Prints the rows and the means, and appends
them to benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from artgen.loop import optimize
from artgen.session import Session
from artgen.settings import build_settings
from artgen.speed import precision_context

if __package__:  # imported as benchmarks.bench_quality (the offline end-to-end tests share its measurement)
    from .common import parse_fast, print_table, write_record
else:  # run as a script: Python puts benchmarks/ itself first on sys.path
    from common import parse_fast, print_table, write_record

PROMPTS = ["a blue square", "a red circle", "a yellow star", "a green triangle", "a purple circle", "a cyan square"]


def final_loss(prompt: str, seed: int, steps: int, threads: int | None = None, **fast) -> float:
    """Run the offline VQGAN preset; the objective of its last image under cutouts drawn from a fixed seed.

    Without the preset's diffusion prior: the fast settings are measured on the CLIP and VQGAN path, and the prior
    would double the run time of this benchmark and of the suite's test that uses it. At tv_scale 50, the preset's
    smoothing until 2026-12-06, where the figures in RESULTS.md and the suite's tolerance were measured.
    """
    session = Session(build_settings("offline-vqgan", overrides={
        "prompts": [prompt], "steps": steps, "seed": seed, "prior_scale": 0.0, "tv_scale": 50.0, **fast}), False)
    settings, device = session.settings, session.device
    objective = session.objective()
    torch.manual_seed(settings.seed)
    generator = session.generator()
    with thread_count(threads):
        for _ in optimize(generator, objective, forward_context=precision_context(settings.precision, device)):
            pass
    return fixed_cut_loss(objective, generator.snapshot())


@contextmanager
def thread_count(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads (None: as set): another count sums the same floats in another order."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fixed_cut_loss(objective: Callable[[Tensor, float], Tensor], image: Tensor) -> float:
    """The objective under one fixed draw of cutouts, so two images are compared on equal terms."""
    torch.manual_seed(123)
    with torch.no_grad():
        return objective(image, 0.0).item()


def gap(value: float, reference: float) -> float:
    """Relative difference in percent; infinite when the run ended without a finite loss."""
    return 100 * abs(value - reference) / reference if math.isfinite(value) else math.inf


def run_rows(steps: int, seeds: list[int], fast: dict, other_threads: int) -> list[dict]:
    """One row per prompt and seed: fp32, fp32 at another thread count (the noise floor) and the fast settings."""
    rows = []
    for seed in seeds:
        for prompt in PROMPTS:
            reference = final_loss(prompt, seed, steps)
            reordered = final_loss(prompt, seed, steps, threads=other_threads)
            quick = final_loss(prompt, seed, steps, **fast)
            rows.append({"prompt": prompt, "seed": seed, "steps": steps, "fp32": round(reference, 4),
                         "fp32 reordered": round(reordered, 4), "fast": round(quick, 4),
                         "reordered gap %": round(gap(reordered, reference), 2),
                         "fast gap %": round(gap(quick, reference), 2)})
    return rows


def summary(rows: list[dict]) -> dict:
    """Means over the runs of one step count: how far the fast settings move the typical result."""
    means = {key: statistics.fmean(row[key] for row in rows) for key in ("fp32", "fp32 reordered", "fast")}
    return {"steps": rows[0]["steps"], "runs": len(rows), **{f"mean {k}": round(v, 4) for k, v in means.items()},
            "reordered: gap of means %": round(gap(means["fp32 reordered"], means["fp32"]), 2),
            "fast: gap of means %": round(gap(means["fast"], means["fp32"]), 2),
            "reordered: median run gap %": round(statistics.median(r["reordered gap %"] for r in rows), 2),
            "fast: median run gap %": round(statistics.median(r["fast gap %"] for r in rows), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", nargs="+", default=["precision=bf16", "channels_last"])
    parser.add_argument("--steps", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    fast = parse_fast(args.fast)
    other_threads = 1 if torch.get_num_threads() > 1 else 2
    rows, summaries = [], []
    for steps in args.steps:
        rows_of_steps = run_rows(steps, args.seeds, fast, other_threads)
        rows += rows_of_steps
        summaries.append(summary(rows_of_steps))
    print(f"fast settings: {' '.join(args.fast)}; fp32 reordered: {other_threads} thread(s) instead of "
          f"{torch.get_num_threads()}")
    print_table(rows)
    print()
    print_table(summaries)
    print(f"record: {write_record('quality', rows + summaries)}")


if __name__ == "__main__":
    main()
