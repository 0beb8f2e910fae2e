"""The optimization loop: render, score, step. It knows nothing of any particular generator or model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import ContextManager
from dataclasses import dataclass

from torch import Tensor

from .generators.base import Generator


@dataclass
class Progress:
    """After a step: how far the run is and the loss of that step (a detached tensor, read it lazily)."""

    step: int
    total: int
    loss: Tensor


def optimize(generator: Generator, objective: Callable[[Tensor, float], Tensor], start: int = 0,
             forward_context: Callable[[], ContextManager] = nullcontext) -> Iterator[Progress]:
    """Advance the generator from step ``start`` to its last step, yielding after each one.

    The objective gets the image and how far the run is (0 at the first step, below 1 at the last), for
    losses that follow a schedule. Rendering and scoring run inside ``forward_context()`` (e.g. autocast);
    the step does not.
    """
    for step in range(start, generator.num_steps):
        with forward_context():
            loss = objective(generator.render(), step / generator.num_steps)
        generator.step(loss.float())
        yield Progress(step + 1, generator.num_steps, loss.detach())
