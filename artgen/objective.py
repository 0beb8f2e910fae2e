"""The objective: prompt losses under cutouts for each CLIP model of the ensemble, plus regularizers.

Prompt embeddings are computed once, when the objective is built; each call only encodes cutouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import losses
from .cutouts import CutoutSettings, MakeCutouts
from .output import load_image, pil_to_tensor
from .perceptor import Perceptor
from .prompts import Prompt, parse_prompts, prompt_loss
from .settings import Settings


@dataclass
class Target:
    """One CLIP model's view of the prompts: its cutouts and the prompts' embeddings in its space."""

    perceptor: Perceptor
    weight: float
    cutouts: MakeCutouts
    embeds: Tensor    # [P, D]
    weights: Tensor   # [P]
    stops: Tensor     # [P]

    def loss(self, image: Tensor) -> Tensor:
        cuts = self.cutouts(image)
        return prompt_loss(self.perceptor.encode_image(cuts), self.embeds, self.weights, self.stops)


def clamp_straight_through(image: Tensor) -> Tensor:
    """Clamp to [0,1] for scoring, letting the gradient through unchanged."""
    return image + (image.clamp(0, 1) - image).detach()


class Objective:
    """Σ model weight · prompt loss + Σ regularizer weight · regularizer, on the rendered image."""

    def __init__(self, targets: list[Target], regularizers: list[tuple[float, Callable]], clip_scale: float) -> None:
        self.targets = targets
        self.regularizers = [(w, fn) for w, fn in regularizers if w != 0]
        self.clip_scale = clip_scale

    def __call__(self, image: Tensor) -> Tensor:
        scored = clamp_straight_through(image)
        total = self.clip_scale * sum(t.weight * t.loss(scored) for t in self.targets)
        for weight, regularizer in self.regularizers:
            total = total + weight * regularizer(image)
        return total


def cutout_settings(settings: Settings) -> CutoutSettings:
    return CutoutSettings(cutn=settings.cutn, cut_pow=settings.cut_pow, flip=settings.aug_flip,
                          affine=settings.aug_affine, perspective=settings.aug_perspective,
                          jitter=settings.aug_jitter, noise=settings.aug_noise)


def build_objective(settings: Settings, perceptors: list[Perceptor], device: torch.device) -> Objective:
    """Embed every text and image prompt once per CLIP model and wire up the regularizers."""
    texts = parse_prompts(settings.prompts)
    images = parse_prompts(settings.image_prompts)
    pictures = [load_image(p.text, "image prompt") for p in images]
    cut = cutout_settings(settings)
    targets = []
    for perceptor in perceptors:
        embeds = []
        if texts:
            embeds.append(perceptor.encode_text([p.text for p in texts]))
        if pictures:
            embeds.append(embed_images(perceptor, pictures, device))
        prompts: list[Prompt] = texts + images
        targets.append(Target(
            perceptor=perceptor, weight=perceptor.spec.weight, cutouts=MakeCutouts(perceptor.input_size, cut),
            embeds=torch.cat(embeds).to(device),
            weights=torch.tensor([p.weight for p in prompts], device=device),
            stops=torch.tensor([p.stop for p in prompts], device=device)))
    regularizers = [(settings.tv_scale, losses.total_variation), (settings.range_scale, losses.out_of_range),
                    (settings.sat_scale, losses.saturation)]
    return Objective(targets, regularizers, settings.clip_guidance_scale)


def embed_images(perceptor: Perceptor, pictures: list, device: torch.device) -> Tensor:
    """CLIP embeddings of image prompts: each centre-cropped to a square at the model's input size."""
    batch = []
    for picture in pictures:
        side = min(picture.size)
        left, top = (picture.width - side) // 2, (picture.height - side) // 2
        square = picture.crop((left, top, left + side, top + side))
        batch.append(pil_to_tensor(square, (perceptor.input_size, perceptor.input_size)))
    with torch.no_grad():
        return perceptor.encode_image(torch.cat(batch).to(device))
