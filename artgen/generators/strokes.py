"""The strokes generator: a picture made of vector strokes (cubic Béziers with a width, a colour and an
opacity) over a plain background, moved by CLIP's gradient through a soft rasterizer, as in CLIPDraw.

Design: the rasterizer is plain torch, so it needs no native extension and runs wherever torch does. Each
stroke's Béziers are sampled into a polyline of short straight pieces; a pixel's distance to the stroke is its
distance to the nearest piece (so ends and joins come out round), and its coverage is
``sigmoid((width/2 - distance) / softness)``: an edge about 2·softness pixels wide, smooth enough that every
parameter gets a gradient. Strokes are laid over the background in order with their opacity ("over"). Adam
moves the control points (in pixels, so a step is as long in x as in y), the widths (kept in the width range)
and the RGBA colours (kept in [0,1]). An init image becomes the background the strokes are laid over (and each
stroke starts with the init's colour under it), so stylizing a picture or an animation frame paints over it
rather than starting from a blank sheet. Since the strokes are vectors, ``svg`` writes the same picture as an SVG
document (``--svg``; an init image is embedded in it as a PNG under the paths); an SVG renderer's antialiased edges differ from the sigmoid's only along the edges.

Cost: a stroke is evaluated on the pixels of its bounding box only (widened by its half width and 12
softnesses, past which its coverage is below 1e-5 and taken as 0), so a step costs about the sum over strokes
of box pixels × pieces (16 per Bézier) distance evaluations, and one canvas-sized copy per stroke where it is
laid over the picture. The backward pass recomputes each stroke's distances rather than keeping them, so memory
grows with the boxes' pixels, not with strokes × canvas: 128 strokes at 512x512 take about 0.4 GB on a CPU.

With ``Canvas.tile`` the picture wraps around its borders: a pixel's offset to each piece is taken to the
nearest copy of the piece shifted by whole canvas sizes, and the SVG draws every stroke with its eight shifted
copies.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..clamps import clamp_straight_through
from ..errors import UsageError
from ..images import fit_image
from ..output import to_pil
from ..palettes import hex_colour
from ..memory import NetworkShape
from ..settings import require, setting
from .base import Canvas, ModelCache, Options

if TYPE_CHECKING:
    from ..loop import Guide
    from ..settings import RunSettings

PIECES = 16          # straight pieces per Bézier: a 100 px curve strays from its polyline by well under a pixel
MARGIN = 12.0        # softnesses beyond a stroke's edge where its coverage (sigmoid(-12) < 1e-5) is taken as 0
SPREAD = 0.15        # a random stroke's control points step up to this share of the canvas from the last one
ALPHA_START = 0.5    # random opacities start between this and 1, so every stroke shows from the start
WIDTH_LR, COLOUR_LR = 0.1, 0.01  # learning rates of widths (px) and colours (0-1), per unit of --strokes-lr


def parse_colour(text: str, option: str = "--background") -> tuple[float, float, float]:
    """A hex colour (#rrggbb or #rgb, the # optional) as RGB in [0,1]."""
    colour = hex_colour(text)
    if colour is None:
        raise UsageError(f"{option} {text!r} is not a colour: give a hex colour such as #ffffff or #000")
    return tuple(channel / 255 for channel in colour)


@dataclass
class StrokesOptions(Options):
    """The strokes generator's options."""

    strokes: int = setting(64, "Number of strokes in the picture.")
    stroke_segments: int = setting(1, "Cubic Béziers joined into each stroke (more: longer, curlier strokes).")
    stroke_width_min: float = setting(1.0, "Thinnest a stroke may get, in pixels.")
    stroke_width_max: float = setting(16.0, "Thickest a stroke may get, in pixels.")
    stroke_softness: float = setting(0.5, "Width in pixels of the strokes' soft edge while drawing: softer "
                                          "edges pass CLIP's gradient further, sharper ones match the SVG closer.")
    strokes_lr: float = setting(1.0, "Learning rate: control points move about this many pixels a step; "
                                     "widths a tenth of it, colours (0-1) a hundredth.")
    background: str = setting("#ffffff", "Background colour under the strokes, as hex (#ffffff); an init image "
                                         "replaces it.")
    svg: bool = setting(False, "Also write each picture as NAME.svg beside its PNG: the strokes as vector paths.")

    def validate(self, run: "RunSettings") -> None:
        require(self, positive=("strokes", "stroke_segments", "stroke_width_min", "stroke_width_max",
                                "stroke_softness", "strokes_lr"))
        if self.stroke_width_min > self.stroke_width_max:
            raise UsageError(f"--stroke-width-min {self.stroke_width_min:g} is above --stroke-width-max "
                             f"{self.stroke_width_max:g}: give a minimum no larger than the maximum")
        parse_colour(self.background)

    def divergence_causes(self, on_cuda: bool) -> list[str]:
        return [f"a lower --strokes-lr (now {self.strokes_lr})"]

    def network_shape(self, on_cuda: bool) -> NetworkShape:
        """No network: measured peak of a step, about 12 bytes per pixel per stroke (0.4 GB for 128 strokes at
        512x512 on a CPU), as units of the memory check's 60 bytes."""
        return NetworkShape([self.strokes * 12 / 60], 0.0, 1, "the strokes' coverage")


def bezier_polyline(points: Tensor, pieces: int = PIECES) -> Tensor:
    """Points along joined cubic Béziers: control points [..., 3k+1, 2] -> [..., k·pieces+1, 2]."""
    segments = (points.shape[-2] - 1) // 3
    t = torch.linspace(0, 1, pieces + 1, dtype=points.dtype, device=points.device)[:-1]
    basis = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3], dim=-1)  # [pieces,4]
    index = 3 * torch.arange(segments, device=points.device)[:, None] + torch.arange(4, device=points.device)
    control = points[..., index, :]                                              # [..., k, 4, 2]
    curve = (basis[:, :, None] * control[..., None, :, :]).sum(dim=-2)          # [..., k, pieces, 2]
    return torch.cat([curve.flatten(-3, -2), points[..., -1:, :]], dim=-2)


