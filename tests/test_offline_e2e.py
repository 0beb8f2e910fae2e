"""The bundled models steer the picture: prompts "a COLOUR SHAPE" come out in that colour, as read by the
CLIP-free checker, and the same runs with a random-weight CLIP do clearly worse (so this can fail).

A few prompts only, to stay inside the suite's time budget; tests/zoo_report.py runs all 24 with both
generators and reports shape hit rates too (not yet good enough to assert: see the README's table).
"""

import pytest
import torch

from artgen.loop import optimize
from artgen.objective import build_objective
from artgen.perceptor import load_perceptors
from artgen.run import prepare
from artgen.settings import build_settings
from artgen.speed import precision_context
from zoo_report import hit_rates, random_clip_checkpoint

PROMPTS = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star"), ("purple", "square"),
           ("cyan", "circle")]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    return random_clip_checkpoint(tmp_path_factory.mktemp("control"))


def test_offline_diffusion_follows_the_colour_and_a_random_clip_does_not(tmp_path, control):
    trained = hit_rates("diffusion", PROMPTS, tmp_path)
    assert trained.colour >= 0.8, trained.readings
    random = hit_rates("diffusion", PROMPTS, tmp_path, clip_checkpoint=control)
    assert trained.colour >= random.colour + 0.3, (trained.readings, random.readings)


def fixed_cut_loss(objective, image) -> float:
    """The objective under one fixed draw of cutouts, so two images are compared on equal terms."""
    torch.manual_seed(123)
    with torch.no_grad():
        return objective(image, 0.0).item()


def test_vqgan_clip_loss_falls_over_a_short_run():
    """The whole VQGAN+CLIP path with a (tiny, trained) open_clip model: 40 steps lower the prompt loss."""
    settings, device, cls, specs = prepare(build_settings("offline-vqgan", overrides={
        "prompts": ["a blue square"], "steps": 40, "seed": 2}))
    objective = build_objective(settings, load_perceptors(specs, device), device)
    torch.manual_seed(settings.seed)
    generator = cls.from_settings(settings, device)
    before = fixed_cut_loss(objective, generator.snapshot())
    losses = [state.loss.item() for state in optimize(generator, objective)]
    after = fixed_cut_loss(objective, generator.snapshot())
    assert after < before * 0.9, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5])


def final_loss(**fast) -> float:
    settings, device, cls, specs = prepare(build_settings("offline-vqgan", overrides={
        "prompts": ["a blue square"], "steps": 40, "seed": 2, **fast}))
    objective = build_objective(settings, load_perceptors(specs, device), device)
    torch.manual_seed(settings.seed)
    generator = cls.from_settings(settings, device)
    for _ in optimize(generator, objective, forward_context=precision_context(settings.precision, device)):
        pass
    return fixed_cut_loss(objective, generator.snapshot())


def test_fast_settings_keep_the_final_loss_within_two_percent():
    """The issue's quality bar for the fast paths, on the bundled models: same seed, final CLIP loss."""
    reference = final_loss()
    assert final_loss(precision="bf16", channels_last=True) == pytest.approx(reference, rel=0.02)
