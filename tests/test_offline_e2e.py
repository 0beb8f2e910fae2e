"""The bundled models steer the picture: prompts "a COLOUR SHAPE" come out in that colour, as read by the
CLIP-free checker, and the same runs with a random-weight CLIP do clearly worse (so this can fail).

A few prompts only, to stay inside the suite's time budget; tests/zoo_report.py runs all 24 with both
generators and reports shape hit rates too (not yet good enough to assert: see the README's table).
"""

import pytest

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
