"""The objective: prompt losses under cutouts for each CLIP model of the ensemble, plus regularizers.

Prompt embeddings are computed once, when the objective is built; each call only encodes cutouts. With a
batch, every image gets its own prompt loss and the losses add up, so each image is pulled as hard as a
single one would be.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from . import losses
from .clamps import clamp_straight_through
from .cutouts import CutoutSettings, MakeCutouts, overview_cutouts
from .errors import UsageError
from .images import load_image, pil_to_tensor
from .losses import parse_symmetry
from .masks import Edit
from .palettes import palette_tensor, parse_palette
from .perceptor import Perceptor
from .prompts import Prompt, parse_prompts, prompt_loss, warn_non_finite_tails
from .settings import RunSettings

PROMPT_IMAGE_SIDE = 1024  # image prompts larger than twice this are shrunk on reading (CLIP sees 224-448)
SCHEDULE_PARTS = 1000  # cut schedules split the run into thousandths, as Disco Diffusion's do
_SCHEDULE_TERM = re.compile(r"^\[(\d+)\]\*(\d+)$")


def parse_cut_schedule(text: str, name: str) -> list[int]:
    """Parse Disco's ``"[12]*400+[4]*600"`` (counts over 1000 parts of the run) without evaluating it."""
    counts: list[int] = []
    for term in text.replace(" ", "").split("+"):
        match = _SCHEDULE_TERM.match(term)
        if not match:
            raise UsageError(f"--{name} {text!r}: write terms like [12]*400 joined with '+', covering 1000 parts")
        counts += [int(match.group(1))] * int(match.group(2))
    if len(counts) != SCHEDULE_PARTS:
        raise UsageError(f"--{name} {text!r} covers {len(counts)} parts: the terms must add up to exactly 1000")
    return counts


@dataclass
class CutPlan:
    """How many whole-image (overview) and random-crop (inner) cutouts to take at each point of the run."""

    cutn: int
    overview: list[int] | None = None
    inner: list[int] | None = None

    @classmethod
    def from_settings(cls, settings: RunSettings) -> "CutPlan":
        if not settings.cut_overview and not settings.cut_innercut:
            return cls(settings.cutn)
        overview = parse_cut_schedule(settings.cut_overview or "[0]*1000", "cut-overview")
        inner = parse_cut_schedule(settings.cut_innercut or "[0]*1000", "cut-innercut")
        if any(o + i == 0 for o, i in zip(overview, inner)):
            raise UsageError("--cut-overview and --cut-innercut leave a part of the run with no cutouts: "
                             "give at least one cutout everywhere")
        return cls(settings.cutn, overview, inner)

    def counts(self, progress: float) -> tuple[int, int]:
        """(overview, inner) cutout counts at a point of the run (progress in [0, 1))."""
        if self.overview is None:
            return 0, self.cutn
        part = min(int(progress * SCHEDULE_PARTS), SCHEDULE_PARTS - 1)
        return self.overview[part], self.inner[part]


@dataclass
class Target:
    """One CLIP model's view of the prompts: its cutouts and the prompts' embeddings in its space."""

    perceptor: Perceptor
    weight: float
    cut: CutoutSettings
    embeds: Tensor    # [P, D]
    weights: Tensor   # [P]
    stops: Tensor     # [P]
    _inner: dict[int, MakeCutouts] = field(default_factory=dict)

    def cutouts(self, image: Tensor, overview: int, inner: int) -> Tensor:
        """[B, overview + inner, 3, S, S] cutouts at this model's input size."""
        size, batch = self.perceptor.input_size, image.shape[0]
        parts = []
        if overview:
            parts.append(overview_cutouts(image, size, overview, self.cut.wrap).view(batch, overview, 3, size, size))
        if inner:
            if inner not in self._inner:
                self._inner[inner] = MakeCutouts(size, dataclasses.replace(self.cut, cutn=inner))
            parts.append(self._inner[inner](image).view(batch, inner, 3, size, size))
        return torch.cat(parts, dim=1)

    def loss(self, image: Tensor, counts: tuple[int, int]) -> Tensor:
        cuts = self.cutouts(image, *counts)
        batch, per_image = cuts.shape[:2]
        embeds = self.perceptor.encode_image(cuts.flatten(0, 1)).view(batch, per_image, -1)
        return sum(prompt_loss(embeds[b], self.embeds, self.weights, self.stops) for b in range(batch))

    def score(self, image: Tensor) -> Tensor:
        """Per-image weighted cosine similarity to the prompts, from one whole-image view (no augmentation)."""
        size = self.perceptor.input_size
        view = F.interpolate(centre_square(image), size=(size, size), mode="bilinear", align_corners=False,
                             antialias=True)
        similarity = self.perceptor.encode_image(view) @ self.embeds.T
        return (similarity * self.weights).sum(dim=1) / self.weights.abs().sum()