def _wrap(offset: Tensor, period: float) -> Tensor:
    """The offset to the nearest copy, shifted by whole periods."""
    return offset - period * torch.round(offset / period)


def stroke_coverage(line: Tensor, width: Tensor, xs: Tensor, ys: Tensor, softness: float,
                    period: tuple[int, int] | None) -> Tensor:
    """Coverage [h,w] of the pixel centres (xs [w], ys [h]) by a polyline [L+1,2] drawn ``width`` pixels wide;
    with ``period`` (width, height) the polyline repeats with that period."""
    start, step = line[:-1], line[1:] - line[:-1]
    dx, dy = xs[None, :, None] - start[:, 0], ys[:, None, None] - start[:, 1]  # [1,w,L], [h,1,L]
    if period is not None:  # measure from the copy of each piece whose middle is nearest the pixel
        dx = _wrap(dx - step[:, 0] / 2, period[0]) + step[:, 0] / 2
        dy = _wrap(dy - step[:, 1] / 2, period[1]) + step[:, 1] / 2
    length2 = step.square().sum(dim=-1) + 1e-12
    along = ((dx * step[:, 0] + dy * step[:, 1]) / length2).clamp(0, 1)
    nearest = ((dx - along * step[:, 0]).square() + (dy - along * step[:, 1]).square()).amin(dim=-1)
    return torch.sigmoid((width / 2 - nearest.clamp_min(1e-12).sqrt()) / softness)


