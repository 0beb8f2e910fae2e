"""Iterations per second and peak memory of artgen's VQGAN+CLIP loop, random weights, real architectures.

    .venv/bin/python benchmarks/bench_vqgan_clip.py --size 256 --cutn 32 --steps 5

VQGAN f16-16384 and an open_clip model (ViT-B-32 by default) are built with random weights: no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VQGAN_F16_16384, peak_memory_mib, pick_device, print_table, time_steps  # noqa: E402

from artgen.generators.vqgan import VQGANGenerator, initial_latent  # noqa: E402
from artgen.models.vqgan import VQGAN  # noqa: E402
from artgen.objective import build_objective  # noqa: E402
from artgen.perceptor import ClipSpec, load_perceptor  # noqa: E402
from artgen.settings import Settings  # noqa: E402


def bench(size: int, cutn: int, clip: str, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    settings = Settings(prompts=["a lighthouse at dusk"], width=size, height=size, cutn=cutn, steps=steps,
                        clip_guidance_scale=1.0).validate()
    model = VQGAN.from_config(VQGAN_F16_16384).to(device).eval().requires_grad_(False)
    generator = VQGANGenerator(model, initial_latent(model, settings, size, size, device), settings)
    perceptor = load_perceptor(ClipSpec(clip, None), device)
    objective = build_objective(settings, [perceptor], device)

    def step() -> None:
        generator.step(objective(generator.render(), 0.0))

    seconds = time_steps(step, steps, warmup=1, device=device)
    return {"device": str(device), "size": size, "cutn": cutn, "clip": clip, "it/s": f"{1 / seconds:.3f}",
            "s/it": f"{seconds:.2f}", "peak MiB": f"{peak_memory_mib(device):.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[256])
    parser.add_argument("--cutn", type=int, nargs="+", default=[32])
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    rows = [bench(size, cutn, args.clip, args.steps, device) for size in args.size for cutn in args.cutn]
    print_table(rows)


if __name__ == "__main__":
    main()
