"""Does a prompt steer the picture? Runs the offline presets on colour x shape prompts and reads the results
with the CLIP-free checker; also the report table of lab/README.md and the example grids.

    .venv/bin/python -m lab.zoo_report --write --seeds 0 100 200
        # all 24 prompts on three seed sets, every run in RUNS: lab/README.md's table + grids
    .venv/bin/python -m lab.zoo_report --measure diffusion --seeds 0 100 --set tv_scale=2000
        # one run with changed settings, over several seed sets, with a 95% interval: is a change real?
    .venv/bin/python -m lab.zoo_report --write --seeds 0 100 200 --runs vqgan --images /tmp/zoo-images
        # after a change to one preset: redraw its rows only, reusing the images a --measure with the same
        # --images folder drew with the same settings (and any an interrupted report left)
    .venv/bin/python -m lab.zoo_report --write --seeds 0 --runs pixels pixel-art strokes --images DIR
    .venv/bin/python -m lab.zoo_report --overview examples/offline-weightless.png --runs pixels pixel-art strokes --images DIR
        # the weightless generators' rows on one seed set (each row names its sets), then one row of six of
        # the same images (read back from DIR) per generator, for the user guide

tests/test_offline_e2e.py runs a few prompts of the same measurement in the suite (VQGAN+CLIP at half its steps).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

import artgen
from artgen.auto import settle
from artgen.errors import UserError
from artgen.generators import generator_class
from artgen.models import hub
from artgen.images import load_image, pil_to_tensor
from artgen.output import contact_sheet, read_metadata, save_png
from artgen.perceptor import register_model_config
from artgen.settings import Settings, build_settings
from lab.scenes import SHAPE_COLOURS, SHAPES
from lab.shape_checker import read

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("lab", "README.md")  # the lab page under ROOT, whose table --write rewrites

# Each measured run: its name in the table and the grid's file name -> (preset, extra settings). The presets as
# shipped, and diffusion as the best of two runs by CLIP score (lab/README.md: "--candidates 2"), which is not in the
# preset because animations draw one image per frame. The generators that need no weights: their presets as
# shipped, scored by the bundled CLIP instead of ViT-B-32, at 128x128, in fp32 (as the offline presets pin it: the
# rates then do not depend on whether a CPU computes bf16).
WEIGHTLESS = {"clip": ["shapes-clip"], "width": 128, "height": 128, "precision": "fp32"}  # fp32: as the others
RUNS = {"vqgan": ("offline-vqgan", {}), "diffusion": ("offline", {}),
        "diffusion-best-of-2": ("offline", {"candidates": 2}),
        "pixels": ("pixels", WEIGHTLESS), "pixel-art": ("pixel-art", WEIGHTLESS), "strokes": ("strokes", WEIGHTLESS)}
ALL_PROMPTS = [(colour, shape) for shape in SHAPES for colour in SHAPE_COLOURS]
# The random-weight control of a slow run draws only this many prompts, every colour once (strokes: about 3
# minutes an image on one thread at 128x128).
CONTROL_PROMPTS = {"strokes": 6}
START, END = "<!-- zoo-report:start -->", "<!-- zoo-report:end -->"


@dataclass
class HitRates:
    colour: float
    shape: float
    images: list   # [3,H,W] tensors, in prompt order
    readings: list  # (colour, shape) read from each image


def random_clip_checkpoint(folder: Path) -> Path:
    """shapes-clip's architecture with random weights: the control that must do clearly worse."""
    register_model_config(hub.resolve("shapes-clip", "config"))
    torch.manual_seed(0)
    model = open_clip.create_model("shapes-clip", pretrained=None)
    path = folder / "random-shapes-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def draw_and_read(run: str, colour: str, shape: str, seed: int, output: Path, clip_checkpoint: Path | None = None,
                  settings: dict | None = None) -> tuple[torch.Tensor, tuple[str, str]]:
    """One image for "a COLOUR SHAPE" with the run's offline preset (and ``settings`` over it), and what the
    checker reads in it. An image already at ``output`` that was drawn with the same settings is read, not redrawn:
    an interrupted report resumes, and a measured change's images count in the table (``--images``)."""
    preset, extra = RUNS[run]
    overrides = {**extra, **(settings or {}), "prompts": [f"a {colour} {shape}"], "seed": seed, "output": str(output),
                 "overwrite": True}
    if clip_checkpoint:
        overrides["clip_checkpoint"] = [str(clip_checkpoint)]
    recipe = build_settings(preset, overrides=overrides)
    if drawn_with(output, recipe):
        return pil_to_tensor(load_image(output, "drawn image"))[0], read(str(output))
    result = artgen.generate(recipe, progress=False)
    return result.images[0], read(str(result.path))


