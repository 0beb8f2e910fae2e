"""Synthetic scenes: one or two coloured shapes on a neutral background, with captions.

Why: tiny models trained on these images can be checked without a real CLIP, because every image's colour
and shape are known and can be read back from its pixels (see lab/shape_checker.py). Shape colours are
saturated and spread around the hue circle, backgrounds are neutral, so the chromatic pixels are exactly
the shapes. Geometry is stored in fractions of the image side, so one scene renders at any size.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "yellow": (230, 210, 30),
    "green": (40, 190, 60),
    "cyan": (30, 200, 220),
    "blue": (30, 70, 230),
    "purple": (170, 40, 220),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light grey": (200, 200, 200),
    "grey": (128, 128, 128),
    "dark grey": (64, 64, 64),
    "black": (0, 0, 0),
}
COLOURS: dict[str, tuple[int, int, int]] = {**SHAPE_COLOURS, **BACKGROUND_COLOURS}
SHAPES = ("circle", "square", "triangle", "star")

STAR_INNER_RATIO = 0.4  # inner / outer radius: deep enough that a star never looks like a pentagon
_CORNERS = {"square": 4, "triangle": 3, "star": 5}
_SUPERSAMPLE = 4  # draw at 4x and box-downsample: smooth edges whose hue stays the shape's hue
_PLAIN_BACKGROUND_ODDS = 0.6


@dataclass(frozen=True)
class Shape:
    """One shape. ``size`` is the diameter of its circumscribed circle, so any rotation stays in place."""

    colour: str
    kind: str
    centre: tuple[float, float]  # (x, y), fractions of the side, y downwards
    size: float  # fraction of the side
    rotation: float = 0.0  # degrees, clockwise; the first corner points up at 0

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """Shapes (left to right, never overlapping) over a background whose top and bottom halves may differ."""

    shapes: tuple[Shape, ...]
    background: tuple[str, str]  # (top half, bottom half); equal for a plain background
    size: int = 64  # pixels per side when rendered


def random_scene(rng: random.Random | np.random.Generator, size: int = 64, max_shapes: int = 2) -> Scene:
    """Draw a scene: 1..max_shapes shapes of distinct colours; one alone is large, two share the width."""
    if max_shapes not in (1, 2):
        raise ValueError(f"max_shapes must be 1 or 2, not {max_shapes}")
    rng = _as_random(rng)
    count = rng.randint(1, max_shapes)
    top = rng.choice(list(BACKGROUND_COLOURS))
    others = [name for name in BACKGROUND_COLOURS if name != top]
    bottom = top if rng.random() < _PLAIN_BACKGROUND_ODDS else rng.choice(others)
    if count == 1:
        slots, (smallest, largest) = [(0.0, 1.0)], (0.45, 0.85)
    else:
        slots, (smallest, largest) = [(0.0, 0.5), (0.5, 1.0)], (0.32, 0.48)
    shapes = []
    for (left, right), colour in zip(slots, rng.sample(list(SHAPE_COLOURS), count)):
        diameter = rng.uniform(smallest, largest)
        radius = diameter / 2
        centre = (rng.uniform(left + radius, right - radius), rng.uniform(radius, 1 - radius))
        kind = rng.choice(SHAPES)
        rotation = rng.uniform(0, 360 / _CORNERS[kind]) if kind in _CORNERS else 0.0
        shapes.append(Shape(colour, kind, centre, diameter, rotation))
    return Scene(tuple(shapes), (top, bottom), size)


def render(scene: Scene) -> Image.Image:
    """The scene as an RGB image of ``scene.size`` pixels a side."""
    side = scene.size * _SUPERSAMPLE
    image = Image.new("RGB", (side, side), COLOURS[scene.background[0]])
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, side // 2, side - 1, side - 1), fill=COLOURS[scene.background[1]])
    for shape in scene.shapes:
        fill = COLOURS[shape.colour]
        x, y, radius = shape.centre[0] * side, shape.centre[1] * side, shape.size * side / 2
        if shape.kind == "circle":
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
        else:
            draw.polygon(_corners(shape.kind, x, y, radius, shape.rotation), fill=fill)
    return image.resize((scene.size, scene.size), Image.Resampling.BOX)


def captions(scene: Scene) -> list[str]:
    """Several phrasings of the same scene; each names every shape's colour and kind."""
    things = " and ".join(f"a {shape.name}" for shape in scene.shapes)
    top, bottom = scene.background
    ground = top if top == bottom else f"{top} and {bottom}"
    phrasings = [things, f"{things} on a {ground} background", f"a {ground} background with {things}",
                 f"a picture of {things}"]
    if len(scene.shapes) == 1:
        shape = scene.shapes[0]
        phrasings.append(f"a {'small' if shape.size < 0.65 else 'large'} {shape.name}")
    else:
        phrasings.append(f"a {scene.shapes[0].name} to the left of a {scene.shapes[1].name}")
    return phrasings


def caption(scene: Scene, rng: random.Random | np.random.Generator) -> str:
    """One of the scene's captions, picked by ``rng``."""
    return _as_random(rng).choice(captions(scene))


def make_dataset(count: int, seed: int, size: int = 64,
                 max_shapes: int = 2) -> Iterator[tuple[Image.Image, list[str], Scene]]:
    """Yield ``count`` (image, captions, scene) triples; the same arguments give bit-identical data."""
    rng = random.Random(seed)
    for _ in range(count):
        scene = random_scene(rng, size, max_shapes)
        yield render(scene), captions(scene), scene


def _corners(kind: str, x: float, y: float, radius: float, rotation: float) -> list[tuple[float, float]]:
    """Corners of a regular polygon (or a star, alternating outer and inner corners) around (x, y)."""
    points = _CORNERS[kind]
    radii = [radius, radius * STAR_INNER_RATIO] if kind == "star" else [radius]
    steps = points * len(radii)
    corners = []
    for step in range(steps):
        angle = math.radians(rotation - 90 + 360 * step / steps)
        r = radii[step % len(radii)]
        corners.append((x + r * math.cos(angle), y + r * math.sin(angle)))
    return corners


def _as_random(rng: random.Random | np.random.Generator) -> random.Random:
    """Accept either kind of generator; a numpy one seeds a fresh ``random.Random`` from its stream."""
    if isinstance(rng, random.Random):
        return rng
    return random.Random(int(rng.integers(2**63)))
