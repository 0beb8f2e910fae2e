"""Train ``shapes-clip``: a tiny open_clip model that knows the colours and shapes of artgen's synthetic scenes.

Why: artgen needs a perceptor that works offline and in tests, yet still means something, so that a run
with "a red circle" visibly draws a red circle. A real CLIP is too large to ship; this one is ~9 MB and is
trained from nothing on ``lab.scenes`` in minutes on a CPU.

Run it from the repository root:

    .venv/bin/python -m lab.training.train_clip

It writes ``artgen/zoo/shapes-clip.json`` (the open_clip model config), ``shapes-clip.safetensors`` (the
weights, float16) and ``shapes-clip.metrics.json`` (held-out zero-shot accuracies, size, time, command).
With one thread it takes 17 to 35 minutes by the machine: 2000 steps at 0.47 s to 0.9 s (a slower 2-core
machine, 2026-12-03: 1886 s in all), plus about a minute to render the scenes and one to evaluate.

Reproducibility: every source of randomness is seeded (scenes, weights, crops, caption choice, which shape a
twin caption renames), one thread is used and deterministic algorithms are on, so a rerun with the same torch
on the same machine gives bit-identical weights (checked: full runs under different loads wrote byte-identical
files). Other CPUs or torch versions may differ in the last float bits and drift from there; expect the same
accuracies within a few points, not the same bits: two runs of this recipe on two machines (2026-12-03) read
100% of held-out colours and shapes, and 99.8% / 99.0% and 99.8% / 99.3% on crops. Guided diffusion (offline
preset, seed sets 0, 100, 200) drew colour / shape 88% / 50% with the earlier run and 79% / 44% with the shipped
one: within the noise of 72 prompts (lab/README.md, the offline preset).

The images the model sees imitate artgen's cutouts: a random square crop covering 50-100% of the side,
resampled bilinearly (as ``grid_sample`` does in ``artgen.cutouts``) to the input size and maybe mirrored.
There is no colour jitter, because colour is half of what the model must tell apart. Each crop gets Gaussian
noise of a random std up to ``--noise-max`` (0.1), as the cutouts' aug-noise adds: a CLIP trained on clean
crops only read grainy pictures (DDPM samples, noisy cutouts) as stars, so its shape gradient meant nothing
to CLIP-guided diffusion. Noise up to 0.25 or 0.4 (width 8) drew no more shapes and fell under 90% held-out.

Two losses: the symmetric contrastive loss over the batch, and ``shape_loss``, where each crop must pick its
own caption over the same caption with one shape renamed as each other kind. The contrastive loss alone is met
by colour whenever no other scene of the batch has the same colours, which is most of the time, so it taught
shape weakly: the width-8 model shipped until 2026-12-03 (7 MB, the same recipe without the shape loss) read
95% of held-out shapes, but its shape margin under the offline preset's cutouts (the similarity of "a COLOUR
SHAPE" with a scene, less the highest with the scene redrawn as another shape of the same colour, place and
area, over 40 one-shape scenes and 64 cutouts) was 0.000 for squares and 0.013 for triangles, and guided by it
the generators drew the asked shape in about a third of the prompts (VQGAN+CLIP 28%, diffusion 32%). With the
shape loss and a vision width of 16 (measured on the earlier run of this recipe) the margins were 0.084 (squares)
and 0.093 (triangles), 0.20 without the cutouts' perspective, and diffusion without perspective drew the asked
shape in half the prompts (seed sets 0, 100, 200 of lab/zoo_report.py: 54 42 54%). VQGAN+CLIP did worse with
it (seed set 0: 12% against 29%): it draws several blobs of the asked colour, few readable outlines
(lab/README.md lists the offline-vqgan settings tried).

Tried for shape before, none better (seed set 0, one thread; the width-8 model there: diffusion colour 92%,
shape 33%; VQGAN+CLIP 92%, 29%):
- Width 16 without the shape loss: held-out shape 100%, yet diffusion drew the asked shape less often (25%).
- Shape-swapped twins as hard negatives in the contrastive batch: held-out shape 97%, margins about twice as
  wide, diffusion 92% / 33%, VQGAN+CLIP 83% / 17%.
- Adversarial fine-tuning (3 steps of L2 PGD within 0.5 or 1.5 per crop): VQGAN+CLIP draws one object per image
  (96% / 21% at 1.5), but held-out shape falls to 91% and 64%, diffusion 71% / 29% and 83% / 25%.
- Lumpy blobs captioned "a COLOUR blob" as a quarter of the pool: narrower margins (square 0.017).
- Gaussian blur of std up to 4 px on half the crops: held-out shape 90%, diffusion 96% / 25%.
- Fine-tuning on the pictures guidance shows (scenes noised to a sampler step, blended with the UNet's
  prediction): held-out shape 90%, diffusion 100% / 29%.
- The shape loss as a fine-tune of the width-8 model: held-out shape 98%, diffusion 83% / 33%.
- A 3-layer ViT (width 64, 4-pixel patches at 32) instead of the ResNet tower: colour perfect, shape 43% after
  2500 steps; the ModifiedResNet's convolutions see edges and corners from the first step.
- Rounded shapes (2026-12-04): 600 more steps from the shipped weights, adding one-shape scenes whose square,
  triangle or star is drawn part-way towards its circumscribed circle. Soft targets (the caption "circle"
  weighted by the rounding, the shape's kind by the rest): held-out shape 98.7% on crops, diffusion 96% / 33%,
  VQGAN+CLIP 96% / 21%. A hinge instead (the crisp shape must outscore its rounded twin on its own caption, the
  circle outscore it on "circle", by 3 logits times the rounding): diffusion 100% / 54% (more squares and
  triangles, no stars: it drew thin three- and four-pointed ones), VQGAN+CLIP 88% / 8% (scattered spiky blobs);
  the same hinge on squares and triangles only: diffusion 100% / 42%. (The shipped model itself, set 0: diffusion
  100% / 54%, VQGAN+CLIP 96% / 29%, not the width-8 figures above.)
The sampler is not the limit: guided towards a drawn clean scene of the asked shape instead of by CLIP (an
experiment only), the same diffusion loop drew it in 22 of 24 prompts.
The text tower's token table (49408 x 64) is most of the parameters; float16 keeps the file near 9 MB.
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

from lab.scenes import SHAPE_COLOURS, SHAPES, Scene, captions, make_dataset

REPO = Path(__file__).resolve().parents[2]

NAME = "shapes-clip"
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TRAIN_SEED, EVAL_SEED = 0, 1  # scene streams: training and held-out evaluation never share a scene
MIN_CROP = 0.5  # smallest training crop, as a fraction of the side
NOISE_MAX = 0.1  # largest std of a crop's Gaussian noise (artgen's offline preset cuts with aug-noise 0.05)
SHAPE_WEIGHT = 1.0  # weight of the per-image shape loss against the contrastive loss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--scenes", type=int, default=12000, help="size of the pre-rendered training pool")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, crops and caption choice")
    parser.add_argument("--noise-max", type=float, default=NOISE_MAX,
                        help="add Gaussian noise to each training crop, its std drawn from [0, this] per crop; "
                             "0 trains on clean crops")
    parser.add_argument("--shape-weight", type=float, default=SHAPE_WEIGHT,
                        help="weight of the loss that asks each crop to prefer its caption over the same caption "
                             "with one shape's kind swapped; 0 trains with the contrastive loss alone")
    parser.add_argument("--out", type=Path, default=REPO / "artgen" / "zoo")
    args = parser.parse_args()
    if args.noise_max < 0:
        parser.error(f"--noise-max {args.noise_max} is negative: give a noise std of 0 or more, e.g. 0.1")
    if args.shape_weight < 0:
        parser.error(f"--shape-weight {args.shape_weight} is negative: give a weight of 0 or more, e.g. 1")
    return args


def mirrored(scene: Scene) -> Scene:
    """The scene flipped left-right, so that "to the left of" captions stay true for flipped images."""
    shapes = tuple(dataclasses.replace(s, centre=(1 - s.centre[0], s.centre[1])) for s in reversed(scene.shapes))
    return dataclasses.replace(scene, shapes=shapes)


def with_kind(scene: Scene, index: int, kind: str) -> Scene:
    """The scene with its ``index``-th shape turned into ``kind``: same colour, place and size."""
    shapes = list(scene.shapes)
    shapes[index] = dataclasses.replace(shapes[index], kind=kind)
    return dataclasses.replace(scene, shapes=tuple(shapes))


def caption_tokens(scene: Scene, tokenizer) -> Tensor:
    """Tokens [2,C,L] of the scene's C phrasings, as drawn (0) and mirrored (1)."""
    return torch.stack([tokenizer(captions(scene)), tokenizer(captions(mirrored(scene)))])


