"""Train ``shapes-clip``: a tiny open_clip model that knows the colours and shapes of artgen's synthetic scenes.

Why: artgen needs a perceptor that works offline and in tests, yet still means something, so that a run
with "a red circle" visibly draws a red circle. A real CLIP is too large to ship; this one is ~7 MB and is
trained from nothing on ``artgen.scenes`` in minutes on a CPU.

Run it from the repository root:

    .venv/bin/python training/train_clip.py

It writes ``artgen/zoo/shapes-clip.json`` (the open_clip model config), ``shapes-clip.safetensors`` (the
weights, float16) and ``shapes-clip.metrics.json`` (held-out zero-shot accuracies, size, time, command).
On 2 CPU cores shared with other jobs, with one thread, it takes 10-20 minutes: 2000 steps at 0.26 s (light
load, 9 minutes measured) to 0.55 s (heavy load), plus ~30 s to render the scenes and ~30 s to evaluate.

Reproducibility: every source of randomness is seeded (scenes, weights, crops, caption choice), one thread
is used and deterministic algorithms are on, so a rerun with the same torch on the same machine gives
bit-identical weights (checked: three full runs under different loads wrote byte-identical files). Other CPUs
or torch versions may differ in the last float bits and drift from there; expect the same accuracies within a
few points, not the same bits. Measured (2026-12-02): a rerun on another machine (AMD EPYC, 6 minutes)
wrote other bits with the same held-out accuracies within half a point: colour 100% (shipped 100%), shape 95.3%
(95.0%); on crops colour 99.7% (99.8%), shape 86.7% (86.5%). Guiding the shipped generators on that machine
(``tests/zoo_report.py --measure RUN --seeds 0 100 200 --set clip_checkpoint=[FILE]``, 72 prompts, one thread), it
drew the asked colour and shape in 88% / 68% of prompts with VQGAN+CLIP (shipped CLIP 85% / 67%) and 85% / 56%
with diffusion (82% / 62%): within the 95% intervals of 72 prompts, about 10 points either way. (Shape rates
in this docstring were read by the checker used until 2026-12-02, which named a shape in every blob; the
outline fit since then reads about half as many, see the README table.)

The images the model sees imitate artgen's cutouts: a random square crop covering 50-100% of the side,
resampled bilinearly (as ``grid_sample`` does in ``artgen.cutouts``) to the input size and maybe mirrored.
There is no colour jitter, because colour is half of what the model must tell apart. Each crop gets Gaussian
noise of a random std up to ``--noise-max`` (0.1), as the cutouts' aug-noise adds: a CLIP trained on clean
crops only read grainy pictures (DDPM samples, noisy cutouts) as stars, so its shape gradient meant nothing
to CLIP-guided diffusion; with the noise, it steers the 64-channel UNet's shapes too (issue 5).

Why 0.1 and not more, and why a vision width of 8 (measured with the offline diffusion preset on the 24
prompts of tests/zoo_report.py, seeds 0-23, one thread, where this model drew colour 75%, shape 62%):
noise up to 0.25 or 0.4 raised the colour to 92% but not the shape (62%, 67%; 54% for 0.25 on seeds
100-123), and held-out zero-shot shape fell to 86% and 83%, under the 90% this model must reach; with VQGAN
the 0.4 model drew colour 100%, shape 58% (this one 92%, 67%). A vision tower of width 16 (9.2 MB) read every
held-out shape, yet steered diffusion to the asked shape less often: 25%, and 42% with noise up to 0.25.

Why a ResNet tower at 64 pixels rather than a ViT: a 3-layer ViT (width 64, 4-pixel patches at 32) learnt
colour perfectly but reached only 43% on shapes after 2500 steps (25 minutes), while this open_clip
ModifiedResNet, whose convolutions see edges and corners from the first step, was past 50% after 300.
The text tower's token table (49408 x 64) is most of the parameters; float16 keeps the file near 7 MB.

Shape is where this model falls short (README: the generators draw the asked shape in about a third of the
prompts). Its shape margin is small: on 40 clean 32 px one-shape scenes, the similarity of "a COLOUR SHAPE" with
the scene, less its highest similarity with the same scene redrawn as another shape (same colour, place and
area), averaged over 64 cutouts of the offline diffusion preset, is 0.10 for circles and stars but 0.000 for
squares and 0.013 for triangles; 0.027 and 0.059 with the cutouts' perspective off. Tried on 2026-12-03 (seed set
0 of tests/zoo_report.py, one thread; this model there: diffusion colour 92%, shape 33%; VQGAN+CLIP 92%, 29%),
none shipped:
- Shape-swapped twins as hard negatives (each batch pairs scenes with copies whose one shape has another kind):
  held-out shape 97%, the square and triangle margins about twice as wide (0.058, 0.083 without perspective), yet
  with perspective off diffusion drew 92% / 33% and VQGAN+CLIP 83% / 17%.
- Adversarial fine-tuning (600 steps from these weights, each crop pushed by 3 steps of L2 PGD within 0.5 or 1.5):
  its gradients draw edges instead of noise, and VQGAN+CLIP draws one object per image instead of many blobs
  (colour 96%, shape 21% at 1.5), but held-out shape falls to 91% and 64%, and diffusion drew 71% / 29% and
  83% / 25%. Twins and PGD together (1.0): held-out shape 75%, diffusion 79% / 25%.
- Lumpy blobs captioned "a COLOUR blob" as a quarter of the pool: narrower margins (square 0.017).
- Gaussian blur of std up to 4 px on half the crops, to read shape in the blurred pictures that early guided
  steps show: held-out shape 90%, diffusion 96% / 25% (with the twins 89%, 92% / 25%).
- Fine-tuned (800 steps) on clean scenes plus 6000 of the pictures guidance shows it: scenes noised to a random
  sampler step and blended with the UNet's prediction: held-out shape 90%, diffusion 100% / 29%.
- Fine-tuned with a second loss per image, its caption against the same caption with one shape's kind
  swapped for each other kind: held-out shape 98% (crops 92%), margins as with the twins, diffusion 83% / 33%
  with perspective off.
Squares came out as round or lumpy blobs in every one of these. The same shape loss with a vision width of 16,
trained from scratch (2000 steps, 12000 scenes, 17 minutes on two threads), is the first that moves shape, not yet
shipped: held-out shape 100%, margins with the preset's cutouts 0.084 (squares) and 0.093 (triangles), without
perspective 0.20; diffusion drew 92% / 46% on seed set 0, and with perspective off 92% / 54% (set 0) and 83% / 42%
(set 100, where this model drew 79% / 29%). The sampler is not the limit: guided towards a
drawn clean scene of the asked shape instead of by CLIP (an experiment only), the same diffusion loop drew it in 22
of 24 prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from anywhere

from artgen.scenes import SHAPE_COLOURS, SHAPES, Scene, captions, make_dataset  # noqa: E402

NAME = "shapes-clip"
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TRAIN_SEED, EVAL_SEED = 0, 1  # scene streams: training and held-out evaluation never share a scene
MIN_CROP = 0.5  # smallest training crop, as a fraction of the side
NOISE_MAX = 0.1  # largest std of a crop's Gaussian noise (artgen's offline preset cuts with aug-noise 0.05)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--scenes", type=int, default=20000, help="size of the pre-rendered training pool")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, crops and caption choice")
    parser.add_argument("--noise-max", type=float, default=NOISE_MAX,
                        help="add Gaussian noise to each training crop, its std drawn from [0, this] per crop; "
                             "0 trains on clean crops")
    parser.add_argument("--out", type=Path, default=REPO / "artgen" / "zoo")
    args = parser.parse_args()
    if args.noise_max < 0:
        parser.error(f"--noise-max {args.noise_max} is negative: give a noise std of 0 or more, e.g. 0.1")
    return args


def mirrored(scene: Scene) -> Scene:
    """The scene flipped left-right, so that "to the left of" captions stay true for flipped images."""
    shapes = tuple(dataclasses.replace(s, centre=(1 - s.centre[0], s.centre[1])) for s in reversed(scene.shapes))
    return dataclasses.replace(scene, shapes=shapes)


def build_pool(count: int, seed: int, tokenizer) -> tuple[Tensor, Tensor, Tensor]:
    """Images [N,3,64,64] uint8, and caption tokens [N,2,C,L] for the plain (0) and mirrored (1) scene."""
    images, tokens = [], []
    for image, _, scene in make_dataset(count, seed, size=64, max_shapes=2):
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        tokens.append(torch.stack([tokenizer(captions(scene)), tokenizer(captions(mirrored(scene)))]))
    return torch.stack(images), torch.stack(tokens)


def random_crops(images: Tensor, size: int, generator: torch.Generator, min_fraction: float = MIN_CROP,
                 flips: Tensor | None = None) -> Tensor:
    """Float [N,3,H,W] in [0,1] -> one random square crop each, bilinearly resampled to ``size``, maybe flipped.

    Sampled like artgen's cutouts (pixel-centre grid, ``grid_sample``, no antialiasing), so training sees the
    same aliasing that generation will show the model.
    """
    n, _, height, width = images.shape
    shorter = min(height, width)
    u = torch.rand(n, generator=generator)
    sides = (min_fraction * shorter + u * (1 - min_fraction) * shorter).round()
    left = (torch.rand(n, generator=generator) * (width - sides + 1)).floor()
    top = (torch.rand(n, generator=generator) * (height - sides + 1)).floor()
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = (left[:, None] + steps * sides[:, None]) / width * 2 - 1
    ys = (top[:, None] + steps * sides[:, None]) / height * 2 - 1
    if flips is not None:
        xs = torch.where(flips[:, None], xs.flip(-1), xs)
    grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def add_noise(crops: Tensor, generator: torch.Generator, largest: float) -> Tensor:
    """Gaussian noise of a random std in [0, largest] per crop, like artgen's cutout augmentation (aug-noise).

    Why: a model trained on clean crops only reads grainy pictures (DDPM samples, noisy cutouts) as stars, so
    its shape gradient means little while guiding diffusion. ``largest`` 0 draws nothing from ``generator``,
    so a clean run stays bit-identical to one made before this option existed.
    """
    if largest == 0:
        return crops
    strength = torch.rand(crops.shape[0], 1, 1, 1, generator=generator) * largest
    return crops + strength * torch.randn(crops.shape, generator=generator)


class Normalize(nn.Module):
    """open_clip's default (OpenAI) mean/std: what artgen's perceptor applies to this config."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


