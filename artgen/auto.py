"""What the automatic settings become on the device a run got: precision, channels-last and checkpointing.

Why here and once: the choice depends on the device, which is known only when a run starts; it is settled then,
before any model loads, into plain values (``bf16``, ``true``), so the PNG records what actually ran and
``--from`` repeats the same arithmetic on any machine. Each choice carries its reason, which a run logs and
``artgen doctor`` prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from . import memory
from .settings import Settings, flag
from .speed import native_bf16

log = logging.getLogger("artgen")
AUTOMATIC = ("precision", "channels_last", "checkpointing")  # the settings settle() chooses when left to it


@dataclass(frozen=True)
class Choice:
    """One automatic setting as settled: the field, its value and why."""

    name: str
    value: Any
    why: str

    def __str__(self) -> str:
        return f"--{flag(self.name)} {shown(self.value)}: {self.why}"


def shown(value: Any) -> str:
    """A setting's value as a user reads it: on/off for a switch."""
    return value if isinstance(value, str) else "on" if value else "off"


def is_auto(value: Any) -> bool:
    """Whether a value of one of the AUTOMATIC settings is left to :func:`settle` (auto, or not given)."""
    return value in ("auto", None)


def choose_precision(device: torch.device) -> Choice:
    """bf16 where the device computes it natively; fp32 elsewhere, where bf16 would be emulated and slow."""
    native, why = native_bf16(device)
    return Choice("precision", "bf16" if native else "fp32", why)


def choose_channels_last(precision: str) -> Choice:
    """Channels-last with half precision, where its speed-up was measured (benchmarks/RESULTS.md); not in fp32."""
    if precision == "fp32":
        return Choice("channels_last", False, "no speed-up was measured with fp32")
    return Choice("channels_last", True, f"the measured fast path is {precision} with channels-last")


def choose_checkpointing(settings: Settings, device: torch.device) -> Choice:
    """Checkpointing only when the estimated memory at this size exceeds what the device has free."""
    plain = settings.replace(checkpointing=False)
    needed = memory.footprint(plain, device).bytes_at(settings.width, settings.height)
    available = memory.available_bytes(device)
    size, need, free = f"{settings.width}x{settings.height}", memory.readable(needed), memory.readable(available)
    if needed > available:
        return Choice("checkpointing", True, f"{size} needs about {need} without it, more than the {free} free on "
                                             f"{device.type}")
    return Choice("checkpointing", False, f"{size} needs about {need}, {free} free on {device.type}")


def settle(settings: Settings, device: torch.device) -> tuple[Settings, list[Choice]]:
    """The settings with every automatic value (precision auto, channels-last and checkpointing not given)
    settled for ``device``, and the choices made."""
    choices = []
    if is_auto(settings.run.precision):
        choices.append(choose_precision(device))
        settings = settings.replace(precision=choices[-1].value)
    if is_auto(settings.run.channels_last):
        choices.append(choose_channels_last(settings.run.precision))
        settings = settings.replace(channels_last=choices[-1].value)
    if is_auto(settings.run.checkpointing):
        choices.append(choose_checkpointing(settings, device))
        settings = settings.replace(checkpointing=choices[-1].value)
    return settings, choices


def report(choices: list[Choice]) -> None:
    """Log what was chosen: checkpointing switched on as a warning (it makes each step slower), the rest in one
    info line (shown with --verbose)."""
    switched = [c for c in choices if c.name == "checkpointing" and c.value]
    for choice in switched:
        log.warning("gradient checkpointing is on: %s; each step takes longer", choice.why)
    quiet = [str(c) for c in choices if c not in switched]
    if quiet:
        log.info("auto settings: %s", "; ".join(quiet))
