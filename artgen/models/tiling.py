"""Periodic networks for seamless tiles (--tile).

Why: a convolution pads its input with zeros, so near the borders a decoder or a UNet sees an edge and draws
one, and two copies of its picture side by side show a seam. Padding circularly instead makes every layer of a
fully convolutional network (convolutions, nearest-neighbour upsampling, strided downsampling of even sizes,
group norms, attention without positions) treat the image as lying on a torus: shifting the input by any
amount shifts the output by the same amount, wrapping around, so the picture the network draws continues
across its borders.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

Model = TypeVar("Model", bound=nn.Module)


def make_periodic(model: Model) -> Model:
    """``model`` with every padded 2-d convolution padding circularly (changed in place; returned).

    Call it on a model of its own (the run's model cache keeps a tiled model under its own key), since a
    model shared with an untiled run would change under it."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.padding not in ("valid", (0, 0)):
            module.padding_mode = "circular"
    return model


def periodic_if(tile: bool, model: Model) -> Model:
    """``model`` made periodic when ``tile`` (a --tile run), else as it is."""
    return make_periodic(model) if tile else model