def optimizer_for(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW; gains, biases, embeddings and the temperature are not decayed (decay would only shrink them)."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        no_decay = param.ndim < 2 or "embedding" in name or "logit_scale" in name or "token" in name
        (plain if no_decay else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98), eps=1e-6)


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to zero."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train(model: nn.Module, images: Tensor, tokens: Tensor, args: argparse.Namespace) -> None:
    """Symmetric InfoNCE over (crop, one random caption) pairs, one random caption per image per step."""
    normalize = Normalize()
    optimizer = optimizer_for(model, args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    size = CONFIG["vision_cfg"]["image_size"]
    labels = torch.arange(args.batch)
    model.train()
    started = time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        index = torch.randint(len(images), (args.batch,), generator=generator)
        flips = torch.rand(args.batch, generator=generator) < 0.5
        choice = torch.randint(tokens.shape[2], (args.batch,), generator=generator)
        text = tokens[index, flips.long(), choice]
        crops = add_noise(random_crops(images[index].float() / 255, size, generator, flips=flips), generator,
                          args.noise_max)
        image_features = F.normalize(model.encode_image(normalize(crops)), dim=-1)
        text_features = F.normalize(model.encode_text(text), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  scale {model.logit_scale.exp().item():5.1f}  "
                  f"{time.time() - started:6.0f}s", flush=True)


@torch.no_grad()
def class_embeddings(model: nn.Module, tokenizer, attribute: str) -> Tensor:
    """One unit vector per colour (or shape): the mean of "a {colour} {shape}" over the other attribute."""
    rows = []
    for value in (SHAPE_COLOURS if attribute == "colour" else SHAPES):
        prompts = [f"a {value} {shape}" for shape in SHAPES] if attribute == "colour" else \
                  [f"a {colour} {value}" for colour in SHAPE_COLOURS]
        rows.append(F.normalize(F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def zero_shot(model: nn.Module, tokenizer, count: int, seed: int) -> dict[str, float]:
    """Accuracy on held-out one-shape scenes, on the whole image and on one cutout-like crop per image."""
    model.eval()
    scenes = list(make_dataset(count, seed, size=64, max_shapes=1))
    images = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im, _, _ in scenes]).float() / 255
    truth = {"colour": torch.tensor([list(SHAPE_COLOURS).index(s.shapes[0].colour) for _, _, s in scenes]),
             "shape": torch.tensor([SHAPES.index(s.shapes[0].kind) for _, _, s in scenes])}
    size = CONFIG["vision_cfg"]["image_size"]
    generator = torch.Generator().manual_seed(seed)
    views = {"full": random_crops(images, size, generator, min_fraction=1.0),
             "crops": random_crops(images, size, generator, flips=torch.rand(count, generator=generator) < 0.5)}
    normalize = Normalize()
    results = {}
    for view, batch in views.items():
        features = F.normalize(model.encode_image(normalize(batch)), dim=-1)
        for attribute, labels in truth.items():
            guess = (features @ class_embeddings(model, tokenizer, attribute).T).argmax(-1)
            results[f"{attribute}_{view}"] = (guess == labels).float().mean().item()
    return results


def save(model: nn.Module, folder: Path) -> Path:
    """Write the weights as float16 (contiguous, as safetensors needs) next to the config; returns the file.

    Integer buffers (BatchNorm's step counters) keep their dtype: they are counts, not weights.
    """
    state = {k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous()
             for k, v in model.state_dict().items()}
    path = folder / f"{NAME}.safetensors"
    save_file(state, str(path))
    return path


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # the machine is shared; one thread also keeps the sums' order fixed
    torch.use_deterministic_algorithms(True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    args.out.mkdir(parents=True, exist_ok=True)
    config_path = args.out / f"{NAME}.json"
    config_path.write_text(json.dumps(CONFIG, indent=2) + "\n")
    open_clip.add_model_config(config_path)
    tokenizer = open_clip.get_tokenizer(NAME)
    model = open_clip.create_model(NAME, pretrained=None)

    started = time.time()
    images, tokens = build_pool(args.scenes, TRAIN_SEED, tokenizer)
    print(f"{len(images)} training scenes rendered in {time.time() - started:.0f}s", flush=True)
    train(model, images, tokens, args)
    seconds = time.time() - started

    weights = save(model, args.out)
    model.load_state_dict(load_file(str(weights)))  # score the float16-rounded weights that ship
    accuracy = zero_shot(model, tokenizer, args.eval_scenes, EVAL_SEED)
    metrics = {
        "zero_shot_accuracy": accuracy,
        "eval_scenes": args.eval_scenes,
        "parameters": sum(v.numel() for v in model.state_dict().values()),
        "file_bytes": weights.stat().st_size,
        "train_seconds": round(seconds, 1),
        "steps": args.steps,
        "batch": args.batch,
        "training_scenes": args.scenes,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "command": " ".join(shlex.quote(a) for a in ["python", "training/train_clip.py", *sys.argv[1:]]),
    }
    (args.out / f"{NAME}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
