"""artgen upscale: time and peak memory of a 512x512 picture brought to 1024 and 2048 (issue 56).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_upscale.py --source 512 --scale 2 4 --tile 256 --steps 5 \
        --set prior_scale=0
    PYTHONPATH=. .venv/bin/python benchmarks/bench_upscale.py --preset fast --device cuda   # real models, a GPU

Each upscale runs in a fresh process, so its peak (CPU: the resident set, VmHWM, models included; CUDA:
torch's peak allocation) is its own. The source is a smooth random picture without a recipe, refined toward
one prompt with the preset's generator (default: the bundled offline VQGAN, nothing to download), changed by
``--set NAME=VALUE`` (a setting by its preset name; its diffusion prior costs more than the rest of a step). With a
fixed --tile the peak should stay nearly flat from 1024 to 2048 while the time grows with the number of tiles;
the rows are appended to benchmarks/results/upscale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, write_record  # noqa: E402

from artgen.upscale import plan_tiles  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUN = """
import json, sys, time
import torch
from artgen.settings import UpscaleSettings
from artgen.upscale import upscale
args = json.loads(sys.argv[1])
settings = UpscaleSettings(scale=args["scale"], upscale_tile=args["tile"], upscale_overlap=args["overlap"])
start = time.perf_counter()
upscale(args["source"], settings, args["preset"], progress=False, prompts=[args["prompt"]], steps=args["steps"],
        seed=0, device=args["device"], output=args["output"], overwrite=True, **args["set"])
seconds = time.perf_counter() - start
if torch.cuda.is_available() and args["device"] != "cpu":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_mib": peak}))
"""


def smooth_picture(size: int, seed: int = 0) -> Image.Image:
    """A random picture of broad colour patches (noise enlarged), so the tiles have something to keep."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    array = image[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def run_one(args: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", RUN, json.dumps(args)], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=int, default=512, help="side of the square source picture")
    parser.add_argument("--scale", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--tile", type=int, default=256, help="--upscale-tile (output pixels)")
    parser.add_argument("--overlap", type=int, default=64, help="--upscale-overlap")
    parser.add_argument("--steps", type=int, default=10, help="steps of each tile")
    parser.add_argument("--preset", default="offline-vqgan")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every tile's run, its value read as YAML (repeatable)")
    options = parser.parse_args()
    changes = {name: yaml.safe_load(value) for name, _, value in (item.partition("=") for item in options.set)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "source.png"
        smooth_picture(options.source).save(source)
        for scale in options.scale:
            side = options.source * scale
            measured = run_one(dict(source=str(source), scale=scale, tile=options.tile, overlap=options.overlap,
                                    preset=options.preset, prompt=options.prompt, steps=options.steps,
                                    device=options.device, output=str(Path(folder) / f"up{scale}.png"),
                                    set=changes))
            tiles = len(plan_tiles(side, side, options.tile, options.overlap))
            rows.append({"source": options.source, "output": side, "tile": options.tile, "tiles": tiles,
                         "steps": options.steps, "preset": options.preset, "set": " ".join(options.set),
                         "device": options.device,
                         "seconds": round(measured["seconds"], 1), "peak_mib": round(measured["peak_mib"])})
    print_table(rows)
    print(f"appended to {write_record('upscale', rows)}")


if __name__ == "__main__":
    main()
