import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artgen.errors import UsageError
from artgen.settings import Settings, apply, build_settings, field_names, load_preset, preset_names


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
    ("preselect", 4, "--preselect chooses among diffusion starts: use it with --generator diffusion"),
])
def test_bad_values(field, value, message):
    with pytest.raises(UsageError, match=message):
        build_settings(overrides={"prompts": ["x"], field: value})


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


def test_apply_accepts_ints_for_floats_and_rejects_bools_for_ints():
    assert apply(Settings(), {"lr": 1}, "t").lr == 1.0
    with pytest.raises(UsageError):
        apply(Settings(), {"steps": True}, "t")


def test_every_preset_is_commented():
    for name in preset_names():
        assert load_preset(name)  # non-empty mapping


values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=20), st.lists(st.text(max_size=10), max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(field_names() + ["stepz", "zoomm"]), values, max_size=6))
def test_any_mapping_of_settings_builds_or_raises_the_usage_error(mapping):
    try:
        built = build_settings(overrides={"prompts": ["x"], **mapping})
    except UsageError:
        return
    assert isinstance(built, Settings)
