"""Calibrate artgen/memory.py: measured memory per pixel against the estimate, per generator and model.

    PYTHONPATH=. .venv/bin/python benchmarks/memory_calibration.py

Each run is a fresh process (one 2-step CPU run, cutn 2), so its peak RSS (VmHWM in /proc/self/status: torch's
allocations are invisible to tracemalloc and resource's ru_maxrss is per process tree) is its own. The slope
between two sizes is what one more pixel costs; the estimate's per-pixel bytes (before the safety factor)
should be at or above every measured slope, and within a small factor of it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RUN = """
import json, sys
import artgen
artgen.generate(progress=False, **json.loads(sys.argv[1]))
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) * 1024)
"""


def peak_rss(settings: dict) -> int:
    """Peak resident bytes of a fresh process that makes one image with these settings."""
    result = subprocess.run([sys.executable, "-c", RUN, json.dumps(settings)], capture_output=True, text=True,
                            check=True, cwd=settings["output"].rsplit("/", 1)[0])
    return int(result.stdout.split()[-1])


def model_sets(folder: Path) -> dict[str, dict]:
    from tiny_clip import write_tiny_clip
    from tiny_taming import write_tiny_taming
    from tiny_unet import tiny_unet_config, write_tiny_unet_checkpoint
    import yaml

    vq_config, vq_checkpoint = write_tiny_taming(folder)
    unet_checkpoint = write_tiny_unet_checkpoint(folder / "tiny-unet.pt")
    unet_config = folder / "tiny-unet.yaml"
    unet_config.write_text(yaml.safe_dump(dataclasses.asdict(tiny_unet_config())))
    clip_config, clip_checkpoint, _ = write_tiny_clip(folder)
    tiny_clip = dict(clip=["artgen-tiny-clip"], clip_checkpoint=[str(clip_checkpoint)], clip_config=[str(clip_config)])
    shapes_diffusion = dict(generator="diffusion", diffusion_model="shapes-diffusion", noise_schedule="cosine",
                            diffusion_steps=1000, timestep_respacing="2")
    return {
        "tiny vqgan": dict(vqgan_config=str(vq_config), vqgan_checkpoint=str(vq_checkpoint), **tiny_clip),
        "tiny diffusion": dict(generator="diffusion", diffusion_config=str(unet_config),
                               diffusion_checkpoint=str(unet_checkpoint), diffusion_steps=100,
                               timestep_respacing="2", **tiny_clip),
        "shapes vqgan": dict(vqgan_model="shapes-vqgan", clip=["shapes-clip"]),
        "shapes diffusion": dict(clip=["shapes-clip"], **shapes_diffusion),
    }


def main(sizes: tuple[int, int] = (64, 192)) -> None:
    from artgen.memory import footprint
    from artgen.settings import build_settings

    with tempfile.TemporaryDirectory() as folder:
        for name, values in model_sets(Path(folder)).items():
            base = dict(values, prompts=["a red circle"], steps=2, cutn=2, seed=0, device="cpu", overwrite=True,
                        output=f"{folder}/out.png")
            peaks = [peak_rss(dict(base, width=side, height=side)) for side in sizes]
            measured = peaks[1] - peaks[0]
            cost = footprint(build_settings(None, None, base))
            grows = [cost.per_pixel * side ** 2 + cost.per_pixel_squared * side ** 4 for side in sizes]
            estimate = grows[1] - grows[0]
            print(f"{name:17} peak {peaks[0] / 2**20:7.1f} / {peaks[1] / 2**20:7.1f} MiB at {sizes[0]} / {sizes[1]}: "
                  f"{measured / 2**20:7.1f} MiB more measured, {estimate / 2**20:7.1f} estimated "
                  f"({estimate / measured:.2f}x, before the safety factor)")


if __name__ == "__main__":
    main()
