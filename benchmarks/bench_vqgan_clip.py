"""VQGAN+CLIP: artgen's loop against the plain baseline loop, same process, same random-weight models.

    .venv/bin/python benchmarks/bench_vqgan_clip.py --size 256 512 --cutn 32 64 --steps 5
    .venv/bin/python benchmarks/bench_vqgan_clip.py --size 256 --cutn 32 --fast precision=bf16 channels_last

The models are the real architectures (taming's vqgan_imagenet_f16_16384 and an open_clip ViT-B-32) with
random weights, so nothing downloads. Variants: ``baseline`` (benchmarks/baseline.py), ``artgen`` (its
defaults, settled for the device as a run settles them: bf16 and channels-last where the device computes bf16
natively, else fp32) and ``fast`` (artgen with the settings given by --fast). Prints iterations per second,
peak memory (CUDA: torch's peak allocation; CPU: the process's peak resident set while stepping, models
included) and the ratios to the baseline, and appends the table to benchmarks/results/vqgan_clip.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import PlainCLIPLoss, PlainVQGANLoop  # noqa: E402
from common import (VQGAN_F16_16384, parse_fast, peak_memory_mib, pick_device, print_table, time_steps,  # noqa: E402
                    write_record)

from artgen.auto import settle  # noqa: E402
from artgen.generators.vqgan import VQGANGenerator, initial_latent  # noqa: E402
from artgen.loop import optimize  # noqa: E402
from artgen.models.vqgan import VQGAN  # noqa: E402
from artgen.objective import build_objective  # noqa: E402
from artgen.perceptor import ClipSpec, load_perceptor  # noqa: E402
from artgen.generators import Canvas  # noqa: E402
from artgen.settings import build_settings  # noqa: E402
from artgen.speed import to_channels_last  # noqa: E402
from artgen.speed import precision_context  # noqa: E402

PROMPT = "a lighthouse at dusk"


def vqgan(device: torch.device) -> VQGAN:
    torch.manual_seed(0)
    return VQGAN.from_config(VQGAN_F16_16384).to(device).eval().requires_grad_(False)


def time_baseline(size: int, cutn: int, clip: str, steps: int, device: torch.device) -> tuple[float, float]:
    model = vqgan(device)
    clip_model = open_clip.create_model(clip, pretrained=None).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        text = clip_model.encode_text(open_clip.get_tokenizer(clip)([PROMPT]).to(device)).float()
    loop = PlainVQGANLoop(model, initial_latent(model, "random", 1, size, size, device),
                          PlainCLIPLoss(clip_model, text, clip_model.visual.image_size[0], cutn))
    seconds = time_steps(loop.step, steps, warmup=1, device=device)
    return seconds, peak_memory_mib(device)


def time_artgen(size: int, cutn: int, clip: str, steps: int, device: torch.device, **fast) -> tuple[float, float]:
    settings, _ = settle(build_settings(None, None, dict(prompts=[PROMPT], width=size, height=size, cutn=cutn,
                                                         steps=10**6, clip_guidance_scale=1.0, **fast)), device)
    model = vqgan(device)
    run = settings.run
    model.decoder.checkpointing = run.checkpointing
    canvas = Canvas(size, size, 1, run.steps, device, run.channels_last, run.compile, run.checkpointing)
    generator = VQGANGenerator(to_channels_last(model, run.channels_last),
                               initial_latent(model, "random", 1, size, size, device), settings.options, canvas)
    perceptor = load_perceptor(ClipSpec(clip, None), device, run.channels_last, run.compile,
                               fast_attention=run.precision != "fp32")
    objective = build_objective(run, [perceptor], device)
    states = optimize(generator, objective, forward_context=precision_context(settings.precision, device))
    seconds = time_steps(lambda: next(states), steps, warmup=2 if settings.compile else 1, device=device)
    return seconds, peak_memory_mib(device)


def bench(size: int, cutn: int, clip: str, steps: int, device: torch.device, fast: dict) -> dict:
    row = {"device": str(device), "size": size, "cutn": cutn, "clip": clip}
    results = {}
    variants = [("baseline", lambda: time_baseline(size, cutn, clip, steps, device)),
                ("artgen", lambda: time_artgen(size, cutn, clip, steps, device))]
    if fast:
        variants.append(("fast", lambda: time_artgen(size, cutn, clip, steps, device, **fast)))
    for name, run in variants:
        results[name] = run()
        gc.collect()
    base_seconds, base_memory = results["baseline"]
    for name, (seconds, memory) in results.items():
        row[f"{name} it/s"] = round(1 / seconds, 3)
        row[f"{name} MiB"] = round(memory)
        if name != "baseline":
            row[f"{name} speed x"] = round(base_seconds / seconds, 2)
            row[f"{name} memory x"] = round(memory / base_memory, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[256])
    parser.add_argument("--cutn", type=int, nargs="+", default=[32])
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fast", nargs="*", default=[], help="settings of the fast variant, e.g. precision=bf16")
    args = parser.parse_args()
    device = pick_device(args.device)
    rows = [bench(size, cutn, args.clip, args.steps, device, parse_fast(args.fast))
            for size in args.size for cutn in args.cutn]
    print_table(rows)
    print(f"recorded in {write_record('vqgan_clip', rows)}")


if __name__ == "__main__":
    main()