def centre_square(image: Tensor) -> Tensor:
    height, width = image.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[..., top:top + side, left:left + side]


@dataclass(frozen=True)
class Regularizer:
    """A loss on the rendered image with its weight; ``until`` is the share of the run (0-1) after which it is
    off, as the symmetry loss is after --symmetry-end."""

    weight: float
    loss: Callable[[Tensor], Tensor]
    until: float = 1.0


class Objective:
    """clip_scale · Σ model weight · prompt loss + Σ regularizer weight · regularizer, on the rendered image.

    With an ``edit`` (a mask) it scores the rendered image composited with the init image outside the mask and
    cut to the mask's surroundings, so every cutout looks at the repainted part and its context.
    """

    def __init__(self, targets: list[Target], regularizers: list[Regularizer], clip_scale: float, plan: CutPlan,
                 clamp: Callable[[Tensor], Tensor] = clamp_straight_through, edit: Edit | None = None) -> None:
        self.targets = targets
        self.clamp = clamp
        self.edit = edit
        self.regularizers = [r for r in regularizers if r.weight != 0 and r.until > 0]
        self.clip_scale = clip_scale
        self.plan = plan

    def __call__(self, image: Tensor, progress: float = 0.0) -> Tensor:
        if self.edit is not None:
            image = self.edit.view(image)
        scored = self.clamp(image)
        counts = self.plan.counts(progress)
        total = self.clip_scale * sum(t.weight * t.loss(scored, counts) for t in self.targets)
        for regularizer in self.regularizers:
            if progress < regularizer.until:
                total = total + regularizer.weight * regularizer.loss(image)
        return total

    def prompt_loss(self, image: Tensor, cutouts: int) -> Tensor:
        """Σ model weight · prompt loss of ``image`` (in [0,1]) over ``cutouts`` random crops, without the CLIP scale
        or the regularizers; clamped for scoring with the whole gradient passing, as diffusion predictions are.
        For guidance beside the run's own loss (a generator's diffusion prior), with as many cutouts as it needs."""
        scored = clamp_straight_through(self.edit.view(image) if self.edit is not None else image)
        return sum(t.weight * t.loss(scored, (0, cutouts)) for t in self.targets)

    def with_prompt_weights(self, weights: list[float]) -> "Objective":
        """The same objective with new prompt weights (in prompt order), e.g. while a keyed prompt fades in."""
        targets = [dataclasses.replace(t, weights=torch.tensor(weights, dtype=t.weights.dtype, device=t.weights.device))
                   for t in self.targets]
        return Objective(targets, self.regularizers, self.clip_scale, self.plan, self.clamp, self.edit)

    @torch.no_grad()
    def score(self, image: Tensor) -> Tensor:
        """How well each image of a batch matches the prompts (higher is better), for ranking candidates; of an
        edit's saved (already composited) pictures, the part around the mask."""
        image = self.edit.crop(image) if self.edit is not None else image
        weights = sum(t.weight for t in self.targets)
        return sum(t.weight * t.score(image.clamp(0, 1)) for t in self.targets) / weights


def cutout_settings(settings: RunSettings) -> CutoutSettings:
    return CutoutSettings(cutn=settings.cutn, cut_pow=settings.cut_pow, flip=settings.aug_flip,
                          affine=settings.aug_affine, perspective=settings.aug_perspective,
                          jitter=settings.aug_jitter, noise=settings.aug_noise, wrap=settings.tile)


