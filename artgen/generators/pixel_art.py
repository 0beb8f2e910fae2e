"""Pixel-art generator: a coarse grid of cells, each one colour of a small palette, blown up to the canvas.

Design: the latent is a grid of logits, one per cell and palette colour ([N,K,h,w] for h x w cells). A render
takes softmax(logits / temperature) over the palette and mixes the palette's colours with it, then repeats
every cell pixel-size times in each direction (nearest neighbour), so the picture is blocky by construction
and CLIP's gradient reaches every choice. The temperature falls geometrically over the run, from soft
blends (easy to move) toward near-one-hot choices; the last part of the run draws hard choices with a
straight-through gradient (one-hot forward, softmax gradient backward), and so does ``snapshot``, so what is
saved holds palette colours only. The palette is the run's --palette (the Canvas carries it), drawn exactly, so
this generator needs no palette loss; or it is learned: K colours that Adam moves with the logits, kept inside
[0,1]. No network: the only model a run loads is CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..images import fit_image
from ..palettes import palette_tensor
from ..memory import NetworkShape
from ..settings import require, setting
from .base import Canvas, ModelCache, Options

if TYPE_CHECKING:
    from ..loop import Guide
    from ..settings import RunSettings

INIT_LOGIT = 10.0  # an init image's colour choice: a softmax at temperature 1 puts >99.9% of a cell on it (K=16)
RANDOM_LOGIT_SCALE = 1.0  # spread of the random start: soft enough that every colour gets gradient at first


def size_fix(flag: str, size: int, cell: int) -> str:
    """The one-line refusal of a size that is not a whole number of cells, naming the nearest sizes that are."""
    below, above = size // cell * cell, (size // cell + 1) * cell
    fixes = f"{below} or {above}" if below > 0 else f"{above}"
    return f"--{flag} {size} is not a multiple of --pixel-size {cell}: use {fixes}"


@dataclass
class PixelArtOptions(Options):
    """The pixel-art generator's options."""

    pixel_size: int = setting(8, "Pixels per cell side: the image is a grid of (width/N) x (height/N) cells, "
                                 "each one palette colour.")
    palette_size: int = setting(16, "Colours of a learned palette (when no --palette is given; a given one is "
                                    "drawn exactly).")
    pixel_lr: float = setting(0.1, "Learning rate of the cells' colour choices (and of a learned palette).")
    temperature: float = setting(1.0, "Softmax temperature of the colour choices at the start: higher blends "
                                      "more, so choices move more easily.")
    temperature_end: float = setting(0.05, "Temperature at the end of the run; it falls geometrically to it.")
    pixel_hard_fraction: float = setting(0.2, "Share of the run at its end drawn with hard colour choices "
                                        "(straight-through gradient), so the last steps see the final look.")

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("pixel_size", "pixel_lr", "temperature", "temperature_end"),
                non_negative=("pixel_hard_fraction",))
        if self.pixel_hard_fraction > 1:
            raise UsageError(f"--pixel-hard-fraction is a share of the run: give 0 to 1, "
                             f"got {self.pixel_hard_fraction}")
        if run.palette is None and self.palette_size < 2:
            raise UsageError(f"--palette-size needs at least 2 colours, got {self.palette_size}")
        for flag, size in (("width", run.width), ("height", run.height)):
            if size % self.pixel_size:
                raise UsageError(size_fix(flag, size, self.pixel_size))

    def for_frame(self, steps: int, run_steps: int, strength: float) -> "PixelArtOptions":
        """A frame keeps the options: its start image already fixes each cell's colour (see ``create``)."""
        return self

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        return [f"a lower --pixel-lr (now {self.pixel_lr})", f"a higher --temperature-end (now {self.temperature_end})"]

    def network_shape(self, on_cuda: bool) -> NetworkShape:
        """No network: only the rendered image itself (counted by the memory check) is kept per pixel."""
        return NetworkShape([0.0], 0.0, self.pixel_size, "the pixel-art cells")


def nearest_colours(colours: Tensor, palette: Tensor) -> Tensor:
    """Index of the nearest palette entry ([K,3]) to each colour of ``colours`` [N,3,h,w]; returns [N,h,w]."""
    distance = (colours[:, None] - palette[None, :, :, None, None]).square().sum(dim=2)
    return distance.argmin(dim=1)


def cluster_colours(colours: Tensor, count: int, rounds: int = 10) -> Tensor:
    """``count`` colours that stand for ``colours`` [M,3] (k-means from evenly spaced picks of the sorted colours):
    a learned palette's start from an init image, so its first render already looks like the image."""
    order = colours.sum(dim=1).argsort()
    picks = order[torch.linspace(0, len(order) - 1, count).round().long()]
    centres = colours[picks].clone()
    for _ in range(rounds):
        owner = torch.cdist(colours, centres).argmin(dim=1)
        for k in range(count):
            members = colours[owner == k]
            if len(members):
                centres[k] = members.mean(dim=0)
    return centres


