"""Generator registry: a name on the command line -> the class that draws with it.

Adding a generator means one module in this package and one line here.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import Generator
from .diffusion import DiffusionGenerator
from .vqgan import VQGANGenerator

GENERATORS: dict[str, type] = {
    "vqgan": VQGANGenerator,
    "diffusion": DiffusionGenerator,
}


def generator_class(name: str) -> type[Generator]:
    try:
        return GENERATORS[name]
    except KeyError:
        raise UsageError(f"unknown generator {name!r}: choose one of {', '.join(GENERATORS)}") from None