def _box(low: float, high: float, size: int, tile: bool, device: torch.device) -> Tensor:
    """Pixel indices from floor(low) to ceil(high): within the canvas, or taken around it when tiling. A stroke
    whose numbers are not finite (a diverged run) spans the canvas, so that the loss shows it."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return torch.arange(size, device=device)
    first, last = int(low // 1), int(-(-high // 1))
    if tile:
        return torch.arange(first, first + min(last - first, size), device=device) % size
    return torch.arange(max(first, 0), min(last, size), device=device)


def stroke_boxes(lines: Tensor, widths: Tensor, softness: float, height: int, width: int,
                 tile: bool) -> list[list[tuple[Tensor, Tensor]]]:
    """The rows and columns [N][S] of the pixels each stroke (polylines [N,S,L+1,2]) may cover."""
    reach = (widths.detach() / 2 + MARGIN * softness)[..., None]
    low = (lines.detach().amin(dim=-2) - reach).tolist()
    high = (lines.detach().amax(dim=-2) + reach).tolist()
    return [[(_box(y0, y1, height, tile, lines.device), _box(x0, x1, width, tile, lines.device))
             for (x0, y0), (x1, y1) in zip(image_low, image_high)] for image_low, image_high in zip(low, high)]


def rasterize(points: Tensor, widths: Tensor, colours: Tensor, background: Tensor, height: int, width: int,
              softness: float, tile: bool = False) -> Tensor:
    """The picture [N,3,H,W] of strokes: control points [N,S,3k+1,2] in pixels (x right, y down, pixel centres
    at half-integers), widths [N,S] in pixels, RGBA colours [N,S,4] in [0,1], over ``background`` (a colour [3]
    or pictures [N,3,H,W]). Stroke 0 is at the bottom. Differentiable in points, widths and colours.

    Each stroke is laid over the picture within its box only: the box is read, blended and written back into
    a new picture (an out-of-place index_put, which keeps nothing canvas-sized for the backward pass)."""
    lines = bezier_polyline(points)
    cover = partial(stroke_coverage, softness=softness, period=(width, height) if tile else None)
    channels = torch.arange(3, device=points.device)[:, None, None]
    pictures = []
    for n, boxes in enumerate(stroke_boxes(lines, widths, softness, height, width, tile)):
        ground = background[n] if background.dim() == 4 else background[:, None, None]
        picture = ground.to(points.dtype).expand(3, height, width).contiguous()
        for s, (rows, cols) in enumerate(boxes):
            if len(rows) == 0 or len(cols) == 0:
                continue
            inputs = (lines[n, s], widths[n, s], cols.to(points.dtype) + 0.5, rows.to(points.dtype) + 0.5)
            # recomputed in the backward pass: only the box's coverage is kept, not the per-piece distances
            crop = checkpoint(cover, *inputs, use_reentrant=False) if torch.is_grad_enabled() else cover(*inputs)
            alpha = crop * colours[n, s, 3]
            index = (channels, rows[None, :, None], cols[None, None, :])
            picture = picture.index_put(index, picture[index] * (1 - alpha) + colours[n, s, :3, None, None] * alpha)
        pictures.append(picture)
    return torch.stack(pictures)


def svg_document(points: Tensor, widths: Tensor, colours: Tensor, background: str | Tensor, height: int, width: int,
                 tile: bool = False) -> str:
    """One picture's strokes (points [S,3k+1,2], widths [S], colours [S,4]) as an SVG of the same size: a
    background rectangle (or the picture [3,H,W] given as ``background``, embedded as a PNG), then one path per stroke in drawing order, with round caps and joins. When tiling,
    each path also holds the stroke's eight copies shifted by the canvas size, so the picture wraps around."""
    shifts = [(dx, dy) for dx in (0, -width, width) for dy in (0, -height, height)] if tile else [(0, 0)]
    lines = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">', _svg_background(background, height, width)]
    for stroke, stroke_width, rgba in zip(points.tolist(), widths.tolist(), colours.tolist()):
        paths = []
        for dx, dy in shifts:
            xy = [f"{x + dx:.3f} {y + dy:.3f}" for x, y in stroke]
            curves = " ".join("C " + " ".join(xy[i:i + 3]) for i in range(1, len(xy), 3))
            paths.append(f"M {xy[0]} {curves}")
        lines.append(f'<path d="{" ".join(paths)}" fill="none" stroke="{_hex(rgba[:3])}" '
                     f'stroke-opacity="{rgba[3]:.4f}" stroke-width="{stroke_width:.3f}" '
                     'stroke-linecap="round" stroke-linejoin="round"/>')
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def _svg_background(background: str | Tensor, height: int, width: int) -> str:
    if isinstance(background, str):
        return f'<rect width="{width}" height="{height}" fill="{_hex(parse_colour(background))}"/>'
    encoded = io.BytesIO()
    to_pil(background).save(encoded, format="PNG")
    data = base64.b64encode(encoded.getvalue()).decode("ascii")
    return (f'<image width="{width}" height="{height}" style="image-rendering:pixelated" '
            f'href="data:image/png;base64,{data}"/>')


def _hex(rgb: Any) -> str:
    return "#" + "".join(f"{round(min(max(value, 0.0), 1.0) * 255):02x}" for value in rgb)