class PixelArtGenerator:
    """Draws a palette-limited cell grid; ``step`` moves the cells' colour logits (and a learned palette)."""

    Options = PixelArtOptions
    title = "Pixel art"
    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_straight_through)  # renders already lie in [0,1]; a no-op guard
    exact_palette = True  # draws only the --palette colours: the objective adds no palette loss

    def __init__(self, logits: Tensor, palette: Tensor, learn_palette: bool, options: PixelArtOptions,
                 canvas: Canvas) -> None:
        self.logits = logits.detach().clone().requires_grad_(True)
        self.palette = palette.detach().clone().requires_grad_(learn_palette)
        self.learn_palette = learn_palette
        params = [self.logits] + ([self.palette] if learn_palette else [])
        self.optimizer = torch.optim.Adam(params, lr=options.pixel_lr)
        self.cell = options.pixel_size
        self.temperature_start, self.temperature_end = options.temperature, options.temperature_end
        self.hard_fraction = options.pixel_hard_fraction
        self.num_steps = canvas.steps
        self.height, self.width = logits.shape[-2] * self.cell, logits.shape[-1] * self.cell

    @classmethod
    def create(cls, options: PixelArtOptions, canvas: Canvas, init: Tensor | None = None,
               models: ModelCache | None = None) -> "PixelArtGenerator":
        """Start from ``init`` (each cell the palette colour nearest its mean colour) or from random logits
        drawn from torch's global generator, which the run seeds."""
        device, cell = canvas.device, options.pixel_size
        rows, cols = canvas.height // cell, canvas.width // cell
        learn = canvas.palette is None
        count = options.palette_size if learn else 0
        cells = None
        if init is not None:
            image = fit_image(init.to(device).float(), cols * cell, rows * cell)
            cells = F.avg_pool2d(image, cell).repeat(canvas.batch // init.shape[0], 1, 1, 1)
        if not learn:
            palette = palette_tensor(canvas.palette, device)
        elif cells is not None:
            palette = cluster_colours(cells.permute(0, 2, 3, 1).reshape(-1, 3), count)
        else:
            palette = torch.rand(count, 3, device=device)
        if cells is not None:
            choice = F.one_hot(nearest_colours(cells, palette), len(palette)).permute(0, 3, 1, 2)
            logits = choice.float() * INIT_LOGIT
        else:
            logits = torch.randn(canvas.batch, len(palette), rows, cols, device=device) * RANDOM_LOGIT_SCALE
        return cls(logits, palette, learn, options, canvas)

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """Nothing to choose: the cells start where ``create`` put them."""
        return 0

    def temperature(self, progress: float) -> float:
        """Geometric fall from --temperature to --temperature-end over the run (``progress`` 0 to 1)."""
        return self.temperature_start * (self.temperature_end / self.temperature_start) ** progress

    def colours(self) -> Tensor:
        """The palette as drawn: a learned one is kept in [0,1] by ``step``; clamped here too for safety."""
        return self.palette.clamp(0, 1)

    def render(self, progress: float = 1.0, hard: bool = False) -> Tensor:
        """The picture [N,3,H,W]: cell weights over the palette, one-hot when ``hard`` (straight-through)."""
        weights = torch.softmax(self.logits / self.temperature(progress), dim=1)
        if hard:
            one_hot = F.one_hot(weights.argmax(dim=1), weights.shape[1]).permute(0, 3, 1, 2).to(weights.dtype)
            weights = one_hot + (weights - weights.detach())  # forward: exactly one-hot
        cells = torch.einsum("nkhw,kc->nchw", weights, self.colours())
        return cells.repeat_interleave(self.cell, dim=2).repeat_interleave(self.cell, dim=3)

    def step(self, guide: "Guide") -> Tensor:
        """Render at this point of the temperature schedule (hard choices in the last --pixel-hard-fraction), score,
        and take one Adam step; a learned palette is put back inside [0,1]."""
        hard = guide.progress >= 1 - self.hard_fraction
        with guide.forward():
            loss = guide.loss(self.render(guide.progress, hard))
        self.optimizer.zero_grad(set_to_none=True)
        guide.backward(loss.float())
        self.optimizer.step()
        if self.learn_palette:
            with torch.no_grad():
                self.palette.clamp_(0, 1)
        return loss

    def snapshot(self) -> Tensor:
        """The picture with hard choices: every pixel is a palette colour, whatever the point of the run."""
        with torch.no_grad():
            return self.render(hard=True).float()

    def palette_colours(self) -> Tensor:
        """The palette now ([K,3] in [0,1]), for tests and callers that want to know the colours used."""
        return self.colours().detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits.detach().clone(), "palette": self.palette.detach().clone(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
            self.palette.copy_(state["palette"])
        self.optimizer.load_state_dict(state["optimizer"])
