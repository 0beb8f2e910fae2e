"""Does an edit repaint the masked part toward its prompt, keep everything else, and leave no seam?

    .venv/bin/python -m lab.edit_report --folder /tmp/edits            # the figures for lab/README.md
    .venv/bin/python -m lab.edit_report --folder /tmp/edits --example examples/edit-offline.png
        # ... and the README's before / mask / after picture, and all 24 edits beside it (edit-offline-grid.png)

Each of the 24 prompts "a COLOUR SHAPE" edits its own picture: a shape of another colour and kind in the left
half of a plain ground, with the right half masked (a --mask-box), drawn by the offline diffusion preset at its
32x32 with seed 300 + i. Measured on one thread per image, two images side by side:
- colour: the CLIP-free checker reads the asked colour in the masked half (trained CLIP, and the random-weight
  control with the same seeds);
- kept: the largest difference outside the mask between the input and the output PNG (must be 0);
- seam: the gradient energy where the edit meets the kept picture (see ``seam``) for the edit as shipped
  (feathered and harmonized by the sampler), the edit with --mask-blur 0 (harmonized only), and, as the control, a
  picture drawn for the same prompt without a mask pasted into the masked half (a plain paste), and that paste
  feathered as the edit is. 1 means the edge is as smooth as the picture on average.
"""

from __future__ import annotations

import argparse
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import artgen
from artgen.masks import feather
from artgen.output import contact_sheet
from lab.scenes import SHAPE_COLOURS, SHAPES, Scene, Shape, render
from lab.shape_checker import read_colour
from lab.zoo_report import ALL_PROMPTS, random_clip_checkpoint

SIZE = 32  # the offline diffusion's size
EDGE = SIZE // 2  # the mask is the right half: columns EDGE and on
BLUR = 4  # the default --mask-blur
BAND = slice(EDGE - 1, EDGE + BLUR)  # the column steps from the last kept column through the feathered strip
FIRST_SEED = 300
GROUNDS = ("grey", "light grey", "dark grey", "white", "black")


def source(index: int, folder: Path) -> Path:
    """Prompt ``index``'s picture: a shape of another colour and kind in the left half of a plain ground."""
    colour, shape = ALL_PROMPTS[index]
    colours = list(SHAPE_COLOURS)
    other = colours[(colours.index(colour) + 3) % len(colours)]  # the opposite hue
    kind = SHAPES[(SHAPES.index(shape) + 1) % len(SHAPES)]
    ground = GROUNDS[index % len(GROUNDS)]
    path = folder / f"source-{index:02d}.png"
    render(Scene((Shape(other, kind, (0.25, 0.5), 0.4),), (ground, ground), SIZE)).save(path)
    return path


def draw(index: int, folder: Path, variant: str, clip_checkpoint: Path | None = None) -> Path:
    """One picture of prompt ``index``: ``edit`` (as shipped), ``hard`` (--mask-blur 0), ``control`` (the edit with
    random CLIP weights) or ``free`` (no mask: the paste's picture)."""
    colour, shape = ALL_PROMPTS[index]
    output = folder / f"{variant}-{index:02d}.png"
    if output.exists():
        return output
    settings = dict(prompts=[f"a {colour} {shape}"], seed=FIRST_SEED + index, output=str(output), save_scale=1)
    if variant == "free":
        artgen.generate(preset="offline", progress=False, **settings)
        return output
    if clip_checkpoint is not None:
        settings["clip_checkpoint"] = [str(clip_checkpoint)]
    settings |= dict(mask_box=f"{EDGE},0,{SIZE - EDGE},{SIZE}") | ({"mask_blur": 0} if variant == "hard" else {})
    artgen.edit(folder / f"source-{index:02d}.png", preset="offline", progress=False, **settings)
    return output


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.float64)


def seam(picture: np.ndarray) -> float:
    """The gradient energy (squared colour step between neighbouring columns) in the band where the edit meets the
    kept picture, the edge and the feathered strip inside it, over the picture's mean: 1 is as smooth as the
    picture on average. A jump spread over the strip's columns counts less than the same jump at once."""
    energy = np.square(np.diff(picture, axis=1)).sum(axis=2)  # [H, W-1]: column x to x+1
    return float(energy[:, BAND].mean() / max(energy.mean(), 1e-6))


