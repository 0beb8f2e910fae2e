"""The diffusion prior (artgen/prior.py): the bundled shapes-diffusion smooths a noisy scene and keeps it near the
clean one (an untrained UNet does neither), CLIP guidance turns the pull toward what the prompt loss asks, its limit
holds, and the VQGAN generator and the settings wire it in only where it belongs."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_unet import randomize_

from artgen.errors import UsageError
from artgen.generators.vqgan import diffusion_prior
from artgen.loop import Guide
from artgen.losses import total_variation
from artgen.prior import GUIDANCE_CUTOUTS, DiffusionPrior
from artgen.generators import ModelCache
from artgen.session import Session
from artgen.settings import build_settings
from lab.scenes import random_scene, render

PRIOR = {"prompts": ["a red circle"], "prior_model": "shapes-diffusion", "prior_noise_schedule": "cosine",
         "prior_scale": 30.0, "prior_guidance_scale": 20000.0, "prior_clamp_max": 2.0, "prior_clamp_by_signal": True}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prior() -> DiffusionPrior:
    return diffusion_prior(build_settings("offline-vqgan", overrides=PRIOR).options, CPU, ModelCache())


def scene(seed: int) -> torch.Tensor:
    picture = render(random_scene(random.Random(seed), max_shapes=1))
    return torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 255


def at_prior_size(image: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)


def follow_the_prior(prior: DiffusionPrior, clean: torch.Tensor, steps: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """A noised copy of the scene, before and after ``steps`` Adam steps that follow the prior alone."""
    torch.manual_seed(0)
    noisy = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    image = noisy.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        prior(image).backward()
        optimizer.step()
    return noisy, image.detach()


def roughness(image: torch.Tensor) -> float:
    return total_variation(at_prior_size(image)).item()


def test_the_trained_prior_smooths_a_noisy_scene_and_an_untrained_one_does_not(prior):
    """Measured at seed 3: roughness 0.013 -> 0.007 (the clean scene's 0.009), untrained -> 0.015; the distance
    to the clean scene stays 8x smaller than the untrained UNet's."""
    clean = scene(3)
    noisy, smoothed = follow_the_prior(prior, clean)
    untrained = DiffusionPrior(randomize_(type(prior.unet)(prior.unet.config)).eval(), prior.alphas_cumprod,
                               prior.draws, 0.0)
    _, wrecked = follow_the_prior(untrained, clean)
    assert roughness(smoothed) < 0.7 * roughness(noisy), (roughness(noisy), roughness(smoothed))
    assert roughness(wrecked) > roughness(noisy), (roughness(noisy), roughness(wrecked))
    near, far = (F.mse_loss(at_prior_size(image), at_prior_size(clean)).item() for image in (smoothed, wrecked))
    assert near < 0.3 * far, (near, far)


def test_guidance_turns_the_pull_toward_what_the_prompt_loss_asks(prior):
    grey = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)

    def redness_of_the_step(clip_loss) -> float:
        torch.manual_seed(1)  # the same noise steps and draws with and without guidance
        grey.grad = None
        prior(grey, clip_loss).backward()
        step = -grey.grad[0].mean(dim=(1, 2))
        return (step[0] - step[1:].mean()).item()

    towards_red = redness_of_the_step(lambda image: (image - red).square().mean())
    unguided = redness_of_the_step(None)
    assert towards_red > unguided + 1e-6, (towards_red, unguided)


@pytest.mark.parametrize("by_signal", [False, True])
def test_the_guidance_gradient_keeps_within_its_limit(prior, by_signal):
    limited = DiffusionPrior(prior.unet, prior.alphas_cumprod, 1, 1e6, clamp_max=0.01, clamp_by_signal=by_signal)
    alpha_bar = prior.alphas_cumprod[[100, 800]].view(-1, 1, 1, 1)
    x_t = torch.randn(2, 3, 32, 32)
    _, grad = limited._predict(x_t, torch.tensor([100, 800]), alpha_bar, lambda image: image.square().sum())
    rms = grad.flatten(1).square().mean(1).sqrt()
    limit = 0.01 * (alpha_bar.flatten().sqrt() if by_signal else torch.ones(2))
    assert torch.allclose(rms, limit, rtol=1e-4), (rms, limit)  # a huge gradient is cut to exactly the limit


class Objective:
    """An objective that pulls toward red, and records what the prior asked of its prompt loss."""

    def __init__(self) -> None:
        self.prompt_cutouts: list[int] = []

    def __call__(self, image: torch.Tensor, progress: float) -> torch.Tensor:
        return image.mean()

    def prompt_loss(self, image: torch.Tensor, cutouts: int) -> torch.Tensor:
        self.prompt_cutouts.append(cutouts)
        return (image - torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).square().mean()


def test_the_vqgan_generator_adds_the_prior_only_when_asked_guided_by_the_steps_own_objective():
    moved = {}
    for scale in (30.0, 0.0):
        torch.manual_seed(0)
        settings = build_settings("offline-vqgan", overrides={**PRIOR, "seed": 0, "prior_scale": scale})
        generator = Session(settings, progress=False).generator()
        assert (generator.prior is None) == (scale == 0)
        objective = Objective()
        start = generator.z.detach().clone()
        torch.manual_seed(1)
        generator.step(Guide(objective, 0.0))
        assert objective.prompt_cutouts == ([GUIDANCE_CUTOUTS] if scale else [])
        moved[scale] = generator.z.detach() - start
    assert not torch.allclose(moved[30.0], moved[0.0])


@pytest.mark.parametrize("overrides, message", [
    ({"generator": "diffusion", "prior_scale": 1.0}, "--prior-scale is an option of the vqgan generator"),
    ({"prior_scale": -1.0}, "--prior-scale must not be negative, got -1.0"),
    ({"prior_guidance_scale": float("nan")}, "--prior-guidance-scale must be a finite number"),
    ({"prior_draws": 0}, "--prior-draws must be a positive integer, got 0"),
])
def test_bad_prior_settings_are_refused_with_the_fix(overrides, message):
    with pytest.raises(UsageError, match=message):
        build_settings(overrides={"prompts": ["a red circle"], **overrides})
