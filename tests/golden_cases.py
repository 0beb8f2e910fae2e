"""Golden outputs: runs whose pixels must not change when the code is reorganised.

Each case is an ``artgen`` command line run on the CPU with one thread. ``python tests/golden_cases.py --record``
writes the pictures to tests/assets/golden/ together with the CPU kind they were drawn on (float results can
differ between instruction sets, so bit-identity is checked on the CPU kind that recorded them).
tests/test_golden.py runs the same commands and compares pixels. Every picture was recorded with the code of
c5221c5 (before the redesign of issue 57); the offline-vqgan case runs 30 of its preset's 200 steps to keep the
suite short (re-recorded with that code).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

GOLDEN = Path(__file__).parent / "assets" / "golden"
# Every case runs as the pictures were drawn: in fp32 without channels-last (the defaults may choose otherwise)
RECORDED_ARITHMETIC = ["--precision", "fp32", "--no-channels-last"]


def cpu_kind() -> str:
    return torch.backends.cpu.get_cpu_capability()


def write_init_image(path: Path, size: int = 32) -> Path:
    """A fixed picture (a diagonal colour ramp) to start runs from."""
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    red, green = np.meshgrid(ramp, ramp[::-1])
    pixels = np.stack([red, green, (red + green) / 2], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_models(folder: Path) -> dict[str, list[str]]:
    """Random-weight tiny models in the real formats, and the flags that use them."""
    from tiny_clip import write_tiny_clip
    from tiny_taming import write_tiny_taming
    from tiny_unet import tiny_unet_config, write_tiny_unet_checkpoint

    vqgan_config, vqgan_checkpoint = write_tiny_taming(folder)
    unet_checkpoint = write_tiny_unet_checkpoint(folder / "tiny-unet.pt")
    unet_config = folder / "tiny-unet.yaml"
    unet_config.write_text(yaml.safe_dump(dataclasses.asdict(tiny_unet_config())))
    clip_config, clip_checkpoint, _ = write_tiny_clip(folder)
    clip = ["--clip", "artgen-tiny-clip", "--clip-checkpoint", str(clip_checkpoint), "--clip-config", str(clip_config)]
    return {
        "vqgan": ["--vqgan-config", str(vqgan_config), "--vqgan-checkpoint", str(vqgan_checkpoint), *clip],
        "diffusion": ["--generator", "diffusion", "--diffusion-config", str(unet_config),
                      "--diffusion-checkpoint", str(unet_checkpoint), *clip],
    }


def cases(folder: Path) -> dict[str, list[str]]:
    """Case name -> artgen arguments (the output path is added by the runner)."""
    flags = write_models(folder)
    init = str(write_init_image(folder / "init.png"))
    small = ["--width", "32", "--height", "32", "--cutn", "4"]
    return {
        "offline": ["generate", "a yellow circle", "--preset", "offline", "--seed", "0"],
        "offline-vqgan": ["generate", "a yellow circle", "--preset", "offline-vqgan", "--seed", "0", "--steps", "30"],
        "vqgan": ["generate", "a red circle", *flags["vqgan"], *small, "--steps", "6", "--seed", "1",
                  "--init-image", init, "--init-weight", "0.5", "--tv-scale", "0.1"],
        "diffusion": ["generate", "a red circle", *flags["diffusion"], *small, "--diffusion-steps", "100",
                      "--timestep-respacing", "6", "--seed", "2", "--clip-guidance-scale", "500"],
        "diffusion-ddim-init": ["generate", "a red circle", *flags["diffusion"], *small, "--diffusion-steps", "100",
                                "--sampler", "ddim", "--eta", "0.5", "--steps", "6", "--seed", "3",
                                "--init-image", init, "--skip-steps", "2", "--init-scale", "100"],
        "vqgan-animation": ["animate", "a red circle", *flags["vqgan"], *small, "--steps", "3", "--seed", "4",
                            "--frames", "3", "--zoom", "1.1", "--angle", "5"],
    }


def run_case(args: list[str], output: Path) -> list[Path]:
    """Run one case in-process with one thread; returns the pictures it drew (an animation's frames)."""
    from artgen.cli import main

    torch.set_num_threads(1)
    target = ["--frames-dir", str(output)] if args[0] == "animate" else ["--output", str(output / "image.png")]
    try:
        main([*args, *RECORDED_ARITHMETIC, *target, "--quiet", "--overwrite"])
    except SystemExit as exit:
        if exit.code:
            raise RuntimeError(f"artgen {' '.join(args)} exited with {exit.code}") from None
    if args[0] == "animate":
        return sorted(output.glob("frame_*.png"))
    return [output / "image.png"]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def record(folder: Path) -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, args in cases(folder).items():
        drawn = run_case(args, folder / name)
        for index, path in enumerate(drawn):
            Image.fromarray(pixels(path)).save(GOLDEN / f"{name}-{index}.png")
        print(name, len(drawn), flush=True)
    (GOLDEN / "cpu.json").write_text(json.dumps({"cpu_kind": cpu_kind()}) + "\n")


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/golden_cases.py --record")
    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
