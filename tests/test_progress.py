"""Every phase of a run shows progress under its own name (on stderr, as tqdm writes it)."""

from __future__ import annotations

import pytest


def test_each_candidate_has_its_own_labelled_bar(artgen, tiny_models):
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "2", "--candidates", "2", "-o", "c.png")
    assert result.code == 0, result.err
    assert "candidate 1/2" in result.err and "candidate 2/2" in result.err


@pytest.mark.parametrize("preview", ["0", "2"])
def test_the_preselect_phase_shows_progress_before_the_guided_steps(artgen, tiny_models, preview):
    result = artgen("generate", "x", *tiny_models.diffusion_flags, "--preselect", "2", "--preselect-preview", preview,
                    "-o", "p.png")
    assert result.code == 0, result.err
    assert "preselecting 2 starts" in result.err
    assert result.err.index("preselecting 2 starts") < result.err.index("generating")


def test_animation_frames_name_the_frame_being_drawn(artgen, tiny_models):
    result = artgen("animate", "x", *tiny_models.vqgan_flags, "--frames", "2", "--steps", "2", "--frames-dir", "f")
    assert result.code == 0, result.err
    assert "frame 1/2" in result.err and "frame 2/2" in result.err
