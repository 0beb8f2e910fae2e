"""The baseline to beat: the plain loop that the popular VQGAN-CLIP and CLIP-guided-diffusion scripts run.

What makes it the baseline, as those scripts do it: fp32, eager; cutouts cut one at a time in a Python
loop (random size from ``cut_pow``, random offset, average-pooled to CLIP's input size), then the kornia
augmentations (flip, sharpness, affine, perspective, colour jitter) over the stacked batch and per-cut
noise; the prompt loss is the spherical distance; the loss is read back to the host every step (the
scripts print it). Models are the same modules artgen uses, so only the loop differs.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from artgen.models.vqgan import VQGAN, vector_quantize

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class PlainCutouts(nn.Module):
    """``cutn`` square crops taken one by one, pooled to ``cut_size``, then augmented as one batch."""

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0, noise: float = 0.1) -> None:
        super().__init__()
        self.cut_size, self.cutn, self.cut_pow, self.noise = cut_size, cutn, cut_pow, noise
        self.augs = nn.Sequential(
            K.RandomHorizontalFlip(p=0.5), K.RandomSharpness(0.3, p=0.4),
            K.RandomAffine(degrees=30, translate=(0.1, 0.1), p=0.8, padding_mode="border"),
            K.RandomPerspective(0.2, p=0.4), K.ColorJitter(hue=0.01, saturation=0.01, p=0.7))

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        largest, smallest = min(height, width), min(height, width, self.cut_size)
        cuts = []
        for _ in range(self.cutn):
            size = int(torch.rand([]) ** self.cut_pow * (largest - smallest) + smallest)
            left = int(torch.randint(0, width - size + 1, ()))
            top = int(torch.randint(0, height - size + 1, ()))
            cuts.append(F.adaptive_avg_pool2d(image[:, :, top:top + size, left:left + size], self.cut_size))
        batch = self.augs(torch.cat(cuts))
        strength = batch.new_empty(self.cutn, 1, 1, 1).uniform_(0, self.noise)
        return batch + strength * torch.randn_like(batch)


def spherical_loss(image_embeds: Tensor, text_embed: Tensor) -> Tensor:
    a, b = F.normalize(image_embeds, dim=-1), F.normalize(text_embed, dim=-1)
    return (a - b).norm(dim=-1).div(2).arcsin().pow(2).mul(2).mean()


class PlainCLIPLoss:
    """Cutouts, normalization and CLIP, then the spherical distance to one text embedding."""

    def __init__(self, clip_model: nn.Module, text_embed: Tensor, cut_size: int, cutn: int) -> None:
        self.clip_model, self.text_embed = clip_model, text_embed
        self.cutouts = PlainCutouts(cut_size, cutn)
        device = text_embed.device
        self.mean = torch.tensor(OPENAI_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(OPENAI_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        cuts = (self.cutouts(image) - self.mean) / self.std
        return spherical_loss(self.clip_model.encode_image(cuts).float(), self.text_embed)


class PlainVQGANLoop:
    """The VQGAN-CLIP step: quantize, decode, clamp, cut, encode, loss, backward, Adam, clamp z, print loss."""

    def __init__(self, model: VQGAN, z: Tensor, loss: PlainCLIPLoss, lr: float = 0.1) -> None:
        self.model, self.loss = model, loss
        self.z = z.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.z], lr=lr)
        codebook = model.codebook
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]

    def step(self) -> float:
        self.optimizer.zero_grad()
        image = self.model.decode(vector_quantize(self.z, self.model.codebook)).add(1).div(2)
        image = image + (image.clamp(0, 1) - image).detach()
        loss = self.loss(image)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.z.copy_(self.z.maximum(self.z_min).minimum(self.z_max))
        return loss.item()