def build_pool(count: int, seed: int, tokenizer) -> tuple[Tensor, Tensor, Tensor]:
    """Images [N,3,64,64] uint8, caption tokens [N,2,C,L] and swapped caption tokens [N,3,2,C,L].

    The swapped captions are the same phrasings with one shape (picked at random in a two-shape scene) named
    as each of the other three kinds: the negatives of ``shape_loss``.
    """
    pick = random.Random(seed + 5)  # its own stream, so the scenes stay those of ``make_dataset(count, seed)``
    images, tokens, swapped = [], [], []
    for image, _, scene in make_dataset(count, seed, size=64, max_shapes=2):
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        tokens.append(caption_tokens(scene, tokenizer))
        index = pick.randrange(len(scene.shapes))
        others = [kind for kind in SHAPES if kind != scene.shapes[index].kind]
        swapped.append(torch.stack([caption_tokens(with_kind(scene, index, kind), tokenizer) for kind in others]))
    return torch.stack(images), torch.stack(tokens), torch.stack(swapped)


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


def shape_loss(image_features: Tensor, text_features: Tensor, swapped_features: Tensor, scale: Tensor) -> Tensor:
    """Cross-entropy of each crop choosing its caption [B,D] among it and its shape-swapped twins [B,3,D].

    Why: the contrastive loss is met by colour alone whenever a batch holds no other scene of the same colours,
    which is most of the time, so it teaches shape weakly; here shape is the only difference to find.
    """
    candidates = torch.cat([text_features[:, None], swapped_features], dim=1)
    logits = scale * torch.einsum("bd,bkd->bk", image_features, candidates)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def train(model: nn.Module, images: Tensor, tokens: Tensor, swapped: Tensor, args: argparse.Namespace) -> None:
    """Symmetric InfoNCE over (crop, one random caption) pairs, one random caption per image per step, plus
    ``args.shape_weight`` times the shape loss against that caption's shape-swapped twins."""
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
        scale = model.logit_scale.exp()
        logits = scale * image_features @ text_features.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        if args.shape_weight:
            twins = swapped[index, :, flips.long(), choice]  # [B,3,L]
            twin_features = F.normalize(model.encode_text(twins.flatten(0, 1)), dim=-1).view(*twins.shape[:2], -1)
            loss = loss + args.shape_weight * shape_loss(image_features, text_features, twin_features, scale)
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
    images, tokens, swapped = build_pool(args.scenes, TRAIN_SEED, tokenizer)
    print(f"{len(images)} training scenes rendered in {time.time() - started:.0f}s", flush=True)
    train(model, images, tokens, swapped, args)
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
        "shape_weight": args.shape_weight,
        "noise_max": args.noise_max,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "lab.training.train_clip", *sys.argv[1:]]),
    }
    (args.out / f"{NAME}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
