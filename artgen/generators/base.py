"""The generator protocol: the one plugin point between the loop and whatever draws the image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from ..settings import Settings


class Generator(Protocol):
    """Owns a latent and a model; draws an image from the latent and advances it from a loss.

    The loop calls ``render()``, scores the image, then ``step(loss)``. The image is [N,3,H,W], meant to lie
    in [0,1] (it may stray slightly outside; the loop clamps what it scores), and is differentiable w.r.t.
    whatever ``step`` updates.
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

    def render(self) -> Tensor: ...

    def step(self, loss: Tensor) -> None: ...

    def snapshot(self) -> Tensor:
        """The current picture to save, without gradient ([N,3,H,W] in [0,1])."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
