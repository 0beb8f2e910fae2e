"""Faults: a run that diverges, a GPU out of memory, a full disk, two runs on one folder, a killed animation."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import artgen.output as output
import artgen.run as run
import artgen.session as session_module
from artgen.errors import UserError
from artgen.output import read_metadata
from artgen.run import save_final
from fault_injection import main as kill_and_resume


def test_a_diverging_run_stops_with_the_causes_and_keeps_the_last_good_image(artgen, tiny_models, monkeypatch):
    real_build = session_module.build_objective

    class BlowsUpAfterSevenSteps:
        def __init__(self, objective):
            self.objective, self.calls, self.score = objective, 0, objective.score

        def __call__(self, image, progress):
            self.calls += 1
            loss = self.objective(image, progress)
            return loss * float("nan") if self.calls > 7 else loss

    def blows_up_after_seven_steps(*args, **kwargs):
        return BlowsUpAfterSevenSteps(real_build(*args, **kwargs))

    monkeypatch.setattr(session_module, "build_objective", blows_up_after_seven_steps)
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "20", "--lr", "0.3", "-o", "nan.png",
                    "--quiet")
    assert result.code == 1
    assert "became nan at step 10" in result.err and "--lr (now 0.3)" in result.err
    assert "saved the image of step 5 to nan.png" in result.err
    assert read_metadata("nan.png")["step"] == 5
    assert np.asarray(Image.open("nan.png")).std() > 0


def test_out_of_gpu_memory_names_settings_that_fit(artgen, tiny_models, monkeypatch):
    from artgen.generators.vqgan import VQGANGenerator

    def no_memory(self, loss):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(VQGANGenerator, "step", no_memory)
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--width", "64", "--height", "64", "--steps", "2",
                    "--quiet")
    assert result.code == 1
    assert "out of GPU memory at 64x64, --cutn 4" in result.err
    assert "--width 32 --height 32" in result.err and "--cutn 2" in result.err


def test_out_of_gpu_memory_while_preselecting_suggests_fewer_starts(tmp_path, tiny_models, monkeypatch):
    from artgen.generators.diffusion import DiffusionGenerator

    def no_memory(self, *args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DiffusionGenerator, "begin", no_memory)
    with pytest.raises(UserError, match=r"--batch 1: try .* fewer preselected starts \(--preselect 4\)"):
        run.generate(progress=False, **tiny_models.settings("diffusion", preselect=8, output=str(tmp_path / "p.png")))


def test_a_full_disk_is_one_clear_line(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output.os, "replace", full)
    with pytest.raises(output.UserError, match="the disk is full"):
        output.save_png(torch.rand(1, 3, 4, 4), tmp_path / "a.png", {})
    assert list(tmp_path.iterdir()) == []   # the temporary file is gone too


def test_a_name_taken_by_another_run_meanwhile_is_not_overwritten(tmp_path):
    taken = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(taken)
    saved = save_final(torch.ones(1, 3, 4, 4), taken, {"settings": {}}, overwrite=False)
    assert saved == tmp_path / "x-2.png"
    assert np.asarray(Image.open(taken)).max() == 0 and np.asarray(Image.open(saved)).min() == 255
    assert save_final(torch.ones(1, 3, 4, 4), taken, {}, overwrite=False) == tmp_path / "x-3.png"


def test_run_log_and_verbose(artgen, tiny_models):
    result = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "2", "-o", "v.png", "--verbose",
                    "--quiet")
    assert result.code == 0, result.err
    assert "run log in v.log" in result.err
    record = yaml.safe_load(open("v.log"))
    assert record["outputs"] == ["v.png"] and record["device"].startswith("cpu")
    assert {"load", "optimize", "save"} <= set(record["timings_s"]) and record["settings"]["steps"] == 2
    assert record["torch"] == torch.__version__
    quiet = artgen("generate", "x", *tiny_models.vqgan_flags, "--steps", "2", "-o", "q.png", "--quiet")
    assert quiet.err == ""


def test_killed_animation_resumes_to_the_same_frames():
    report = kill_and_resume(kills=2, seed=1)
    assert report.problems == []
    assert report.kills + report.finished_early == 2 and report.resumes == 2
