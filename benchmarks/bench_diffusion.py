"""Seconds per CLIP-guided diffusion step and peak memory, random weights in the real architectures.

    .venv/bin/python benchmarks/bench_diffusion.py --cutn 16 32 --steps 2

The UNet is guided-diffusion's 256x256_diffusion_uncond architecture (about 550M parameters), guided by an
open_clip ViT-B-32, both with random weights: no download. Expect tens of seconds per step on a CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_memory_mib, pick_device, print_table, time_steps  # noqa: E402

from artgen.generators.diffusion import DiffusionGenerator  # noqa: E402
from artgen.models.diffusion import create_diffusion  # noqa: E402
from artgen.models.unet import KNOWN_CONFIGS, create_unet  # noqa: E402
from artgen.objective import build_objective  # noqa: E402
from artgen.perceptor import ClipSpec, load_perceptor  # noqa: E402
from artgen.settings import Settings  # noqa: E402


def bench(model, cutn: int, clip: str, steps: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    settings = Settings(prompts=["a lighthouse at dusk"], generator="diffusion", width=256, height=256, cutn=cutn,
                        steps=250, clip_guidance_scale=5000.0).validate()
    diffusion = create_diffusion(1000, "linear", "250", True)
    generator = DiffusionGenerator(model, diffusion, settings, None, device)
    perceptor = load_perceptor(ClipSpec(clip, None), device)
    objective = build_objective(settings, [perceptor], device)

    def step() -> None:
        generator.step(objective(generator.render(), 0.0))

    seconds = time_steps(step, steps, warmup=1, device=device)
    return {"device": str(device), "model": "256x256_diffusion_uncond", "cutn": cutn, "clip": clip,
            "s/step": f"{seconds:.2f}", "peak MiB": f"{peak_memory_mib(device):.0f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cutn", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    config = KNOWN_CONFIGS["256x256_diffusion_uncond"]
    model = create_unet(config).to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        model.convert_to_fp16()
    print_table([bench(model, cutn, args.clip, args.steps, device) for cutn in args.cutn])


if __name__ == "__main__":
    main()
