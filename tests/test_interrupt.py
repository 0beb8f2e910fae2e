"""Ctrl-C mid-step: acted on within a layer's time, even inside a long backward pass, and the image so far is saved."""

from __future__ import annotations

import os
import signal
import threading
import time

import torch

from artgen.loop import Guide

import artgen.run as run_module
from artgen.clamps import clamp_straight_through
from artgen.generators.vqgan import VQGANGenerator
from artgen.output import read_metadata
from artgen.settings import build_settings

LAYERS, WIDTH, ROWS = 24, 3072, 256  # one thread: about 0.1 s of C++ per layer and backward pass, seconds in all


class SlowGenerator:
    """Draws a 32x32 picture through a deep stack of wide linear layers, so each backward pass is seconds of C++
    with no Python of its own; on its second step it sends SIGINT to this process shortly into backward."""

    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_straight_through)
    model = None
    backward_seconds: list[float] = []
    signalled_at: list[float] = []

    def __init__(self, steps: int) -> None:
        self.num_steps, self.width, self.height = steps, 32, 32
        self.z = torch.randn(ROWS, WIDTH, requires_grad=True)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(WIDTH, WIDTH) for _ in range(2))
        self.optimizer = torch.optim.SGD([self.z], lr=0.1)
        self.steps_taken = 0
        self.last: torch.Tensor | None = None

    @classmethod
    def from_settings(cls, settings, device, model=None, init=None) -> "SlowGenerator":
        return cls(settings.steps)

    def render(self) -> torch.Tensor:
        hidden = self.z
        for index in range(LAYERS):
            hidden = self.layers[index % 2](hidden)
        image = torch.sigmoid(hidden.mean(0)).view(1, 3, 32, 32)
        self.last = image.detach()
        return image

    def begin(self, score, progress: bool) -> int:
        return 0

    def step(self, guide: Guide) -> torch.Tensor:
        loss = guide.loss(self.render())
        self.optimizer.zero_grad()
        if self.steps_taken == 1:
            threading.Timer(0.5, self._interrupt).start()
        started = time.perf_counter()
        guide.backward(loss)
        self.backward_seconds.append(time.perf_counter() - started)
        self.optimizer.step()
        self.steps_taken += 1
        return loss

    def _interrupt(self) -> None:
        self.signalled_at.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    def snapshot(self) -> torch.Tensor:
        return self.last.clamp(0, 1)

    def state_dict(self) -> dict:
        return {"z": self.z.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.z.copy_(state["z"])


def test_ctrl_c_during_a_long_backward_pass_stops_within_a_layer_and_saves(artgen, tiny_models, monkeypatch):
    monkeypatch.setattr(run_module, "generator_class", lambda name: SlowGenerator)
    SlowGenerator.backward_seconds, SlowGenerator.signalled_at = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = artgen("generate", "x", *tiny_models.clip_flags, "--cutn", "4", "--steps", "3", "-o", "out.png",
                        "--quiet")
        stopped = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    [full_backward] = SlowGenerator.backward_seconds  # step 1 finished; step 2 was interrupted mid-backward
    latency = stopped - SlowGenerator.signalled_at[0]
    assert result.code == 130, result.err
    assert result.err.strip().splitlines() == [
        "artgen: error: interrupted after step 1 of 3: saved the image so far to out.png"]
    assert read_metadata("out.png")["step"] == 1
    # Old behaviour: the signal waited for the whole backward pass (the rest of it, full_backward - 0.5 s).
    assert full_backward > 1.5, "the step is not slow enough here to tell"
    assert latency < min(3.0, full_backward / 3), (latency, full_backward)


def test_vqgan_saves_a_stopped_step_from_its_own_render_without_decoding_again(tiny_models, monkeypatch):
    settings = build_settings(None, None, tiny_models.settings())
    generator = VQGANGenerator.from_settings(settings, torch.device("cpu"))
    rendered = generator.render()
    decodes = []
    monkeypatch.setattr(generator, "decode", lambda z: decodes.append(z) or 1 / 0)
    assert torch.equal(generator.snapshot(), rendered.detach().clamp(0, 1)) and decodes == []
    monkeypatch.undo()
    generator.step(Guide(lambda image, progress: image.mean(), 0.0))  # z moved: the picture must be drawn again
    with torch.no_grad():
        assert torch.equal(generator.snapshot(), generator.render().clamp(0, 1))


def test_ctrl_c_while_preselecting_stops_with_one_line_and_writes_nothing(artgen, tiny_models, monkeypatch):
    from artgen.generators.diffusion import DiffusionGenerator

    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffusionGenerator, "_unguided", interrupted)
    result = artgen("generate", "x", *tiny_models.diffusion_flags, "--preselect", "2", "-o", "p.png", "--quiet")
    assert result.code == 130
    assert result.err.strip().splitlines() == [
        "artgen: error: interrupted while preselecting starts, before the first image: nothing saved"]
