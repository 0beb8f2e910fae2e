"""Keyframe schedules in Disco Diffusion's syntax, and prompts that change by keyframe.

A schedule is ``"0:(1.0), 50:(1.05), 100:(1.0)"``: a value at each key frame, interpolated linearly in
between (or held until the next key with ``step`` interpolation), the first value held before the first
key and the last after the last. A bare number (``"1.05"``) is a constant. Values are plain numbers; the
text is parsed, never evaluated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import UsageError
from .prompts import Prompt, parse_prompt

_KEY = re.compile(r"\s*(\d+)\s*:\s*\(\s*([^()]*?)\s*\)\s*(,|$)")
_PROMPT_KEY = re.compile(r"^\s*(\d+)\s*:(.*)$", re.S)


@dataclass(frozen=True)
class Schedule:
    """Key frames and their values, in increasing frame order."""

    keys: tuple[tuple[int, float], ...]

    def at(self, frame: int, interpolation: str = "linear") -> float:
        """The value at a frame."""
        keys = self.keys
        if frame <= keys[0][0]:
            return keys[0][1]
        for (f0, v0), (f1, v1) in zip(keys, keys[1:]):
            if frame < f1:
                return v0 if interpolation == "step" else v0 + (v1 - v0) * (frame - f0) / (f1 - f0)
        return keys[-1][1]

    def check_frames(self, frames: int, name: str) -> None:
        """Refuse keys at or beyond the frame count: they would silently never apply."""
        last = self.keys[-1][0]
        if last >= frames:
            raise UsageError(f"--{name}: key frame {last} is beyond the last frame ({frames - 1}): "
                             f"use keys below --frames {frames}")


def parse_schedule(text: str, name: str) -> Schedule:
    """Parse ``"0:(1.0), 50:(1.05)"`` or a bare number; errors point at the position of the mistake."""
    if _is_number(text):
        return Schedule(((0, _finite(float(text), text, name, 0)),))
    keys: list[tuple[int, float]] = []
    position = 0
    while position < len(text):
        match = _KEY.match(text, position)
        if not match:
            raise _syntax_error(text, name, len(text) - len(text[position:].lstrip()))
        frame, value = int(match.group(1)), match.group(2)
        if not _is_number(value):
            raise _syntax_error(text, name, match.start(2), f"{value!r} is not a number")
        if keys and frame <= keys[-1][0]:
            raise UsageError(f"--{name} {text!r}: key frame {frame} (at position {match.start(1)}) is not after "
                             f"key frame {keys[-1][0]}: list keys in increasing order")
        keys.append((frame, _finite(float(value), text, name, match.start(2))))
        position = match.end()
        if match.group(3) == "," and position >= len(text.rstrip()):
            raise _syntax_error(text, name, position, "a key frame is missing after the last comma")
    if not keys:
        raise _syntax_error(text, name, 0)
    return Schedule(tuple(keys))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return bool(text.strip())


def _finite(value: float, text: str, name: str, position: int) -> float:
    if not math.isfinite(value):
        raise UsageError(f"--{name} {text!r}: the value at position {position} must be a finite number")
    return value


def _syntax_error(text: str, name: str, position: int, what: str = "") -> UsageError:
    what = what or f"expected 'FRAME:(VALUE)' at position {position}"
    return UsageError(f"--{name} {text!r}: {what} (position {position}: {text[position:position + 12]!r}); "
                      'write schedules like "0:(1.0), 50:(1.05)"')


@dataclass(frozen=True)
class PromptKeyframes:
    """Prompts that take over at key frames, each fading in over ``transition`` frames as the last fades out."""

    keys: tuple[tuple[int, Prompt], ...]
    transition: int = 0

    def weights(self, frame: int) -> list[float]:
        """The weight of each keyed prompt at a frame (its own weight times its share of the blend)."""
        shares = [0.0] * len(self.keys)
        active = max((i for i, (start, _) in enumerate(self.keys) if start <= frame), default=0)
        start = self.keys[active][0]
        blend = 1.0 if self.transition == 0 or active == 0 else min(1.0, (frame - start + 1) / (self.transition + 1))
        shares[active] = blend
        if active > 0:
            shares[active - 1] = 1.0 - blend
        return [share * prompt.weight for share, (_, prompt) in zip(shares, self.keys)]

    def check_frames(self, frames: int) -> None:
        if self.keys[-1][0] >= frames:
            raise UsageError(f"--prompts: key frame {self.keys[-1][0]} is beyond the last frame ({frames - 1}): "
                             f"use keys below --frames {frames}")


def parse_prompt_keyframes(text: str, transition: int = 0) -> PromptKeyframes:
    """Parse ``"0:a forest at dawn|60:a city at night:1.5"``: key frame, then a prompt (``text:weight:stop``)."""
    keys: list[tuple[int, Prompt]] = []
    position = 0
    for part in text.split("|"):
        match = _PROMPT_KEY.match(part)
        if not match:
            raise UsageError(f"--prompts {text!r}: expected 'FRAME:prompt' at position {position}; "
                             'write keyed prompts like "0:a forest at dawn|60:a city at night"')
        frame = int(match.group(1))
        if keys and frame <= keys[-1][0]:
            raise UsageError(f"--prompts {text!r}: key frame {frame} (at position {position}) is not after "
                             f"key frame {keys[-1][0]}: list keys in increasing order")
        keys.append((frame, parse_prompt(match.group(2))))
        position += len(part) + 1
    if keys[0][0] != 0:
        raise UsageError(f"--prompts {text!r}: the first key must be frame 0, so every frame has a prompt")
    return PromptKeyframes(tuple(keys), transition)
