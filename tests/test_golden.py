"""Pictures drawn before the redesign of issue 57 must come out the same after it (tests/golden_cases.py).

Bit-identity holds on the CPU kind that recorded them (tests/assets/golden/cpu.json); on another instruction set
float results may legitimately differ, so there the comparison is skipped with that reason.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from golden_cases import GOLDEN, cases, cpu_kind, pixels, run_case

RECORDED_ON = json.loads((GOLDEN / "cpu.json").read_text())["cpu_kind"]
RELEASE_PNG = GOLDEN.parent / "release-0.1.0.png"  # written by artgen 0.1.0 (main at 9607e0e), recipe inside


def same_cpu_kind() -> None:
    if cpu_kind() != RECORDED_ON:
        pytest.skip(f"golden pixels were recorded on a {RECORDED_ON} CPU; this one is {cpu_kind()}")


@pytest.fixture(autouse=True)
def restore_threads():
    """The cases run on one thread; the rest of the suite gets its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def golden_cases(tmp_path_factory):
    return cases(tmp_path_factory.mktemp("golden-models"))


@pytest.mark.parametrize("name", ["offline", "offline-vqgan", "vqgan", "diffusion", "diffusion-ddim-init",
                                  "vqgan-animation"])
def test_pictures_match_the_golden_ones(golden_cases, tmp_path, monkeypatch, name):
    same_cpu_kind()
    monkeypatch.chdir(tmp_path)
    drawn = run_case(golden_cases[name], tmp_path / name)
    expected = sorted(GOLDEN.glob(f"{name}-[0-9]*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    assert len(drawn) == len(expected)
    for path, golden in zip(drawn, expected):
        difference = np.abs(pixels(path).astype(int) - pixels(golden)).max()
        assert difference == 0, f"{path.name} differs from {golden.name} by up to {difference}"


def test_a_png_of_the_release_before_the_redesign_shows_and_reruns(artgen):
    torch.set_num_threads(1)  # as it was drawn
    shown = artgen("show-settings", RELEASE_PNG)
    assert shown.code == 0, shown.err
    assert "a blue square" in shown.out and "seed: 7" in shown.out
    rerun = artgen("generate", "--from", RELEASE_PNG, "--output", "again.png", "--quiet")
    assert rerun.code == 0, rerun.err
    if cpu_kind() == RECORDED_ON:
        assert np.array_equal(pixels("again.png"), pixels(RELEASE_PNG))
