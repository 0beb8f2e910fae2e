"""The plugin point between the run and whatever draws the image.

Design: a generator is one module holding an ``Options`` dataclass (its own settings: fields, defaults, help,
validation) and a class registered under a name in ``artgen.generators``. The run builds it with
``create(options, canvas, init, models)``: its options, a :class:`Canvas` (size, batch, steps, device and
speed switches every generator shares), a start image as a tensor (decoded once by the run) and the
session's :class:`ModelCache`, so candidates and frames reuse a loaded model. It never sees the CLI, the
whole settings or CLIP: each step the loop hands it a Guide to score its picture with.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..loop import Guide
    from ..memory import NetworkShape
    from ..settings import RunSettings


@dataclass(frozen=True)
class Canvas:
    """What the run asks of any generator besides its own options."""

    width: int
    height: int
    batch: int
    steps: int
    device: torch.device
    channels_last: bool = False
    compile: bool = False
    checkpointing: bool = False
    tile: bool = False  # --tile: the picture must continue across its borders (four copies show no seam)
    palette: tuple[tuple[int, int, int], ...] | None = None  # --palette: the 8-bit colours the run asks for
    mask: Tensor | None = None  # an edit's mask [1,1,H,W]: 1 repaint, 0 keep the init image, feathered between


class ModelCache:
    """Loaded models by key, so that the next generator of a run (a candidate, a frame) reuses them."""

    def __init__(self) -> None:
        self._models: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]


@dataclass
class Options:
    """A generator's own settings. Subclasses add fields made with ``artgen.settings.setting`` (each becomes
    a flag, a preset key and a recipe entry) and override the hooks below where they apply."""

    def validate(self, run: "RunSettings") -> None:
        """Raise UsageError for values that need no model, naming the flag and the fix."""

    def for_frame(self, steps: int, run_steps: int, strength: float) -> "Options":
        """The options of an animation frame of ``steps`` steps (the run's are ``run_steps``) that keeps
        ``strength`` (0-1) of its start image."""
        return self

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        """Settings of this generator worth changing when the loss became NaN or infinite, most likely first."""
        return []

    def network_shape(self, on_cuda: bool) -> "NetworkShape":
        """The activation profile of its network at the options' model, for the memory check before a run."""
        raise NotImplementedError

    def memory_hints(self) -> list[str]:
        """Settings of this generator that need less GPU memory, for the out-of-memory message."""
        return []


class Generator(Protocol):
    """Owns a latent and a model; advances the latent one step at a time toward a lower loss."""

    Options: ClassVar[type[Options]]
    title: ClassVar[str]                          # its name in help headings ("VQGAN")
    default_clip_guidance_scale: ClassVar[float]  # CLIP loss weight when the user gives none
    scoring_clamp: Callable[[Tensor], Tensor]     # brings its image into [0,1] for CLIP (see artgen.clamps)
    # Optional: ``exact_palette = True`` says it draws only ``canvas.palette``'s colours, so the run adds no palette
    # loss (read with a default of False: a generator that does not say gets the loss).
    num_steps: int
    width: int
    height: int

    @classmethod
    def create(cls, options: Options, canvas: Canvas, init: Tensor | None, models: ModelCache) -> "Generator":
        """Build from its options; start from ``init`` ([N,3,H,W] in [0,1]) when given."""
        ...

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """Before the first step: choose a start (e.g. the best of several by ``score``, higher is better);
        returns the number of steps this took (0 when there is nothing to choose)."""
        ...

    def step(self, guide: "Guide") -> Tensor:
        """One step toward a lower ``guide.loss``; returns that step's loss."""
        ...

    def snapshot(self) -> Tensor:
        """The current picture to save, without gradient ([N,3,H,W] in [0,1])."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
