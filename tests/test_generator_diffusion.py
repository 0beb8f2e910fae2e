"""The diffusion generator on a tiny guided-diffusion UNet, driven by the real loop with simple losses."""

import dataclasses

import pytest
import torch
import yaml
from PIL import Image
from tiny_unet import tiny_unet_config, write_tiny_unet_checkpoint

from artgen.errors import UsageError, UserError
from artgen.generators.diffusion import DiffusionGenerator
from artgen.loop import Guide, optimize
from artgen.generators import Canvas
from artgen.images import read_init_image
from artgen.settings import build_settings

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unet")
    checkpoint = write_tiny_unet_checkpoint(folder / "tiny.pt")
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(dataclasses.asdict(tiny_unet_config())))
    return config, checkpoint


def diffusion_settings(tiny_files, **overrides):
    config, checkpoint = tiny_files
    values = dict(prompts=["x"], generator="diffusion", diffusion_config=str(config),
                  diffusion_checkpoint=str(checkpoint), width=32, height=32, steps=6, seed=0)
    return build_settings(None, None, {**values, **overrides})


def make(settings):
    """The generator of ``settings`` on the CPU, as a run builds it (with the init image decoded)."""
    run = settings.run
    init = read_init_image(run.init_image, run.width, run.height) if run.init_image else None
    return DiffusionGenerator.create(settings.options, Canvas(run.width, run.height, run.batch, run.steps, CPU), init)


def run(settings, objective):
    torch.manual_seed(settings.seed)
    generator = make(settings)
    for _ in optimize(generator, objective):
        pass
    return generator.snapshot()


def brightness(scale):
    return lambda image, progress: scale * image.mean()


def test_guidance_moves_the_sample_toward_lower_loss(tiny_files):
    settings = diffusion_settings(tiny_files, clamp_max=0.2)
    unguided = run(settings, brightness(0.0))
    darker = run(settings, brightness(5000.0))
    brighter = run(settings, brightness(-5000.0))
    assert darker.mean() < unguided.mean() - 0.01
    assert brighter.mean() > unguided.mean() + 0.01


def first_step_push(settings, scale):
    """RMS change that guidance with ``brightness(scale)`` makes to x after the first sampling step."""
    samples = []
    for objective in (brightness(0.0), brightness(scale)):
        torch.manual_seed(settings.seed)
        generator = make(settings)
        generator.step(Guide(objective, 0.0))
        samples.append(generator.x)
    return (samples[1] - samples[0]).square().mean().sqrt().item(), generator


def test_clamp_by_signal_shrinks_the_push_by_sqrt_alpha_bar(tiny_files):
    """A strong loss hits the RMS limit; with --clamp-by-signal the limit, so the push, is sqrt(alpha-bar) times it."""
    settings = diffusion_settings(tiny_files, clamp_max=0.2)
    plain, _ = first_step_push(settings, 5000.0)
    scaled, generator = first_step_push(settings.replace(clamp_by_signal=True), 5000.0)
    alpha_bar = float(generator.diffusion.alphas_cumprod[generator.timesteps[0]])
    assert plain > 0.01
    assert scaled == pytest.approx(plain * alpha_bar**0.5, rel=1e-3)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_same_seed_same_image(tiny_files, sampler):
    settings = diffusion_settings(tiny_files, sampler=sampler)
    first, second = run(settings, brightness(1.0)), run(settings, brightness(1.0))
    assert torch.equal(first, second)
    other = run(settings.replace(seed=1), brightness(1.0))
    assert not torch.equal(first, other)


def test_skip_to_the_last_step_keeps_the_init_image(tiny_files, tmp_path):
    pixels = torch.rand(32, 32, 3)
    Image.fromarray((pixels * 255).round().byte().numpy()).save(tmp_path / "init.png")
    settings = diffusion_settings(tiny_files, init_image=str(tmp_path / "init.png"), skip_steps=5)
    result = run(settings, brightness(0.0))
    init = (pixels * 255).round().permute(2, 0, 1) / 255
    assert (result[0] - init).abs().mean() < 0.05
    fresh = run(diffusion_settings(tiny_files, init_image=str(tmp_path / "init.png")), brightness(0.0))
    assert (fresh[0] - init).abs().mean() > 0.1  # from full noise the init is gone: the check can fail


