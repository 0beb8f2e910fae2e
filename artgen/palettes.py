"""Palettes: the colours a run asks for with --palette, by name or as hex colours.

Why its own module: the settings check a --palette value, the pixel-art generator draws only its colours, and
the objective pulls every other generator's colours toward them; all three read the same parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import UsageError

Colour = tuple[int, int, int]

# Named palettes: the colours as their makers publish them.
NAMED_PALETTES: dict[str, tuple[str, ...]] = {
    # PICO-8's 16 fixed colours, in its index order
    "pico-8": ("#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
               "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa"),
    # the original Game Boy's four shades of green, darkest first
    "gameboy": ("#0f380f", "#306230", "#8bac0f", "#9bbc0f"),
    # IBM CGA's full 16-colour set (RGBI, with the brown fix of colour 6)
    "cga": ("#000000", "#0000aa", "#00aa00", "#00aaaa", "#aa0000", "#aa00aa", "#aa5500", "#aaaaaa",
            "#555555", "#5555ff", "#55ff55", "#55ffff", "#ff5555", "#ff55ff", "#ffff55", "#ffffff"),
}
HEX_COLOUR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def hex_colour(text: str) -> Colour | None:
    """The 8-bit colour of "#rrggbb" or "#rgb" (the # optional), or None when ``text`` is not one."""
    match = HEX_COLOUR.fullmatch(text.strip())
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(2 * digit for digit in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def parse_palette(text: str) -> list[Colour]:
    """The 8-bit colours of a --palette value: a known name or comma-separated hex colours ("#1a1c2c,#5d275d").

    A value with neither a comma nor a leading '#' that is not hex is taken as a name, so a typo in a name
    lists the names rather than explaining hex."""
    value = text.strip()
    if value.lower() in NAMED_PALETTES:
        entries = list(NAMED_PALETTES[value.lower()])
    elif "," in value or value.startswith("#") or HEX_COLOUR.fullmatch(value):
        entries = [entry.strip() for entry in value.split(",")]
    else:
        raise UsageError(f"unknown --palette {text!r}: choose one of {', '.join(NAMED_PALETTES)}, "
                         'or give hex colours like "#1a1c2c,#5d275d"')
    colours = []
    for entry in entries:
        colour = hex_colour(entry)
        if colour is None:
            raise UsageError(f"--palette entry {entry!r} is not a colour: give hex colours #rrggbb (or #rgb) "
                             'separated by commas, like "#1a1c2c,#5d275d"')
        colours.append(colour)
    if len(colours) < 2:
        raise UsageError(f"--palette needs at least 2 colours, got {len(colours)}")
    return colours


def palette_tensor(colours: Sequence[Colour], device: torch.device) -> Tensor:
    """[K,3] in [0,1] from 8-bit colours."""
    return torch.tensor(colours, dtype=torch.float32, device=device) / 255
