"""Prompt syntax and the prompt losses.

A prompt is ``"text:weight:stop"``; several are joined with ``|``. Weight and stop are optional trailing
numbers, so text may itself contain colons ("photo: a cat" is all text). A negative weight pushes the image
away from the prompt. ``stop`` ends a prompt's pull once its distance falls below that value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UsageError

_NUMBER_LIKE = re.compile(r"^\s*[-+]?[0-9.][0-9.eE+-]*\s*$|^\s*$")
SYNTAX_HINT = 'write prompts as "text:weight:stop" (weight and stop optional), joined with "|"'


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
    return Prompt(text, weight, stop)


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
