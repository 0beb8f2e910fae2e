"""The bundled models steer the picture: prompts "a COLOUR SHAPE" come out in that colour and that shape, as read
by the CLIP-free checker, and the same runs with a random-weight CLIP do clearly worse, so these tests can fail.

Eight prompts per run: every shape twice, every colour once or twice; the random-weight CLIP draws four of them (every
shape once, same seeds). The twelve images of a run are drawn by two one-thread processes side by side
(lab/zoo_report.py's hit_rates_with_control): faster than two threads on one image at a time, and the readings do
not depend on the machine's thread count. Diffusion runs its preset as shipped (64 previews of 5 DDIM steps, the best
noised back to 40% of the way): about 2 minutes on a slow 2-core CPU (Intel Xeon 2.8 GHz). VQGAN+CLIP runs its preset
(32 cutouts, tv_scale 10, the shapes-diffusion prior) at 100 steps instead of 200: at 200 its twelve images took 13 of
the suite's 19 minutes on that CPU, at 100 seven. lab/zoo_report.py measures the presets as shipped, on all 24
prompts and three seed sets, for the table in lab/README.md.

The floors prove steering with room for other CPUs, whose float kernels send a run elsewhere; at eight prompts one set
of seeds says little, so they sit below the issue's 80% colour / 60% shape. VQGAN+CLIP's are the highest that a run
drawing at its measured rates misses less than one time in a hundred on another CPU. At 100 steps, over seed sets 0,
100, 200, one thread per image (2026-12-07), it drew colour 90%, shape 60% (43 of 72: circles 18 of 18, triangles 13,
stars 9, squares 3); its random-weight CLIP on set 0: 17% / 17%. These eight prompts then expect 4.8 shape hits; 2
or fewer come one time in seventy-five, 1 or fewer almost never, so the shape floor is 2 of 8, which the two circles
alone can meet: shape steering beyond circles is the table's to show, and the margin over the random-weight CLIP (which
draws triangles and circles whatever was asked) keeps the test able to fail. Colour: 4 or fewer of 8 at 90% one time in
two hundred, so 5 of 8. With the margins, a CPU that sends every run elsewhere fails this test about one time in
sixteen (at 200 steps, with a shape floor of 3 of 8: one in thirteen).
Read on one thread per image (colour and shape hits of 8 with the trained CLIP / of 4 with the random weights):
VQGAN+CLIP at 100 steps, seeds 100-107 (2026-12-07): 7 and 2 / 1 and 0 (both triangles, both stars and both squares
read as no shape or another); at 200 steps the same seeds read 7 and 4 / 0 and 0. Diffusion, seeds 200-207, read 6
and 4 / 0 and 0 with the width-8 shapes-clip shipped until 2026-12-03, and passes with every model and preset change
since.
"""

import statistics

import pytest
import torch

from artgen.loop import optimize
from artgen.session import Session
from artgen.settings import build_settings
from benchmarks.bench_quality import PROMPTS as QUALITY_PROMPTS  # the benchmark's measurement
from benchmarks.bench_quality import final_loss, fixed_cut_loss, gap
from lab.scenes import SHAPE_COLOURS, SHAPES
from lab.zoo_report import hit_rates_with_control, random_clip_checkpoint

COLOURS = list(SHAPE_COLOURS)
# Shape k takes colours k and k+2 (mod 6): circle red/green, square yellow/cyan, triangle green/blue, star
# cyan/purple; every colour once or twice.
PROMPTS = [(COLOURS[(k + 2 * j) % 6], shape) for k, shape in enumerate(SHAPES) for j in range(2)]


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    return random_clip_checkpoint(tmp_path_factory.mktemp("control"))


# run -> least colour and shape hit rates; SEEDS: the run's first seed (prompt i uses seed + i)
FLOORS = {"vqgan": (0.625, 0.25), "diffusion": (0.5, 0.25)}
SEEDS = {"vqgan": 100, "diffusion": 200}
# run -> settings over its preset: VQGAN+CLIP at half its steps, to fit the suite's budget on a slow 2-core CPU
SETTINGS = {"vqgan": {"steps": 100}, "diffusion": {}}
MARGINS = (0.25, 0.125)  # how much higher than with the random-weight CLIP the colour and shape hit rates must be
CONTROL_EVERY = 2  # the random-weight CLIP draws prompts 0, 2, 4, 6: every shape once


@pytest.mark.parametrize("run", list(FLOORS))
def test_offline_generators_follow_the_prompt_and_a_random_clip_does_not(run, tmp_path, control):
    colour_floor, shape_floor = FLOORS[run]
    trained, random = hit_rates_with_control(run, PROMPTS, tmp_path, control, seed=SEEDS[run],
                                             control_every=CONTROL_EVERY, settings=SETTINGS[run])
    assert trained.colour >= colour_floor, trained.readings
    assert trained.shape >= shape_floor, trained.readings
    assert trained.colour >= random.colour + MARGINS[0], (trained.readings, random.readings)
    assert trained.shape >= random.shape + MARGINS[1], (trained.readings, random.readings)


def test_vqgan_clip_loss_falls_over_a_short_run():
    """The whole VQGAN+CLIP path with a (tiny, trained) open_clip model and the preset's diffusion prior: 40 steps
    lower the prompt loss."""
    session = Session(build_settings("offline-vqgan", overrides={
        "prompts": ["a blue square"], "steps": 40, "seed": 2}), progress=False)
    torch.manual_seed(session.settings.seed)
    generator = session.generator()
    objective = session.objective()
    before = fixed_cut_loss(objective, generator.snapshot())
    losses = [state.loss.item() for state in optimize(generator, objective)]
    after = fixed_cut_loss(objective, generator.snapshot())
    assert after < before * 0.9, (before, after)
    assert sum(losses[-5:]) < sum(losses[:5])


# Issue 7 aims at 2%. One run is a poor judge: the optimization is chaotic, and with the offline-vqgan preset at
# tv_scale 50 and no prior (final_loss pins both) bf16 ends single runs 0.5-9% from fp32 (benchmarks/bench_quality.py,
# 40 steps, seeds 2 and 3: median 1.5%; the blue square of seed 2, this test's one run until then, 5.5%). The median
# of the six prompts' gaps ignores the chaotic outliers and still catches fast settings that move every run; the
# six gaps of seed 2 read 1.2-9.1%, median 1.4%. The tolerance leaves room for other CPUs' bf16 kernels.
FAST_SETTINGS_TOLERANCE = 5.0  # percent


def test_fast_settings_keep_the_final_loss_close_to_fp32():
    """Same seed, final CLIP loss under one fixed draw of cutouts: fp32 eager against bf16 + channels_last."""
    gaps = [gap(final_loss(prompt, seed=2, steps=40, precision="bf16", channels_last=True),
                final_loss(prompt, seed=2, steps=40)) for prompt in QUALITY_PROMPTS]
    assert statistics.median(gaps) < FAST_SETTINGS_TOLERANCE, gaps
