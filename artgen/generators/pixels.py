"""The pixels generator: the image itself is the latent; no generator model, only CLIP.

Design: optimizing raw RGB values under CLIP drifts into high-frequency noise, because every pixel moves on
its own. As in the feature-visualization literature, the image is instead held as a Fourier spectrum whose
coefficients are scaled by 1/f (so a step of the optimizer moves broad shapes as easily as fine detail) in a
decorrelated colour space (the square root of natural images' colour covariance, so luminance and colour
move independently), then squashed into [0,1] by a sigmoid. The map is invertible, so an init image is
the exact first render. ``--pixels-space rgb`` keeps the plain parametrization (sigmoid of per-pixel values).

Tiles: the inverse real FFT draws a picture that is periodic by construction (the last row and column are
neighbours of the first), so with --tile the Fourier field needs nothing but the wrapped cutouts the objective
takes; the plain RGB field has no neighbours at all and gets its seamlessness from those cutouts alone. Keep
any padding or cropping out of ``ImageField.image``: it would break that periodicity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..clamps import clamp_straight_through
from ..images import fit_image
from ..memory import NetworkShape
from ..settings import require, require_choice, setting
from .base import Canvas, ModelCache, Options

if TYPE_CHECKING:
    from ..loop import Guide
    from ..settings import RunSettings

SPACES = ("fourier", "rgb")
# Square root of the colour covariance of natural images (the ImageNet estimate used in feature
# visualization), columns scaled so that the largest has unit norm.
COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64)
COLOUR_SQRT = COLOUR_SQRT / COLOUR_SQRT.norm(dim=0).max()
SPECTRUM_STD = 0.01   # the random start: a faint, smooth field
EDGE = 1 / 512        # init pixels are kept this far inside (0, 1), where the sigmoid is invertible; 8-bit exact


@dataclass
class PixelsOptions(Options):
    """The pixels generator's options."""

    pixels_space: str = setting("fourier", "How the image is held: a 1/f-scaled Fourier spectrum in decorrelated "
                                           "colour (smooth, no pixel noise) or plain per-pixel values.",
                                choices=SPACES)
    pixels_lr: float = setting(0.05, "Learning rate of the image's parameters.")
    pixels_decay: float = setting(1.0, "Fourier space: how fast fine detail is damped, the exponent of 1/f "
                                       "(0: no damping; higher: smoother images).")

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("pixels_lr",), non_negative=("pixels_decay",), finite=("pixels_decay",))
        require_choice(self, "pixels_space", SPACES)

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        return [f"a lower --pixels-lr (now {self.pixels_lr})"]

    def network_shape(self, on_cuda: bool) -> NetworkShape:
        """No network: a few image-sized tensors (spectrum, colours, the sigmoid) per pixel."""
        return NetworkShape([16.0], 0.0, 1, "the image's own tensors")


class ImageField:
    """The parametrization: parameters <-> image [N,3,H,W] in [0,1], differentiable one way, inverted the other."""

    def __init__(self, space: str, height: int, width: int, decay: float, device: torch.device) -> None:
        self.space, self.height, self.width = space, height, width
        fy = torch.fft.fftfreq(height, device=device)[:, None]
        fx = torch.fft.rfftfreq(width, device=device)[None, :]
        frequency = (fy.square() + fx.square()).sqrt().clamp(min=1 / max(height, width))
        self.scale = frequency.pow(-decay) / 4  # 1/f: a step moves broad shapes as much as fine detail
        self.colour = COLOUR_SQRT.float().to(device)

    def image(self, params: Tensor) -> Tensor:
        if self.space == "rgb":
            return torch.sigmoid(params)
        spectrum = torch.view_as_complex(params) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
        return torch.sigmoid(torch.einsum("ij,njhw->nihw", self.colour, decorrelated))

    def params(self, image: Tensor) -> Tensor:
        """The parameters whose image is ``image`` (kept EDGE inside (0, 1))."""
        logits = torch.logit(image.clamp(EDGE, 1 - EDGE))
        if self.space == "rgb":
            return logits
        decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.colour), logits)
        spectrum = torch.fft.rfft2(decorrelated, norm="ortho") / self.scale
        return torch.view_as_real(spectrum).contiguous()

    def random(self, batch: int, device: torch.device) -> Tensor:
        """A random start from torch's global generator (so the seed decides it)."""
        if self.space == "rgb":
            return torch.randn(batch, 3, self.height, self.width, device=device) * SPECTRUM_STD * 10
        return torch.randn(batch, 3, self.height, self.width // 2 + 1, 2, device=device) * SPECTRUM_STD


class PixelsGenerator:
    """Adam on the image's parameters; each step renders them, scores the image and moves them."""

    Options = PixelsOptions
    title = "Pixels"
    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_straight_through)  # the sigmoid keeps the image in range already

    def __init__(self, field: ImageField, params: Tensor, options: PixelsOptions, canvas: Canvas) -> None:
        self.field = field
        self.params = params.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.params], lr=options.pixels_lr)
        self.num_steps, self.width, self.height = canvas.steps, canvas.width, canvas.height

    @classmethod
    def create(cls, options: PixelsOptions, canvas: Canvas, init: Tensor | None = None,
               models: ModelCache | None = None) -> "PixelsGenerator":
        """Start from ``init`` (its exact picture) or from a faint random field; any size works."""
        field = ImageField(options.pixels_space, canvas.height, canvas.width, options.pixels_decay, canvas.device)
        if init is not None:
            init = fit_image(init.to(canvas.device), canvas.width, canvas.height)
            params = field.params(init.repeat(canvas.batch // init.shape[0], 1, 1, 1))
        else:
            params = field.random(canvas.batch, canvas.device)
        return cls(field, params, options, canvas)

    def render(self) -> Tensor:
        return self.field.image(self.params)

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        return 0

    def step(self, guide: "Guide") -> Tensor:
        with guide.forward():
            loss = guide.loss(self.render())
        self.optimizer.zero_grad(set_to_none=True)
        guide.backward(loss.float())
        self.optimizer.step()
        return loss

    def snapshot(self) -> Tensor:
        with torch.no_grad():
            return self.render().float().clamp(0, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"params": self.params.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.params.copy_(state["params"])
        self.optimizer.load_state_dict(state["optimizer"])

