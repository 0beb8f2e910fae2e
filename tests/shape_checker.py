"""Read the dominant colour and shape of an image from its pixels, without CLIP.

Why: end-to-end tests of tiny models trained on artgen.scenes need a judge that is not itself a trained
model. Backgrounds there are neutral, so the chromatic pixels are the shapes.
Colour: a chroma-weighted vote of hue over the chromatic pixels, each pixel voting for the nearest named hue.
Shape: geometry of the largest connected chromatic region. A star fills only about half of its convex hull;
a convex shape fills all of it, and then the hull's share of its circumscribed circle tells the rest apart
(circle 1, square 2/pi = 0.64, triangle 0.41).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from artgen.scenes import BACKGROUND_COLOURS, SHAPE_COLOURS

MIN_CHROMA = 40.0  # max - min channel (0..255) below which a pixel counts as neutral
STAR_SOLIDITY = 0.72  # region area / hull area: below this the region is a star
CIRCLE_ROUNDNESS = 0.84  # hull area / circumscribed circle area: above this a convex region is a circle
SQUARE_ROUNDNESS = 0.59  # ... above this (and not a circle) a square, below it a triangle


def read(image: Image.Image | np.ndarray | str | Path) -> tuple[str, str | None]:
    """(colour, shape) of the image; see read_colour and read_shape."""
    return read_colour(image), read_shape(image)


def read_colour(image: Image.Image | np.ndarray | str | Path) -> str:
    """The shape colour with the most chroma-weighted hue votes; the nearest neutral if nothing is chromatic."""
    pixels = _as_array(image).reshape(-1, 3)
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    chromatic = _chromatic(chroma)
    if not chromatic.any():
        grey = pixels.mean()
        return min(BACKGROUND_COLOURS, key=lambda name: abs(np.mean(BACKGROUND_COLOURS[name]) - grey))
    names = list(SHAPE_COLOURS)
    prototypes = _hue(np.array([SHAPE_COLOURS[name] for name in names], dtype=np.float64))
    distance = np.abs(_hue(pixels[chromatic])[:, None] - prototypes[None, :])
    nearest = np.minimum(distance, 2 * math.pi - distance).argmin(axis=1)
    votes = np.bincount(nearest, weights=chroma[chromatic], minlength=len(names))
    return names[int(votes.argmax())]


def read_shape(image: Image.Image | np.ndarray | str | Path) -> str | None:
    """The shape of the largest connected chromatic region, or None when no pixel is chromatic."""
    pixels = _as_array(image)
    chroma = pixels.max(axis=2) - pixels.min(axis=2)
    mask = _chromatic(chroma)
    if not mask.any():
        return None
    region = _largest_region(mask)
    ys, xs = np.nonzero(region)
    hull = _convex_hull(_row_end_corners(region))
    hull_area = _polygon_area(hull)
    if ys.size / hull_area < STAR_SOLIDITY:
        return "star"
    centre = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    radius = max(math.dist(point, centre) for point in hull)
    roundness = hull_area / (math.pi * radius**2)
    if roundness > CIRCLE_ROUNDNESS:
        return "circle"
    return "square" if roundness > SQUARE_ROUNDNESS else "triangle"


def _as_array(image: Image.Image | np.ndarray | str | Path) -> np.ndarray:
    """HxWx3 float64 in 0..255, from a PIL image, a path, or an array (uint8, or float in 0..1)."""
    if isinstance(image, (str, Path)):
        image = Image.open(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image)
    return array.astype(np.float64) * (255.0 if array.dtype.kind == "f" else 1.0)


def _chromatic(chroma: np.ndarray) -> np.ndarray:
    """Pixels with at least half the chroma of the most chromatic ones: the half-way line of a soft edge."""
    return chroma >= max(MIN_CHROMA, 0.5 * float(np.percentile(chroma, 99)))


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle (radians) in the opponent-colour plane; mixing with a neutral leaves it unchanged."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2(math.sqrt(3) * (green - blue), 2 * red - green - blue)


def _largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of mask: min-label propagation with pointer jumping (no scipy)."""
    outside = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), outside)
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        neighbours = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                        padded[1:-1, :-2], padded[1:-1, 2:]])
        updated = np.where(mask, neighbours, outside)
        updated[mask] = updated.ravel()[updated[mask]]  # a label is a pixel of the same region: jump to its label
        if np.array_equal(updated, labels):
            return labels == np.bincount(labels[mask]).argmax()
        labels = updated


def _row_end_corners(region: np.ndarray) -> list[tuple[float, float]]:
    """Outer corners of each row's first and last pixel: all the hull of the region's pixel squares needs."""
    corners = []
    for y in np.nonzero(region.any(axis=1))[0]:
        xs = np.nonzero(region[y])[0]
        corners += [(xs[0], y), (xs[0], y + 1), (xs[-1] + 1, y), (xs[-1] + 1, y + 1)]
    return [(float(x), float(y)) for x, y in corners]


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Counter-clockwise convex hull by Andrew's monotone chain."""
    points = sorted(set(points))

    def half(ordered: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for point in ordered:
            while len(chain) >= 2 and _cross(chain[-2], chain[-1], point) <= 0:
                chain.pop()
            chain.append(point)
        return chain[:-1]

    return half(points) + half(points[::-1])


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _polygon_area(corners: list[tuple[float, float]]) -> float:
    """Shoelace formula."""
    x, y = np.array(corners).T
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