def pasted(free: np.ndarray, kept: np.ndarray, blur: float) -> np.ndarray:
    """``free`` pasted into ``kept``'s masked half, feathered over ``blur`` pixels as an edit is (0: a hard edge)."""
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., EDGE:] = 1
    soft = feather(mask, blur)[0, 0, :, :, None].numpy()
    return np.round(free * soft + kept * (1 - soft))


def measure(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(len(ALL_PROMPTS)):
        source(index, folder)
    control = random_clip_checkpoint(folder)
    jobs = [(index, folder, variant, control if variant == "control" else None)
            for variant in ("edit", "control", "hard", "free") for index in range(len(ALL_PROMPTS))]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for future in [pool.submit(draw, *job) for job in jobs]:
            future.result()
    seams = ("edit", "hard", "paste", "paste feathered")
    figures: dict = {"colour": {}, "kept": {}, "seam": {name: [] for name in seams}}
    for variant in ("edit", "control"):
        hits = [read_colour(pixels(folder / f"{variant}-{i:02d}.png")[:, EDGE:].astype(np.uint8)) == colour
                for i, (colour, _) in enumerate(ALL_PROMPTS)]
        figures["colour"][variant] = sum(hits) / len(hits)
    for variant in ("edit", "control", "hard"):
        figures["kept"][variant] = max(float(np.abs(pixels(folder / f"{variant}-{i:02d}.png")[:, :EDGE]
                                                    - pixels(folder / f"source-{i:02d}.png")[:, :EDGE]).max())
                                       for i in range(len(ALL_PROMPTS)))
    for index in range(len(ALL_PROMPTS)):
        kept, free = pixels(folder / f"source-{index:02d}.png"), pixels(folder / f"free-{index:02d}.png")
        figures["seam"]["edit"].append(seam(pixels(folder / f"edit-{index:02d}.png")))
        figures["seam"]["hard"].append(seam(pixels(folder / f"hard-{index:02d}.png")))
        figures["seam"]["paste"].append(seam(pasted(free, kept, 0)))
        figures["seam"]["paste feathered"].append(seam(pasted(free, kept, BLUR)))
    figures["seam"] = {name: float(np.mean(values)) for name, values in figures["seam"].items()}
    return figures


def enlarged(picture: np.ndarray, factor: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(picture, np.float32) / 255).permute(2, 0, 1)
    return torch.nn.functional.interpolate(tensor[None], scale_factor=factor, mode="nearest")[0]


def example(folder: Path, path: Path, indices: tuple[int, ...] = (1, 15, 22)) -> None:
    """Rows of before / mask / after for a few prompts, 4x enlarged: the README's picture (prompts whose edit kept
    the ground; the grid beside it shows all 24)."""
    tiles, labels = [], []
    mask = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask[:, EDGE:] = 255
    mask[[0, -1], :], mask[:, [0, -1]] = 128, 128  # a frame, so the white half shows on the sheet's white
    for index in indices:
        colour, shape = ALL_PROMPTS[index]
        for picture, label in ((pixels(folder / f"source-{index:02d}.png"), "before"), (mask, "mask: white repaints"),
                               (pixels(folder / f"edit-{index:02d}.png"), f"a {colour} {shape}")):
            tiles.append(enlarged(picture, 4))
            labels.append(label)
    contact_sheet(tiles, labels, columns=3).save(path)
    sheet = contact_sheet([enlarged(pixels(folder / f"edit-{index:02d}.png"), 3) for index in range(len(ALL_PROMPTS))],
                          [f"a {colour} {shape}" for colour, shape in ALL_PROMPTS], columns=8)
    sheet.quantize(256).save(path.with_name(f"{path.stem}-grid.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="Where the pictures go (drawn ones are reused).")
    parser.add_argument("--example", type=Path, help="Also write the before / mask / after picture here.")
    args = parser.parse_args()
    figures = measure(args.folder)
    print(f"colour read in the mask: edit {figures['colour']['edit']:.0%}, random-weight control "
          f"{figures['colour']['control']:.0%} of {len(ALL_PROMPTS)} prompts")
    print("largest change outside the mask (0-255): " + ", ".join(f"{k} {v:g}" for k, v in figures["kept"].items()))
    print("seam (edge step / mean step): " + ", ".join(f"{k} {v:.2f}" for k, v in figures["seam"].items()))
    if args.example:
        example(args.folder, args.example)


if __name__ == "__main__":
    main()
