"""Half precision on a CPU that would emulate it: detected from the CPU's flags, and the user is told once."""

from __future__ import annotations

import pytest
import torch

import artgen.speed as speed


@pytest.mark.parametrize("flags, capability, native", [
    ({"avx2", "avx512f", "avx512_bf16"}, "AVX512", True),
    ({"avx2", "amx_bf16", "amx_tile"}, "AVX512", True),
    ({"fp", "asimd", "bf16"}, "DEFAULT", True),        # Arm with the BF16 extension
    ({"avx2", "fma"}, "AVX2", False),                  # the AVX2-only EPYC of issue 50
    ({"avx512f", "avx512bw"}, "AVX512", False),        # AVX-512 without its bf16 instructions
    ({"avx512f", "avx512_bf16"}, "AVX2", False),       # torch told to run its AVX2 kernels only
    (set(), "AVX512", False),                          # flags unreadable: fp32 is the safe guess
])
def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, flags, capability, native):
    monkeypatch.setattr(speed, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert speed.cpu_has_native_bf16.__wrapped__() is native


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("artgen: warning:")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_on_a_cpu_without_bf16_warns_once_and_still_runs_as_asked(artgen, tiny_models,
                                                                                monkeypatch, precision):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "2", "--candidates", "2",
                    "--precision", precision, "--device", "cpu", "-o", "out.png", "--quiet")
    assert result.code == 0, result.err
    [warning] = warnings_of(result.err)
    assert f"--precision {precision}" in warning and "much slower" in warning and "--precision fp32" in warning
    from artgen.output import read_metadata
    assert read_metadata("out.png")["settings"]["precision"] == precision  # not silently changed


@pytest.mark.parametrize("native, precision", [(True, "bf16"), (False, "fp32")])
def test_no_warning_where_the_precision_is_fast(artgen, tiny_models, monkeypatch, native, precision):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: native)
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "1", "--precision", precision,
                    "--device", "cpu", "-o", "out.png", "--quiet")
    assert result.code == 0, result.err
    assert warnings_of(result.err) == []