def drawn_with(path: Path, settings: Settings) -> bool:
    """Whether ``path`` is an artgen image drawn with exactly these settings (seed and prompt included). Where it was
    written is left out: it does not change the drawing, and a folder of images may be moved or copied."""
    if not path.exists():
        return False
    settings = settle(settings, torch.device("cpu"))[0]  # the image records what auto chose for its run
    if settings.run.clip_guidance_scale is None:  # the image records the generator's default that the run used
        default = generator_class(settings.run.generator).default_clip_guidance_scale
        settings = settings.replace(clip_guidance_scale=default)
    try:  # a recipe written before a setting existed was drawn with that setting's default
        recorded = json.loads(json.dumps(build_settings(base=read_metadata(path).get("settings") or {}).to_dict()))
    except UserError:
        return False
    wanted = json.loads(json.dumps(settings.to_dict()))
    recorded.pop("output", None)
    wanted.pop("output", None)
    return recorded == wanted


def tally(prompts: list[tuple[str, str]], drawn: list[tuple[torch.Tensor, tuple[str, str]]]) -> HitRates:
    """The shares of images read as their prompt's colour / shape."""
    images, readings = [image for image, _ in drawn], [reading for _, reading in drawn]
    colour_hits = sum(reading[0] == colour for reading, (colour, _) in zip(readings, prompts))
    shape_hits = sum(reading[1] == shape for reading, (_, shape) in zip(readings, prompts))
    return HitRates(colour_hits / len(prompts), shape_hits / len(prompts), images, readings)


def output_path(folder: Path, run: str, seed: int, clip_checkpoint: Path | None) -> Path:
    return folder / f"{run}-{seed}-{'trained' if clip_checkpoint is None else 'control'}.png"


def hit_rates_with_control(run: str, prompts: list[tuple[str, str]], folder: Path, control: Path, seed: int = 0,
                           control_every: int = 1, settings: dict | None = None) -> tuple[HitRates, HitRates]:
    """The share of images read as their prompt's colour / shape, with the trained CLIP on every prompt and the
    random-weight ``control`` on every ``control_every``-th prompt (prompt i uses seed ``seed + i`` in both), drawn
    side by side by ``draw_side_by_side``, with ``settings`` over the run's preset."""
    jobs = [(run, *prompts[index], seed + index, output_path(folder, run, seed + index, None), None, settings)
            for index in range(len(prompts))]
    jobs += [(run, *prompts[index], seed + index, output_path(folder, run, seed + index, control), control, settings)
             for index in range(0, len(prompts), control_every)]
    drawn = draw_side_by_side(jobs)
    return tally(prompts, drawn[:len(prompts)]), tally(prompts[::control_every], drawn[len(prompts):])


def control_prompts(run: str) -> list[int]:
    """Indices of the prompts the random-weight control draws for ``run``: all, or for a slow run CONTROL_PROMPTS[run]
    of them, every colour once (stepping by 7 through the 24 visits each colour before any repeats)."""
    count = CONTROL_PROMPTS.get(run, len(ALL_PROMPTS))
    return sorted(7 * k % len(ALL_PROMPTS) for k in range(count)) if count < len(ALL_PROMPTS) else list(
        range(len(ALL_PROMPTS)))


