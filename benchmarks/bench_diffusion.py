"""CLIP-guided diffusion: seconds per guided step and peak memory, artgen against the plain baseline.

    .venv/bin/python benchmarks/bench_diffusion.py --cutn 16 32 --steps 2

The UNet is guided-diffusion's 256x256_diffusion_uncond architecture (about 550M parameters; --size 512: the
512x512 fine-tune Disco Diffusion uses), guided by an open_clip ViT-B-32, both with random weights: no download.
Both variants share the UNet and the sampler step; the baseline scores with the notebooks' plain cutouts (one
crop at a time, benchmarks/baseline.py) and reads the loss back every step, in fp32; artgen runs with its
defaults settled for the device (bf16 autocast and channels-last where the device computes bf16 natively, else
fp32). On CUDA the UNet's torso runs in fp16 in both (as the notebooks do). Expect tens of seconds per step on a
CPU. Appends the table to benchmarks/results/diffusion.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import PlainCLIPLoss  # noqa: E402
from common import peak_memory_mib, pick_device, print_table, time_steps, write_record  # noqa: E402

from artgen.auto import settle  # noqa: E402
from artgen.generators.diffusion import DiffusionGenerator  # noqa: E402
from artgen.generators import Canvas  # noqa: E402
from artgen.loop import Guide  # noqa: E402
from artgen.models.factory import unet_config  # noqa: E402
from artgen.models.sampling import create_diffusion  # noqa: E402
from artgen.models.unet import UNetModel, create_unet  # noqa: E402
from artgen.objective import build_objective  # noqa: E402
from artgen.perceptor import ClipSpec, load_perceptor  # noqa: E402
from artgen.settings import Settings, build_settings  # noqa: E402
from artgen.speed import precision_context  # noqa: E402

PROMPT = "a lighthouse at dusk"
SCALE = 5000.0
MODELS = {256: "256x256_diffusion_uncond", 512: "512x512_diffusion_uncond_finetune_008100"}  # by image size


def generator(model: UNetModel, size: int, cutn: int, device: torch.device,
              defaults: bool = False) -> tuple[DiffusionGenerator, Settings]:
    """The sampler over ``model``: plain (fp32, contiguous memory), or with artgen's defaults settled for the device."""
    torch.manual_seed(0)
    settings = build_settings(None, None, dict(prompts=[PROMPT], generator="diffusion", width=size, height=size,
                                               cutn=cutn, steps=250, clip_guidance_scale=SCALE))
    if defaults:
        settings, _ = settle(settings, device)
    else:
        settings = settings.replace(precision="fp32", channels_last=False, checkpointing=False)
    run = settings.run
    canvas = Canvas(size, size, 1, 250, device, run.channels_last, run.compile, run.checkpointing)
    diffusion = create_diffusion(1000, "linear", "250", True)
    return DiffusionGenerator(model, diffusion, settings.options, canvas, None), settings


def time_baseline(model: UNetModel, size: int, cutn: int, clip: str, steps: int,
                  device: torch.device) -> tuple[float, float]:
    sampler, _ = generator(model, size, cutn, device)
    clip_model = open_clip.create_model(clip, pretrained=None).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        text = clip_model.encode_text(open_clip.get_tokenizer(clip)([PROMPT]).to(device)).float()
    loss = PlainCLIPLoss(clip_model, text, clip_model.visual.image_size[0], cutn)
    guide = Guide(lambda image, progress: SCALE * loss(image.clamp(0, 1)), 0.0)

    def step() -> None:
        sampler.step(guide).item()  # the notebooks print the loss every step

    return time_steps(step, steps, warmup=1, device=device), peak_memory_mib(device)


def time_artgen(model: UNetModel, size: int, cutn: int, clip: str, steps: int,
                device: torch.device) -> tuple[float, float]:
    sampler, settings = generator(model, size, cutn, device, defaults=True)
    run = settings.run
    perceptor = load_perceptor(ClipSpec(clip, None), device, run.channels_last, run.compile,
                               fast_attention=run.precision != "fp32")
    guide = Guide(build_objective(run, [perceptor], device), 0.0, precision_context(run.precision, device))

    def step() -> None:
        sampler.step(guide)

    try:
        return time_steps(step, steps, warmup=1, device=device), peak_memory_mib(device)
    finally:
        model.to(memory_format=torch.contiguous_format)  # the next baseline gets the model as it was


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[256], choices=sorted(MODELS))
    parser.add_argument("--cutn", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--clip", default="ViT-B-32")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = pick_device(args.device)
    rows = []
    for size in args.size:
        name = MODELS[size]
        model = create_unet(unet_config(name, None)).to(device).eval().requires_grad_(False)
        if device.type == "cuda":
            model.convert_to_fp16()
        for cutn in args.cutn:
            base_seconds, base_memory = time_baseline(model, size, cutn, args.clip, args.steps, device)
            gc.collect()
            seconds, memory = time_artgen(model, size, cutn, args.clip, args.steps, device)
            gc.collect()
            rows.append({"device": str(device), "model": name, "cutn": cutn, "clip": args.clip,
                         "baseline s/step": round(base_seconds, 2), "baseline MiB": round(base_memory),
                         "artgen s/step": round(seconds, 2), "artgen MiB": round(memory),
                         "speed x": round(base_seconds / seconds, 2), "memory x": round(memory / base_memory, 2)})
        del model
        gc.collect()
    print_table(rows)
    print(f"recorded in {write_record('diffusion', rows)}")


if __name__ == "__main__":
    main()
