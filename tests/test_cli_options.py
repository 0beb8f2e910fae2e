"""Flags come from the settings dataclasses: grouped help, per-generator help, refused foreign flags, docs/cli.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from artgen.cli import reference_markdown
from artgen.generators import GENERATORS
from artgen.errors import UsageError
from artgen.recipe import upgrade_recipe
from artgen.masks import EDIT
from artgen.settings import CONTROLS, build_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_docs_cli_md_is_the_generated_reference():
    assert DOCS.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/cli.md is stale: python -c 'from artgen.cli import reference_markdown as r; print(r(), end=\"\")' "
        "> docs/cli.md")


def test_help_groups_flags_under_their_generator(artgen):
    shown = artgen("generate", "--help").out
    headings = [line for line in shown.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["Options:", "Common options:", f"{CONTROLS}:", f"{EDIT}:"] + [
        f"{cls.title} options (--generator {name}):" for name, cls in GENERATORS.items()]
    assert "VQGAN options (--generator vqgan):" in headings and "Diffusion options (--generator diffusion):" in headings
    vqgan_part = shown.split("VQGAN options")[1].split("Diffusion options")[0]
    assert "--lr" in vqgan_part and "--prior-scale" in vqgan_part and "--sampler" not in vqgan_part
    animation = artgen("animate", "--help").out
    assert "Animation options:" in animation and EDIT not in animation and "--mask" not in animation


def test_help_for_one_generator_shows_only_its_options(artgen):
    shown = artgen("generate", "--generator", "diffusion", "--help").out
    assert "Diffusion options" in shown and "--preselect" in shown and "--clamp-max" in shown
    assert "VQGAN options" not in shown and "--lr " not in shown and "--prior-scale" not in shown


@pytest.mark.parametrize("args, named", [(["--generator", "diffusion", "--lr", "0.2"], "--lr"),
                                         (["--optimizer", "adamw", "--preset", "offline"], "--optimizer"),
                                         (["--sampler", "ddim"], "--sampler")])
def test_a_flag_the_generator_ignores_is_refused_in_one_line(artgen, args, named):
    result = artgen("generate", "a cat", *args, "--steps", "1")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "does not use" in lines[0], result.err


def test_python_keywords_of_another_generator_are_refused_too():
    with pytest.raises(UsageError, match="--skip-steps is an option of the diffusion generator"):
        build_settings(None, None, {"prompts": ["x"], "skip_steps": 3})
    with pytest.raises(UsageError, match="animation setting"):
        build_settings(None, None, {"prompts": ["x"], "frames": 3})


def test_a_preset_of_another_generator_keeps_its_shared_settings_and_says_what_it_skips(caplog):
    settings = build_settings("offline", None, {"prompts": ["x"], "generator": "vqgan"})
    assert type(settings.options).__name__ == "VQGANOptions" and settings.width == 32
    assert "preselect" in caplog.text and "ignored" in caplog.text


def test_a_0_1_0_vqgan_recipe_gets_its_prior_settings_renamed():
    old = {"generator": "vqgan", "diffusion_model": "shapes-diffusion", "noise_schedule": "cosine",
           "clamp_grad": False, "clamp_max": 2.0, "clamp_by_signal": True, "sampler": "ddpm", "prompts": ["x"]}
    upgraded = upgrade_recipe(old)
    assert upgraded["prior_model"] == "shapes-diffusion" and upgraded["prior_noise_schedule"] == "cosine"
    assert upgraded["prior_clamp_max"] == 0.0 and upgraded["prior_clamp_by_signal"] is True
    settings = build_settings(None, old, None)
    assert settings.options.prior_model == "shapes-diffusion" and settings.options.prior_clamp_max == 0.0
    assert upgrade_recipe({"generator": "diffusion", "diffusion_model": "x"}) == {"generator": "diffusion",
                                                                                 "diffusion_model": "x"}