def test_batch_draws_several_images(tiny_files):
    images = run(diffusion_settings(tiny_files, batch=3, steps=3), brightness(1.0))
    assert images.shape == (3, 3, 32, 32)
    assert not torch.equal(images[0], images[1])


def test_preselect_goes_on_from_the_start_scored_best(tiny_files):
    settings = diffusion_settings(tiny_files, steps=10, preselect=4)
    torch.manual_seed(settings.seed)
    generator = make(settings)
    scored = []

    def score(images):
        scored.append(images)
        return torch.tensor([0.1, 0.3, 0.9, 0.2])

    assert generator.begin(score, progress=False) == 4
    assert scored[0].shape == (4, 3, 32, 32) and not torch.equal(scored[0][1], scored[0][2])
    assert torch.equal(generator.snapshot()[0], scored[0][2].clamp(0, 1))  # the best-scored start, not the first
    assert generator.x.shape == (1, 3, 32, 32)
    states = list(optimize(generator, brightness(1.0), start=4))
    assert [state.step for state in states] == list(range(5, 11)) and generator.index == 10


def test_preselect_of_a_batch_keeps_the_best_starts_in_score_order(tiny_files):
    settings = diffusion_settings(tiny_files, steps=10, batch=2, preselect=3)
    torch.manual_seed(settings.seed)
    generator = make(settings)
    scored = []

    def score(images):
        scored.append(images)
        return torch.tensor([0.1, 0.8, 0.3, 0.2, 0.9, 0.4])

    generator.begin(score, progress=False)
    assert scored[0].shape == (6, 3, 32, 32)
    assert torch.equal(generator.snapshot(), scored[0][[4, 1]].clamp(0, 1))


def test_preselect_by_preview_goes_on_from_the_best_finished_picture_noised_back(tiny_files):
    settings = diffusion_settings(tiny_files, steps=10, skip_steps=2, preselect=4, preselect_preview=3)
    torch.manual_seed(settings.seed)
    generator = make(settings)
    unet, model_steps, scored = generator.unet, [], []
    generator.unet = lambda x, t: model_steps.append(t.tolist()) or unet(x, t)

    def score(images):
        scored.append(images)
        return torch.tensor([0.1, 0.3, 0.9, 0.2])

    assert generator.begin(score, progress=False) == 3
    top = int(generator.diffusion.timestep_map[generator.timesteps[0]])  # where the run starts, after the skip
    assert model_steps == [[top] * 4, [round(top / 2)] * 4, [0] * 4]  # 3 DDIM steps on all starts at once
    best = scored[0][2].mul(2).sub(1)
    assert torch.equal(generator.snapshot()[0], scored[0][2])  # a finished picture: the best, not the first
    alpha_bar = float(generator.diffusion.alphas_cumprod[generator.timesteps[3]])
    noise = (generator.x[0] - alpha_bar ** 0.5 * best) / (1 - alpha_bar) ** 0.5
    assert 0.9 < float(noise.std()) < 1.1 and abs(float(noise.mean())) < 0.1  # the picture, noised to step 3
    generator.unet = unet
    states = list(optimize(generator, brightness(1.0), start=3))
    assert [state.step for state in states] == list(range(4, 9)) and generator.index == 8


@pytest.mark.parametrize("overrides", [{"skip_steps": 5, "preselect": 4}, {"preselect": 1}, {"preselect": 0}])
def test_preselect_of_one_start_or_a_one_step_run_leaves_the_start_alone(tiny_files, overrides):
    generator = make(diffusion_settings(tiny_files, **overrides))
    start = generator.x.clone()
    assert generator.begin(lambda images: images.mean(dim=(1, 2, 3)), progress=False) == 0
    assert torch.equal(generator.x, start) and generator.index == 0


@pytest.mark.parametrize("overrides, error, message", [
    ({"skip_steps": 6}, UsageError, "--skip-steps 6 leaves nothing to do"),
    ({"width": 33}, UsageError, "multiples of 2"),
    ({"timestep_respacing": "ddim0"}, UserError, "ddim"),
    ({"timestep_respacing": "many"}, UserError, "many"),
])
def test_bad_diffusion_settings(tiny_files, overrides, error, message):
    with pytest.raises(error, match=message):
        make(diffusion_settings(tiny_files, **overrides))


def test_unknown_sampler_is_a_usage_error(tiny_files):
    with pytest.raises(UsageError, match="unknown sampler 'euler'"):
        diffusion_settings(tiny_files, sampler="euler")

