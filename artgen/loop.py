"""The loop: one step of the generator after another, each guided by the objective at that point of the run.

It knows nothing of any particular generator or model. Each step it hands the generator a :class:`Guide`: the
objective at that point of the run, the forward-pass context (autocast) and a backward pass that Ctrl-C can
stop. An optimizing generator (VQGAN) renders, scores and takes an optimizer step; a sampling generator
(diffusion) lets a sampler step through its denoiser guided by the same objective (artgen.guidance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ContextManager
from dataclasses import dataclass

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .generators.base import Generator


@dataclass
class Progress:
    """After a step: how far the run is and the loss of that step (a detached tensor, read it lazily)."""

    step: int
    total: int
    loss: Tensor


@dataclass
class Guide:
    """What a generator gets for one step: how to score an image now, and how to run passes over the score."""

    objective: Callable[[Tensor, float], Tensor]
    progress: float  # 0 at the first step, below 1 at the last: for losses that follow a schedule
    forward_context: Callable[[], ContextManager] = nullcontext

    def loss(self, image: Tensor) -> Tensor:
        """The objective's loss of an image [N,3,H,W] at this point of the run."""
        return self.objective(image, self.progress)

    def forward(self) -> ContextManager:
        """Where rendering and scoring run (e.g. autocast to bf16); backward passes and optimizer steps do not."""
        return self.forward_context()

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, stoppable by Ctrl-C mid-pass."""
        with interruptible(loss):
            loss.backward()

    def gradient(self, loss: Tensor, inputs: Tensor) -> Tensor:
        """d loss / d inputs without touching any ``.grad``, stoppable by Ctrl-C mid-pass."""
        with interruptible(loss):
            return torch.autograd.grad(loss, inputs)[0]


def optimize(generator: Generator, objective: Callable[[Tensor, float], Tensor], start: int = 0,
             forward_context: Callable[[], ContextManager] = nullcontext) -> Iterator[Progress]:
    """Advance the generator from step ``start`` to its last step, yielding after each one."""
    for step in range(start, generator.num_steps):
        loss = generator.step(Guide(objective, step / generator.num_steps, forward_context))
        yield Progress(step + 1, generator.num_steps, loss.detach())


@contextmanager
def interruptible(loss: Tensor) -> Iterator[None]:
    """Let Ctrl-C stop the backward pass of ``loss`` within about one operation's time instead of at its end.

    Python acts on SIGINT only between its own bytecodes, and a backward pass on the CPU runs in C++ from start to
    end (tens of seconds per step at large sizes). While this is active, every operation in the loss's graph has a
    no-op Python pre-hook, so the interpreter runs between operations and raises the pending KeyboardInterrupt
    there; torch passes it out of backward as it is. The graph is walked after the forward pass, so compiled
    models see no hooks. On CUDA nothing is hooked: backward runs on torch's own thread, where no signal is
    raised, and steps are short. Forward passes already run Python between modules.
    """
    handles = _hook_graph(loss.grad_fn) if loss.device.type == "cpu" and loss.grad_fn is not None else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook_graph(root: Any) -> list[Any]:
    """Register the no-op pre-hook on every node of an autograd graph but the leaves' gradient accumulators
    (which outlive the step); returns the handles."""
    seen, pending, handles = {root}, [root], []
    while pending:
        node = pending.pop()
        if not hasattr(node, "variable"):  # AccumulateGrad nodes hold their leaf as .variable
            handles.append(node.register_prehook(_let_python_run))
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                pending.append(child)
    return handles


def _let_python_run(grad_outputs: Any) -> None:
    """Does nothing: being Python, calling it gives the interpreter a moment to raise a pending KeyboardInterrupt."""