def draw_seed_sets(run: str, folder: Path, sets: list[tuple[int, Path | None]],
                   settings: dict | None = None) -> list[HitRates]:
    """Every prompt once for each (first seed, CLIP checkpoint or None for the trained one) in ``sets`` (a control
    set: the prompts of ``control_prompts``), all drawn side by side; each set's hit rates. Prompt i of a set uses
    seed ``first seed + i``."""
    chosen = [list(range(len(ALL_PROMPTS))) if clip is None else control_prompts(run) for _, clip in sets]
    jobs = [(run, *ALL_PROMPTS[index], seed + index, output_path(folder, run, seed + index, clip), clip, settings)
            for (seed, clip), indices in zip(sets, chosen) for index in indices]
    drawn = draw_side_by_side(jobs)
    rates, start = [], 0
    for indices in chosen:
        rates.append(tally([ALL_PROMPTS[i] for i in indices], drawn[start:start + len(indices)]))
        start += len(indices)
    return rates


def draw_side_by_side(jobs: list[tuple]) -> list[tuple[torch.Tensor, tuple[str, str]]]:
    """``draw_and_read(*job)`` for every job, by two one-thread processes side by side, in job order.

    Why: two one-thread runs at once finish about 1.3x sooner than one after the other on two threads, and the
    readings no longer depend on how many threads the machine gives torch (its float kernels differ by count).
    """
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(draw_and_read, *job) for job in jobs]
        return [future.result() for future in futures]


def zoo_rows() -> list[str]:
    rows = []
    for name in ("shapes-clip", "shapes-vqgan", "shapes-diffusion"):
        path = hub.model_path(name, "checkpoint").with_name(f"{name}.metrics.json")
        metrics = json.loads(path.read_text()) if path.exists() else {}
        size = hub.model_path(name, "checkpoint").stat().st_size / 2**20
        rows.append(f"| `{name}` | {size:.1f} MiB | {summary(name, metrics)} |")
    return rows


def summary(name: str, metrics: dict) -> str:
    if name == "shapes-clip":
        accuracy = metrics.get("zero_shot_accuracy", {})
        return (f"zero-shot colour {accuracy.get('colour_full', float('nan')):.0%}, "
                f"shape {accuracy.get('shape_full', float('nan')):.0%} (held-out scenes)")
    if name == "shapes-vqgan":
        return (f"reconstruction MSE {metrics.get('mse', float('nan')):.4f}, "
                f"PSNR {metrics.get('psnr_db', float('nan')):.1f} dB")
    samples = metrics.get("samples", {})
    ddpm = samples.get("ddpm_100_steps", {})
    shapes = ", ".join(f"{kind} {share:.0%}" for kind, share in ddpm.get("shapes_read", {}).items() if share)
    return (f"unguided DDPM samples that are flat-coloured scenes: {ddpm.get('scene_like_share', float('nan')):.0%}; "
            f"pixels on the scene palette: {ddpm.get('mean_palette_share', float('nan')):.0%} (real scenes 96%); "
            f"read as {shapes or '?'} (real scenes about 25% each)")


def report(folder: Path, seeds: list[int], runs: Sequence[str] = tuple(RUNS), earlier: str = "") -> str:
    """The lab page's table: the zoo's metrics, then each run's hit rates pooled over the seed sets ``seeds`` (and per
    set), and the random-weight control's on the first set; each run's grid shows the first set's images. Runs not
    in ``runs`` keep their rows from the ``earlier`` table: each row names its seed sets, so a run measured on fewer
    sets (a slow one, a new one) sits beside the others without redrawing them."""
    control = random_clip_checkpoint(folder)
    sentence = (f"End to end, {len(ALL_PROMPTS)} prompts \"a COLOUR SHAPE\" (6 colours x 4 shapes), one image each, "
                "on the row's seed sets (seed set s: prompt i uses seed s + i; each set's rate in brackets; the "
                "random weights draw the first set), read by the CLIP-free checker, each image drawn on one thread:")
    lines = ["| model | size | quality |", "|---|---|---|", *zoo_rows(), "", sentence, "",
             "| run | CLIP | seed sets | colour hit rate | shape hit rate |", "|---|---|---|---|---|"]
    for run in RUNS:
        if run not in runs:
            lines += earlier_rows(earlier, run)
            continue
        per_set = draw_seed_sets(run, folder, [(seed, None) for seed in seeds] + [(seeds[0], control)])
        trained, random = per_set[:-1], per_set[-1]
        name = run.replace("-", " ")
        lines.append(f"| {name} | shapes-clip | {', '.join(map(str, seeds))} | "
                     f"{pooled_with_sets([r.colour for r in trained])} | "
                     f"{pooled_with_sets([r.shape for r in trained])} |")
        sampled = "" if len(random.images) == len(ALL_PROMPTS) else f" ({len(random.images)} prompts, every colour)"
        lines.append(f"| {name} | random weights | {seeds[0]}{sampled} | {random.colour:.0%} | {random.shape:.0%} |")
        labels = [f"{c} {s}" for c, s in ALL_PROMPTS]
        tiles = [F.interpolate(image[None], size=(128, 128), mode="nearest")[0] for image in trained[0].images]
        sheet = contact_sheet(tiles, labels, columns=6).quantize(256)  # smooth fields: under half the bytes
        save_png(sheet, ROOT / "examples" / f"offline-{run}-grid.png", {"prompts": labels, "seed": seeds[0]})
    return "\n".join(lines)