def build_objective(settings: RunSettings, perceptors: list[Perceptor], device: torch.device,
                    texts: list[Prompt] | None = None,
                    clamp: Callable[[Tensor], Tensor] = clamp_straight_through,
                    palette_loss: bool = True, edit: Edit | None = None) -> Objective:
    """Embed every text and image prompt once per CLIP model and wire up the regularizers.

    ``texts`` replaces the settings' text prompts (an animation passes its keyed prompts too); the prompt
    order is the texts, then the image prompts. ``clamp`` brings the image into [0,1] for CLIP: the
    generator's ``scoring_clamp``, since each generator's reference scores its images with its own rule.
    ``palette_loss``: whether a --palette pulls colours (see :func:`regularizers`). ``edit``: the run's mask,
    whose surroundings alone are scored (see :class:`Objective`).
    """
    texts = parse_prompts(settings.prompts) if texts is None else texts
    images = parse_prompts(settings.image_prompts)
    pictures = [load_image(p.text, "image prompt", (PROMPT_IMAGE_SIDE, PROMPT_IMAGE_SIDE)) for p in images]
    plan = CutPlan.from_settings(settings)
    prompts: list[Prompt] = texts + images
    warn_non_finite_tails(prompts)
    warn_ignored_text(texts, perceptors)
    targets = []
    for perceptor in perceptors:
        embeds = []
        if texts:
            embeds.append(perceptor.encode_text([p.text for p in texts]))
        if pictures:
            embeds.append(embed_images(perceptor, pictures, device))
        targets.append(Target(
            perceptor=perceptor, weight=perceptor.spec.weight, cut=cutout_settings(settings),
            embeds=torch.cat(embeds).to(device),
            weights=torch.tensor([p.weight for p in prompts], device=device),
            stops=torch.tensor([p.stop for p in prompts], device=device)))
    return Objective(targets, regularizers(settings, device, palette_loss), settings.clip_guidance_scale, plan, clamp,
                     edit)


def regularizers(settings: RunSettings, device: torch.device, palette_loss: bool = True) -> list[Regularizer]:
    """The run's regularizers. Symmetry and palette weights are relative to the CLIP scale (which must be set),
    so one --symmetry-scale means the same for VQGAN (CLIP scale 1) as for diffusion (5000). ``palette_loss``
    is False for a generator that draws only the --palette colours anyway (pixel-art)."""
    clip_scale = settings.clip_guidance_scale
    chosen = [Regularizer(settings.tv_scale, losses.total_variation),
              Regularizer(settings.range_scale, losses.out_of_range),
              Regularizer(settings.sat_scale, losses.saturation)]
    if parse_symmetry(settings.symmetry)[0] != "none":
        chosen.append(Regularizer(settings.symmetry_scale * clip_scale,
                                  partial(losses.symmetry, kind=settings.symmetry), settings.symmetry_end))
    if settings.palette is not None and palette_loss:
        colours = palette_tensor(parse_palette(settings.palette), device)
        chosen.append(Regularizer(settings.palette_scale * clip_scale,
                                  partial(losses.palette_distance, colours=colours)))
    return chosen


def warn_ignored_text(texts: list[Prompt], perceptors: list[Perceptor], shown_words: int = 8) -> None:
    """Say once per prompt (and per cut, when models cut differently) what CLIP will not read of a long prompt,
    quoting its first few words: a silently cut prompt looks as if its end were ignored by the optimizer."""
    said: set[tuple[str, str]] = set()
    for prompt in texts:
        for perceptor in perceptors:
            tail = perceptor.ignored_text(prompt.text)
            if not tail or (prompt.text, tail) in said:
                continue
            said.add((prompt.text, tail))
            words = tail.split()
            quoted = " ".join(words[:shown_words]) + (" ..." if len(words) > shown_words else "")
            start = prompt.text[:40] + ("..." if len(prompt.text) > 40 else "")
            logging.getLogger("artgen").warning(
                "prompt %r is longer than CLIP %s reads (%d tokens): the last %d words are ignored, from %r on",
                start, perceptor.spec.model, perceptor.tokenizer.context_length, len(words), quoted)


def embed_images(perceptor: Perceptor, pictures: list, device: torch.device) -> Tensor:
    """CLIP embeddings of image prompts: each centre-cropped to a square at the model's input size."""
    batch = [pil_to_tensor(picture) for picture in pictures]
    size = perceptor.input_size
    views = [F.interpolate(centre_square(b), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
             for b in batch]
    with torch.no_grad():
        return perceptor.encode_image(torch.cat(views).to(device))
