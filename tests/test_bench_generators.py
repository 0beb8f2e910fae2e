"""benchmarks/bench_generators.py finds the generators that need no weights and times them through a run's path."""

from __future__ import annotations

import torch

from benchmarks.bench_generators import bench, weightless


def test_weightless_finds_the_generators_without_a_model_and_not_the_others() -> None:
    found = set(weightless())
    assert {"pixels", "pixel-art"} <= found
    assert not found & {"vqgan", "diffusion"}


def test_each_weightless_generator_is_timed_through_a_session() -> None:
    for name in ("pixels", "pixel-art", "strokes"):
        row = bench(name, 64, 2, "shapes-clip", 1, torch.device("cpu"))
        assert (row["generator"], row["size"], row["cutn"]) == (name, 64, 2)
        assert row["it/s"] > 0 and row["MiB"] > 0