def overview(runs: Sequence[str], folder: Path, path: Path, seed: int = 0) -> None:
    """One row per run of six prompts, every colour once and the shapes in turn, saved at ``path``: a small picture
    of the runs side by side for the user guide. They are seed set ``seed``'s images, so those the report or a
    --measure drew in ``folder`` with the same settings are read back, not redrawn. Tiles of 96 pixels (nearest:
    128-pixel pictures keep even cells) and 256 colours keep it to about 50 KB a row in the repository."""
    prompts = list(zip(SHAPE_COLOURS, itertools.cycle(SHAPES)))
    jobs = [(run, colour, shape, seed + ALL_PROMPTS.index((colour, shape)),
             output_path(folder, run, seed + ALL_PROMPTS.index((colour, shape)), None), None, None)
            for run in runs for colour, shape in prompts]
    tiles = [F.interpolate(image[None], size=(96, 96), mode="nearest")[0] for image, _ in draw_side_by_side(jobs)]
    labels = [f"{run}: {colour} {shape}" if column == 0 else f"{colour} {shape}"
              for run in runs for column, (colour, shape) in enumerate(prompts)]
    sheet = contact_sheet(tiles, labels, columns=len(prompts)).quantize(256)
    save_png(sheet, path, {"prompts": labels, "seed": seed})


def earlier_rows(earlier: str, run: str) -> list[str]:
    """The ``run``'s rows of the earlier table, each naming its seed sets."""
    name = run.replace("-", " ")
    rows = [line for line in earlier.splitlines() if line.startswith(f"| {name} |")]
    if not rows:
        raise SystemExit(f"lab/README.md's table has no rows for {run}; add {run} to --runs")
    return rows


def pooled_with_sets(rates: list[float]) -> str:
    """"67% (71, 58, 71)": the mean of equal-sized sets' rates, then each set's, when there is more than one."""
    pooled = f"{sum(rates) / len(rates):.0%}"
    return pooled if len(rates) == 1 else f"{pooled} ({', '.join(f'{rate * 100:.0f}' for rate in rates)})"


def parse_setting(text: str) -> tuple[str, object]:
    """``key=value`` -> (key, value read as YAML, so numbers, booleans and lists keep their type)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {text!r}: write it as key=value, for example --set tv_scale=2000")
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError:
        raise SystemExit(f"--set {text!r}: the value is not valid YAML; quote it, for example "
                         "--set 'cut_overview=\"[8]*1000\"'") from None


def interval(hits: int, total: int) -> tuple[float, float]:
    """The 95% Wilson interval of a hit rate.

    Why: at 24 prompts it spans about 40 points, so one seed set cannot tell a 40% run from a 60% one; a
    change is only worth shipping when it holds over several seed sets.
    """
    z, rate = 1.96, hits / total
    centre = (rate + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def shape_breakdown(readings: list) -> str:
    """Asked shapes drawn, per shape, over ALL_PROMPTS' readings: which shape a change helps or hurts."""
    counts = {shape: [0, 0] for shape in SHAPES}
    for (_, asked), (_, read_shape) in zip(ALL_PROMPTS, readings):
        counts[asked][0] += read_shape == asked
        counts[asked][1] += 1
    return " ".join(f"{shape} {hits}/{total}" for shape, (hits, total) in counts.items())


