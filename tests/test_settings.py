import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artgen.errors import UsageError
from artgen.generators import GENERATORS
from artgen.settings import (AnimationSettings, RunSettings, Settings, build_settings, field_names, load_preset,
                             preset_names)


def test_bundled_presets_exist_and_build():
    names = preset_names()
    assert {"default", "fast", "quality", "wikiart"} <= set(names)
    for name in names:
        settings = build_settings(name, overrides={"prompts": ["x"]})
        assert isinstance(settings, Settings)


def test_flags_override_preset_which_overrides_recipe():
    settings = build_settings("fast", base={"steps": 7, "cutn": 3, "lr": 0.3}, overrides={"prompts": ["x"], "steps": 11})
    assert settings.steps == 11          # flag beats preset
    assert settings.cutn == 16           # preset beats recipe
    assert settings.lr == 0.15


def test_preset_from_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("# mine\nsteps: 3\nprompts: a cat\n")
    assert build_settings(str(path)).prompts == ["a cat"]


@pytest.mark.parametrize("preset, content, message", [
    ("nope", None, "unknown preset 'nope'"),
    ("missing.yaml", None, "does not exist"),
    ("bad.yaml", "steps: [1,\n", "not valid YAML"),
    ("list.yaml", "- 1\n- 2\n", "must be a mapping"),
    ("typo.yaml", "stepz: 3\n", "did you mean 'steps'"),
    ("type.yaml", "steps: many\n", "steps must be an integer"),
])
def test_bad_presets(tmp_path, monkeypatch, preset, content, message):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / preset).write_text(content)
    with pytest.raises(UsageError, match=message):
        build_settings(preset, overrides={"prompts": ["x"]})


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "--steps must be a positive integer"),
    ("steps", -5, "--steps must be a positive integer"),
    ("width", 0, "--width must be a positive integer"),
    ("height", -1, "--height must be a positive integer"),
    ("cutn", 0, "--cutn"),
    ("lr", 0.0, "--lr must be a positive number"),
    ("lr", float("nan"), "--lr must be a positive number"),
    ("optimizer", "sgd", "unknown optimizer"),
    ("sampler", "euler", "unknown sampler 'euler'"),
    ("diffusion_steps", 20, "too few for the linear noise schedule"),
    ("preselect", -1, "--preselect must not be negative"),
    ("prior_clamp_max", -1.0, "--prior-clamp-max must not be negative"),
    ("preselect", 4, "--preselect is an option of the diffusion generator, which this run does not use"),
])
def test_bad_values(field, value, message):
    generator = "diffusion" if field in ("sampler", "diffusion_steps") or value == -1 and field == "preselect" else None
    with pytest.raises(UsageError, match=message):
        build_settings(overrides={"prompts": ["x"], field: value, **({"generator": generator} if generator else {})})


@pytest.mark.parametrize("overrides, message", [
    ({"preselect_share": 1.0}, "--preselect-share must lie between 0 and 1"),
    ({"preselect_share": 0}, "--preselect-share must lie between 0 and 1"),
    ({"preselect_preview": 1}, "--preselect-preview draws each start in that many DDIM steps: give 2 or more"),
    ({"preselect_preview": -2}, "--preselect-preview .* got -2"),
])
def test_bad_preselect(overrides, message):
    with pytest.raises(UsageError, match=message):
        build_settings(overrides={"prompts": ["x"], "generator": "diffusion", "preselect": 4, **overrides})


def test_a_prompt_is_required():
    with pytest.raises(UsageError, match="nothing to aim for"):
        build_settings()


def test_vqgan_local_files_go_together():
    with pytest.raises(UsageError, match="go together"):
        build_settings(overrides={"prompts": ["x"], "vqgan_config": "a.yaml"})


def test_ints_pass_for_floats_and_bools_do_not_pass_for_ints():
    assert build_settings(overrides={"prompts": ["x"], "lr": 1}).lr == 1.0
    with pytest.raises(UsageError, match="steps must be an integer"):
        build_settings(overrides={"prompts": ["x"], "steps": True})


def test_settings_split_into_shared_generator_and_animation_parts():
    settings = build_settings(overrides={"prompts": ["x"], "generator": "diffusion", "skip_steps": 2, "zoom": "1.1",
                                         "steps": 9}, animation=True)
    assert settings.run.steps == 9 and settings.options.skip_steps == 2 and settings.animation.zoom == "1.1"
    assert settings.to_dict()["skip_steps"] == 2 and "lr" not in settings.to_dict()
    assert settings.replace(steps=3, clamp_max=0.5).options.clamp_max == 0.5
    for name, cls in GENERATORS.items():  # no generator shadows a shared, an animation or another generator's field
        others = [n for other, c in GENERATORS.items() if other != name for n in field_names(c.Options)]
        assert not set(field_names(cls.Options)) & set(field_names(RunSettings) + field_names(AnimationSettings) +
                                                        others)


def test_every_preset_is_commented():
    for name in preset_names():
        assert load_preset(name)  # non-empty mapping


values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=20), st.lists(st.text(max_size=10), max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(field_names(RunSettings) + field_names(AnimationSettings) +
                                        [n for c in GENERATORS.values() for n in field_names(c.Options)] +
                                        ["stepz", "zoomm"]), values, max_size=6), st.booleans())
def test_any_mapping_of_settings_builds_or_raises_the_usage_error(mapping, animation):
    try:
        built = build_settings(overrides={"prompts": ["x"], **mapping}, animation=animation)
    except UsageError:
        return
    assert isinstance(built, Settings)
