"""Prompt syntax and the prompt losses.

A prompt is ``"text:weight:stop"``; several are joined with ``|``. Weight and stop are optional trailing
numbers, so text may itself contain colons ("photo: a cat" is all text). A negative weight pushes the image
away from the prompt. ``stop`` ends a prompt's pull once its distance falls below that value.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError

_NUMBER_LIKE = re.compile(r"^\s*[-+]?[0-9.][0-9.eE+-]*\s*$|^\s*$")
_NON_FINITE_TAIL = re.compile(r":\s*([-+]?(nan|inf|infinity))\s*$", re.I)
SYNTAX_HINT = 'write prompts as "text:weight:stop" (weight and stop optional), joined with "|"'
# A prompt's loss is its weight times a distance of at most pi^2/2, next to terms of order 1 (tv, range, init
# pull) and a guidance scale that sets the overall strength. The presets and examples use weights up to 2; past
# 1e4 one prompt drowns every other term by four orders of magnitude, and weights near float32's range (1e38)
# overflow the loss to inf or NaN. 1e4 leaves room for any deliberate emphasis while refusing those.
MAX_WEIGHT = 1e4
MAX_DISTANCE = math.pi ** 2 / 2  # spherical_distance's largest value: a stop beyond +-this never or always applies
log = logging.getLogger("artgen")


@dataclass(frozen=True)
class Prompt:
    """One prompt: what it says (a text, or an image path), how hard it pulls, and where it stops."""

    text: str
    weight: float = 1.0
    stop: float = -math.inf


def parse_prompt(source: str) -> Prompt:
    """Parse one ``text:weight:stop`` item; trailing segments that look numeric are weight, then stop."""
    segments = source.split(":")
    numbers: list[str] = []
    while len(segments) > 1 and len(numbers) < 2 and _NUMBER_LIKE.match(segments[-1]):
        numbers.insert(0, segments.pop())
    text = ":".join(segments).strip()
    if not text:
        raise UsageError(f"prompt {source!r} has no text: {SYNTAX_HINT}")
    values = [_parse_number(n, source) for n in numbers]
    weight = values[0] if values else 1.0
    stop = values[1] if len(values) > 1 else -math.inf
    if abs(weight) > MAX_WEIGHT:
        raise UsageError(f"prompt {source!r}: weight {weight:g} is outside -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}; "
                         "a prompt's strength is its weight relative to the others: use a weight like 1 or 2")
    if len(values) > 1 and abs(stop) > MAX_DISTANCE:
        raise UsageError(f"prompt {source!r}: stop {stop:g} is outside -{MAX_DISTANCE:.2f} to {MAX_DISTANCE:.2f}, "
                         "the range of a prompt's distance, so it would never (or always) stop the pull")
    return Prompt(text, weight, stop)


def warn_non_finite_tails(prompts: list[Prompt]) -> None:
    """Say when a prompt ends in ":nan" or ":inf": they look like a weight but are read as part of the text."""
    for prompt in prompts:
        match = _NON_FINITE_TAIL.search(prompt.text)
        if match:
            log.warning("prompt %r: the trailing %r was read as part of the text, not as a weight or stop (those "
                        "must be finite numbers)", prompt.text, match.group(1))


def _parse_number(text: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"prompt {source!r}: {text.strip()!r} is not a number: {SYNTAX_HINT}") from None
    if not math.isfinite(value):
        raise UsageError(f"prompt {source!r}: weight and stop must be finite numbers")
    return value


def parse_prompts(values: list[str] | tuple[str, ...]) -> list[Prompt]:
    """Parse every ``--prompt`` value, each possibly holding several prompts joined with ``|``."""
    prompts = []
    for value in values:
        parts = value.split("|")
        if any(not p.strip() for p in parts):
            raise UsageError(f"prompt {value!r} has an empty part between '|': {SYNTAX_HINT}")
        prompts.extend(parse_prompt(p) for p in parts)
    return prompts


def spherical_distance(a: Tensor, b: Tensor) -> Tensor:
    """Squared great-circle distance between unit vectors, pairwise: a [N,D], b [P,D] -> [N,P]."""
    chord = (F.normalize(a, dim=-1)[:, None] - F.normalize(b, dim=-1)[None]).norm(dim=-1)
    return chord.div(2).clamp(max=1).arcsin().pow(2).mul(2)


def prompt_loss(image_embeds: Tensor, prompt_embeds: Tensor, weights: Tensor, stops: Tensor) -> Tensor:
    """Weighted prompt loss over all cutouts.

    Each prompt's distance is averaged over the cutouts and signed by its weight. Below its ``stop`` the
    value still counts, but no gradient flows, so a prompt that has been reached stops pulling.
    """
    distances = spherical_distance(image_embeds, prompt_embeds) * weights.sign()
    pulled = torch.maximum(distances, stops)
    distances = pulled + (distances - pulled).detach()
    return (weights.abs() * distances.mean(dim=0)).sum()
