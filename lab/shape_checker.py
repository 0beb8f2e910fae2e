"""Read the dominant colour and shape of an image from its pixels, without CLIP.

Why: end-to-end tests of tiny models trained on lab.scenes need a judge that is not itself a trained
model. Backgrounds there are neutral, so the chromatic pixels are the shapes.
Colour: a chroma-weighted vote of hue over the chromatic pixels, each pixel voting for the nearest named hue.
Shape: an outline fit. Each large connected chromatic region is compared with the ideal outline of every shape
(circle, square, triangle, and stars of 4 to 6 points with thin or fat points, as the models draw them), placed
at the region's centroid with the region's area, at 16 rotations, and also stretched to the region's second
moments (an oval is still a circle, a rectangle a square); the score is the IoU. The best-fitting shape is the
answer when it fits about as well as real scenes of that shape do (FIT_FLOORS), or clearly better than every
other shape (CLEAR_MARGIN); otherwise there is no shape. So a lumpy blob is not a square for being less round
than a circle, and two merged blobs are not a triangle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lab.scenes import BACKGROUND_COLOURS, SHAPE_COLOURS

MIN_CHROMA = 40.0  # max - min channel (0..255) below which a pixel counts as neutral
# Calibration (tests/test_scenes.py's scenes): 1200 one-shape scenes, at 64 and 32 px and stretched by up to 1.5
# with noise, fit their own shape with IoU at least 0.95 (circles), 0.93 (squares), 0.89 (triangles), 0.85 (stars:
# thin points lose IoU to every misplaced pixel), and beat the runner-up by at least 0.07. Each floor sits 0.05
# below that; lumpy blobs reach 0.9 for some shape, but seldom both above its floor and clear of the others.
FIT_FLOORS = {"circle": 0.90, "square": 0.88, "triangle": 0.84, "star": 0.80}  # best IoU at or above: that shape
CLEAR_MARGIN = 0.12  # ... or this far above the runner-up's IoU: that shape
MAX_STRETCH = 1.5  # longest / shortest axis of an outline stretched to the region
ROTATIONS = 16  # per period of the shape's symmetry
CIRCLE_CORNERS = 64  # the circle's outline is a 64-gon
STAR_FORMS = [(5, 0.4), (4, 0.4), (6, 0.45), (5, 0.55)]  # (points, inner / outer radius); scenes draw (5, 0.4)
_SUPERSAMPLE = 4


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
    """The shape that the large chromatic regions fit best, or None when no shape fits (see the module doc)."""
    fits = shape_fits(image)
    if not fits:
        return None
    (best, score), (_, runner_up) = sorted(fits.items(), key=lambda item: -item[1])[:2]
    return best if score >= FIT_FLOORS[best] or score - runner_up >= CLEAR_MARGIN else None


def shape_fits(image: Image.Image | np.ndarray | str | Path) -> dict[str, float]:
    """Each shape's best IoU with any chromatic region at least half the size of the largest ({} if none)."""
    fits: dict[str, float] = {}
    for region in _large_regions(chromatic_mask(image)):
        for kind, score in _region_fits(region).items():
            fits[kind] = max(fits.get(kind, 0.0), score)
    return fits


def chromatic_mask(image: Image.Image | np.ndarray | str | Path) -> np.ndarray:
    """HxW booleans: the pixels that belong to shapes rather than to the neutral background."""
    pixels = _as_array(image)
    return _chromatic(pixels.max(axis=2) - pixels.min(axis=2))


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


def _large_regions(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of mask with at least half the pixels of the largest.

    Why half: a prompt's shape may come out twice (two stars), and a small speck beside it is no shape.
    Components by min-label propagation with pointer jumping (no scipy).
    """
    if not mask.any():
        return []
    outside = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), outside)
    while True:
        padded = np.pad(labels, 1, constant_values=outside)
        neighbours = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                        padded[1:-1, :-2], padded[1:-1, 2:]])
        updated = np.where(mask, neighbours, outside)
        updated[mask] = updated.ravel()[updated[mask]]  # a label is a pixel of the same region: jump to its label
        if np.array_equal(updated, labels):
            break
        labels = updated
    sizes = np.bincount(labels[mask])
    return [labels == label for label in np.nonzero(sizes >= sizes.max() / 2)[0]]


def _region_fits(region: np.ndarray) -> dict[str, float]:
    """Each shape's best IoU with the region, over its outlines placed at the region's centroid and area,
    as they are and stretched along the region's principal axes."""
    ys, xs = np.nonzero(region)
    scale = math.sqrt(ys.size)  # outlines have unit area
    margin = int(scale)  # room for corners beyond the region's bounding box
    top, left = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    crop = region[top:ys.max() + margin + 1, left:xs.max() + margin + 1]
    centre = np.array([xs.mean() + 0.5 - left, ys.mean() + 0.5 - top])
    fits: dict[str, float] = {}
    for stretch in (np.eye(2), _stretch(xs, ys)):
        for kind, outline in OUTLINES:
            score = _iou(crop, outline @ stretch.T * scale + centre)
            fits[kind] = max(fits.get(kind, 0.0), score)
    return fits


def _stretch(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Area-keeping linear map that gives an isotropic outline the region's second moments, up to MAX_STRETCH.

    Why: every ideal outline here has isotropic second moments, so this is the stretch that turns a circle
    into the region's ellipse, a square into its rectangle or rhombus.
    """
    covariance = np.cov(np.stack([xs, ys]), bias=True) + np.eye(2) / 12  # + a pixel's own spread
    variances, axes = np.linalg.eigh(covariance)
    ratio = min(math.sqrt(variances[1] / variances[0]), MAX_STRETCH)
    return axes @ np.diag([ratio**-0.5, ratio**0.5]) @ axes.T


def _iou(region: np.ndarray, outline: np.ndarray) -> float:
    """IoU of a boolean region with a polygon (pixel coordinates), rasterized at 4x and box-downsampled."""
    height, width = region.shape
    canvas = Image.new("L", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), 0)
    ImageDraw.Draw(canvas).polygon([tuple(point) for point in outline * _SUPERSAMPLE], fill=255)
    ideal = np.asarray(canvas.resize((width, height), Image.Resampling.BOX)) >= 128
    return float((ideal & region).sum() / (ideal | region).sum())


def _outline(corners: int, inner_ratio: float | None, rotation: float) -> np.ndarray:
    """Unit-area outline centred on 0: a regular polygon, or a star alternating outer and inner corners."""
    radii = [1.0] if inner_ratio is None else [1.0, inner_ratio]
    steps = corners * len(radii)
    angles = np.radians(rotation - 90 + 360 * np.arange(steps) / steps)
    lengths = np.resize(radii, steps)
    points = np.stack([lengths * np.cos(angles), lengths * np.sin(angles)], axis=1)
    x, y = points.T
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))  # shoelace
    return points / math.sqrt(area)


def _all_outlines() -> list[tuple[str, np.ndarray]]:
    """(shape, outline) for every shape, at ROTATIONS rotations over the shape's period of symmetry."""
    outlines = [("circle", _outline(CIRCLE_CORNERS, None, 0.0))]
    for kind, corners, inner_ratio in [("square", 4, None), ("triangle", 3, None),
                                       *(("star", corners, ratio) for corners, ratio in STAR_FORMS)]:
        period = 360 / corners
        outlines += [(kind, _outline(corners, inner_ratio, period * step / ROTATIONS)) for step in range(ROTATIONS)]
    return outlines


OUTLINES = _all_outlines()
