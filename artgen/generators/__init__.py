"""Generator registry: a name on the command line -> the class that draws with it.

Design: this dict is the plugin point. A generator module holds its Options dataclass and its class; adding
one means that module and one line here. The CLI, presets, recipes and the settings read each generator's
options from ``cls.Options``.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import Canvas, Generator, ModelCache, Options
from .diffusion import DiffusionGenerator
from .pixel_art import PixelArtGenerator
from .pixels import PixelsGenerator
from .strokes import StrokesGenerator
from .vqgan import VQGANGenerator

GENERATORS: dict[str, type] = {
    "vqgan": VQGANGenerator,
    "diffusion": DiffusionGenerator,
    "pixel-art": PixelArtGenerator,
    "pixels": PixelsGenerator,
    "strokes": StrokesGenerator,
}


def generator_class(name: str) -> type[Generator]:
    try:
        return GENERATORS[name]
    except KeyError:
        raise UsageError(f"unknown generator {name!r}: choose one of {', '.join(GENERATORS)}") from None


__all__ = ["Canvas", "GENERATORS", "Generator", "ModelCache", "Options", "generator_class"]
