"""The generator protocol: the one plugin point between the loop and whatever draws the image."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from ..settings import Settings

if TYPE_CHECKING:
    from ..loop import Guide


class Generator(Protocol):
    """Owns a latent and a model; draws an image from the latent and advances it from a loss.

    The loop calls ``step(guide)`` once per step; the generator draws its image [N,3,H,W] (meant to lie in
    [0,1]; ``scoring_clamp`` brings it there for CLIP) and moves toward a lower ``guide.loss(image)``.
    """

    default_clip_guidance_scale: float  # CLIP loss weight when the user gives none
    scoring_clamp: Callable[[Tensor], Tensor]  # brings render() into [0,1] for CLIP (see artgen.clamps)
    num_steps: int
    width: int
    height: int

    @classmethod
    def from_settings(cls, settings: Settings, device: torch.device, model: Any = None,
                      init: Tensor | None = None) -> "Generator":
        """Build from settings; reuse an already loaded ``model``; start from ``init`` ([N,3,H,W] in [0,1])."""
        ...

    @staticmethod
    def continue_settings(settings: Settings, steps: int, strength: float) -> Settings:
        """Settings for ``steps`` more steps from a start image, keeping ``strength`` (0-1) of it (animation)."""
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
