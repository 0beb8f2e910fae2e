"""The example recipes stay valid: each parses as a preset, and its schedules fit its frame count."""

from pathlib import Path

import pytest

from artgen.animation import FramePlan, PromptPlan
from artgen.settings import build_settings

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
# The --init-strength each recipe's schedule gives at its last frame (the last keyframe's value, held).
LAST_FRAME_STRENGTH = {"diffusion-drift.yaml": 0.6, "vqgan-zoom.yaml": 0.3}


def test_there_is_an_animation_recipe_per_generator():
    assert {build_settings(str(path), animation=True).generator for path in EXAMPLES} >= {"vqgan", "diffusion"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_recipe_is_valid(path):
    settings = build_settings(str(path), animation=True)
    assert settings.frames > 0
    plan = FramePlan.from_settings(settings, settings.frames)
    assert path.name in LAST_FRAME_STRENGTH, "a new example: add its last frame's strength to LAST_FRAME_STRENGTH"
    assert plan.strength_at(settings.frames - 1) == pytest.approx(LAST_FRAME_STRENGTH[path.name])
    prompts = PromptPlan(settings)
    prompts.keyed.check_frames(settings.frames)
    assert len(prompts.weights(settings.frames - 1)) == len(prompts.texts)