def measure(run: str, settings: dict, seeds: list[int], folder: Path, grid: Path | None = None) -> None:
    """Print the run's hit rates on all prompts for each seed set (seed s: prompts use s, s+1, ...) and pooled,
    each image drawn on one thread as ``report`` draws them, so a measured change compares with the table."""
    colour_hits = shape_hits = 0
    images = []
    for seed, rates in zip(seeds, draw_seed_sets(run, folder, [(seed, None) for seed in seeds], settings)):
        colour_hits += round(rates.colour * len(ALL_PROMPTS))
        shape_hits += round(rates.shape * len(ALL_PROMPTS))
        images += rates.images
        print(f"{run} {settings} seeds {seed}-{seed + len(ALL_PROMPTS) - 1}: colour {rates.colour:.0%}, "
              f"shape {rates.shape:.0%} ({shape_breakdown(rates.readings)})", flush=True)
    total = len(seeds) * len(ALL_PROMPTS)
    pooled = [f"{name} {hits / total:.0%} ({low:.0%}-{high:.0%})" for name, hits in
              (("colour", colour_hits), ("shape", shape_hits)) for low, high in [interval(hits, total)]]
    print(f"pooled, {total} images: {', '.join(pooled)}; 95% intervals")
    if grid:
        labels = [f"{c} {s} #{seed}" for seed in seeds for c, s in ALL_PROMPTS]
        tiles = [F.interpolate(image[None], size=(96, 96), mode="nearest")[0] for image in images]
        save_png(contact_sheet(tiles, labels, columns=6), grid, {"prompts": labels})


def check_seed_sets(seeds: list[int]) -> None:
    """Seed sets must not overlap: an image counted twice would weigh twice in the pooled rates."""
    starts = sorted(seeds)
    if any(later - earlier < len(ALL_PROMPTS) for earlier, later in zip(starts, starts[1:])):
        raise SystemExit(f"--seeds {' '.join(map(str, seeds))}: each seed set takes {len(ALL_PROMPTS)} seeds, so "
                         f"these overlap; space them at least {len(ALL_PROMPTS)} apart, for example 0 100 200")


def page_table() -> str:
    """The table between the lab page's zoo-report markers."""
    match = re.search(f"{re.escape(START)}\n(.*)\n{re.escape(END)}", (ROOT / PAGE).read_text(), flags=re.S)
    return match.group(1) if match else ""


def write_page(table: str) -> None:
    page = ROOT / PAGE
    text = page.read_text()
    text = re.sub(f"{re.escape(START)}.*{re.escape(END)}", f"{START}\n{table}\n{END}", text, flags=re.S)
    page.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="update lab/README.md and the example grids")
    parser.add_argument("--measure", choices=RUNS, help="measure only this run, with --set changes, per seed set")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a generate() setting over the run's preset (repeatable), e.g. clip_checkpoint=[FILE]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="first seed of each seed set")
    parser.add_argument("--grid", type=Path, help="with --measure: save the images as a contact sheet here")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="draw only these runs; the others keep their rows in lab/README.md's table")
    parser.add_argument("--overview", type=Path, metavar="PNG", help="only save one row of six images per run in "
                        "--runs (the first seed set's) as one picture here, e.g. examples/offline-weightless.png")
    parser.add_argument("--images", type=Path, help="keep the images here, and reuse those drawn with the same "
                        "settings (a --measure of a change, then --write with it shipped, draws it once); the "
                        "code is not compared: start a new folder after changing artgen or the models")
    args = parser.parse_args()
    check_seed_sets(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.images or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if args.measure:
            try:
                measure(args.measure, dict(map(parse_setting, args.settings)), args.seeds, folder, args.grid)
            except UserError as error:
                raise SystemExit(f"error: {error}") from None
            raise SystemExit(0)
        if args.overview:
            overview(args.runs, folder, args.overview, args.seeds[0])
            raise SystemExit(0)
        table = report(folder, args.seeds, args.runs, page_table())
    print(table)
    if args.write:
        write_page(table)