class StrokesGenerator:
    """Adam on the strokes' control points, widths and colours; each step rasterizes them and scores the picture."""

    Options = StrokesOptions
    title = "Strokes"
    default_clip_guidance_scale = 1.0
    scoring_clamp = staticmethod(clamp_straight_through)  # the over operator keeps the picture in [0,1]

    def __init__(self, points: Tensor, widths: Tensor, colours: Tensor, options: StrokesOptions,
                 canvas: Canvas) -> None:
        self.points = points.detach().clone().requires_grad_(True)
        self.widths = widths.detach().clone().requires_grad_(True)
        self.colours = colours.detach().clone().requires_grad_(True)
        lr = options.strokes_lr
        self.optimizer = torch.optim.Adam([{"params": [self.points], "lr": lr},
                                           {"params": [self.widths], "lr": lr * WIDTH_LR},
                                           {"params": [self.colours], "lr": lr * COLOUR_LR}])
        self.background_hex = options.background
        self.background = torch.tensor(parse_colour(options.background), device=points.device)
        self.ground: Tensor | None = None  # an init image under the strokes, in place of the background colour
        self.width_range = (options.stroke_width_min, options.stroke_width_max)
        self.softness, self.tile, self.write_svg = options.stroke_softness, canvas.tile, options.svg
        self.num_steps, self.width, self.height = canvas.steps, canvas.width, canvas.height

    @classmethod
    def create(cls, options: StrokesOptions, canvas: Canvas, init: Tensor | None = None,
               models: ModelCache | None = None) -> "StrokesGenerator":
        """Random strokes from torch's global generator (drawn on the CPU, so the seed gives the same strokes on
        any device); with ``init``, that picture is the background and each stroke takes its mean colour under it."""
        count, size = canvas.batch * options.strokes, torch.tensor([canvas.width, canvas.height])
        start = torch.rand(count, 1, 2) * size
        steps = (torch.rand(count, 3 * options.stroke_segments, 2) - 0.5) * 2 * SPREAD * size
        points = torch.cat([start, start + steps.cumsum(dim=1)], dim=1)
        low, high = options.stroke_width_min, options.stroke_width_max
        widths = low + (high - low) * torch.rand(count)
        colours = torch.cat([torch.rand(count, 3), ALPHA_START + (1 - ALPHA_START) * torch.rand(count, 1)], dim=1)
        shape = (canvas.batch, options.strokes)
        points, widths, colours = (points.view(*shape, -1, 2).to(canvas.device), widths.view(shape).to(canvas.device),
                                   colours.view(*shape, 4).to(canvas.device))
        if init is not None:
            image = fit_image(init.to(canvas.device).float(), canvas.width, canvas.height)
            image = image.expand(canvas.batch, -1, -1, -1) if image.shape[0] == 1 else image
            colours[..., :3] = footprint_colours(points, widths, image, options.stroke_softness, canvas.tile)
        generator = cls(points, widths, colours, options, canvas)
        if init is not None:
            generator.ground = image.detach().clamp(0, 1)
        return generator

    def render(self) -> Tensor:
        background = self.background if self.ground is None else self.ground
        return rasterize(self.points, self.widths, self.colours, background, self.height, self.width,
                         self.softness, self.tile)

    def begin(self, score: Callable[[Tensor], Tensor], progress: bool) -> int:
        """Nothing to choose: the strokes start where ``create`` put them."""
        return 0

    def step(self, guide: "Guide") -> Tensor:
        """Render, score, take one Adam step, then put widths and colours back in range and the strokes on the
        canvas (clamped to it; when tiling, each stroke moved by whole canvas sizes to start on it)."""
        with guide.forward():
            loss = guide.loss(self.render())
        self.optimizer.zero_grad(set_to_none=True)
        guide.backward(loss.float())
        self.optimizer.step()
        with torch.no_grad():
            self.widths.clamp_(*self.width_range)
            self.colours.clamp_(0, 1)
            size = torch.tensor([self.width, self.height], dtype=self.points.dtype, device=self.points.device)
            if self.tile:
                self.points.sub_(torch.floor(self.points[..., :1, :] / size) * size)
            else:
                self.points.clamp_(min=torch.zeros_like(size), max=size)
        return loss

    def snapshot(self) -> Tensor:
        with torch.no_grad():
            return self.render().float().clamp(0, 1)

    def svg(self, index: int) -> str | None:
        """Picture ``index`` of the batch as an SVG document, when --svg asked for one."""
        if not self.write_svg:
            return None
        background = self.background_hex if self.ground is None else self.ground[index]
        return svg_document(self.points[index].detach(), self.widths[index].detach(), self.colours[index].detach(),
                            background, self.height, self.width, self.tile)

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points.detach().clone(), "widths": self.widths.detach().clone(),
                "colours": self.colours.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.points.copy_(state["points"])
            self.widths.copy_(state["widths"])
            self.colours.copy_(state["colours"])
        self.optimizer.load_state_dict(state["optimizer"])


def footprint_colours(points: Tensor, widths: Tensor, image: Tensor, softness: float, tile: bool) -> Tensor:
    """Each stroke's mean colour [N,S,3] in ``image`` [N,3,H,W], weighted by how much of each pixel it covers."""
    height, width = image.shape[-2:]
    lines = bezier_polyline(points)
    period = (width, height) if tile else None
    colours = torch.zeros(*points.shape[:2], 3, device=image.device)
    with torch.no_grad():
        for n, boxes in enumerate(stroke_boxes(lines, widths, softness, height, width, tile)):
            for s, (rows, cols) in enumerate(boxes):
                cover = stroke_coverage(lines[n, s], widths[n, s], cols.to(lines.dtype) + 0.5,
                                        rows.to(lines.dtype) + 0.5, softness, period)
                pixels = image[n][:, rows[:, None], cols[None, :]]
                colours[n, s] = (pixels * cover).sum(dim=(1, 2)) / cover.sum().clamp_min(1e-6)
    return colours
