"""A whole run: settings in, a PNG out. Wires the perceptors, the generator, the objective and the writer."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .errors import RunInterrupted, UserError
from .generators import generator_class
from .loop import optimize
from .objective import build_objective
from .output import ensure_writable, resolve_output, save_png, step_path
from .perceptor import load_perceptors, parse_clip_spec
from .settings import Settings, apply

log = logging.getLogger("artgen")
LOSS_READ_EVERY = 5  # reading the loss forces a device sync; the progress bar does it only this often


@dataclass
class Result:
    """What a finished run made."""

    path: Path
    image: Tensor        # [1,3,H,W] in [0,1], on the CPU
    settings: Settings   # as run: seed and size filled in
    loss: float


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA when present; asking for CUDA without it is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked but no CUDA device is available: use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def with_seed(settings: Settings) -> Settings:
    """Fix the seed now so the PNG records the one actually used."""
    if settings.seed is not None:
        return settings
    return dataclasses.replace(settings, seed=random.SystemRandom().randrange(2**31))


def generate(settings: Settings | None = None, progress: bool = True, **overrides: Any) -> Result:
    """Run one optimization and write its PNG; keyword overrides name Settings fields."""
    settings = with_seed(apply(settings or Settings(), overrides, "argument").validate())
    device = resolve_device(settings.device)
    cls = generator_class(settings.generator)
    ensure_writable(resolve_output(settings.output, settings, settings.overwrite).parent)
    torch.manual_seed(settings.seed)
    specs = [parse_clip_spec(text, checkpoint)
             for text, checkpoint in itertools.zip_longest(settings.clip, settings.clip_checkpoint)]
    perceptors = load_perceptors(specs, device)
    generator = cls.from_settings(settings, device)
    settings = dataclasses.replace(settings, width=generator.width, height=generator.height)
    objective = build_objective(settings, perceptors, device)
    path = resolve_output(settings.output, settings, settings.overwrite)
    loss = _run_loop(generator, objective, settings, path, progress)
    image = generator.snapshot().cpu()
    save_png(image, path, _metadata(settings, generator.num_steps, loss))
    return Result(path, image, settings, loss)


def _run_loop(generator, objective, settings: Settings, path: Path, progress: bool) -> float:
    """Drive the loop with a progress bar and intermediate saves; on Ctrl-C save what there is, then stop."""
    bar = tqdm(total=generator.num_steps, disable=not progress, desc="generating", unit="step")
    loss = math.nan
    step = 0
    try:
        for state in optimize(generator, objective):
            step = state.step
            if step % LOSS_READ_EVERY == 0 or step == state.total:
                loss = state.loss.item()
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(1)
            if settings.save_every and step % settings.save_every == 0 and step < state.total:
                save_png(generator.snapshot(), step_path(path, step), _metadata(settings, step, loss))
    except KeyboardInterrupt:
        bar.close()
        save_png(generator.snapshot(), path, _metadata(settings, step, loss))
        raise RunInterrupted(f"interrupted after step {step} of {generator.num_steps}: saved the image so far to {path}")
    bar.close()
    return loss


def _metadata(settings: Settings, step: int, loss: float) -> dict[str, Any]:
    return {"settings": settings.to_dict(), "step": step, "loss": None if math.isnan(loss) else loss}
