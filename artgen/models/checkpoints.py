"""Reading checkpoint files without running code from them.

Every ``.pt``/``.ckpt`` goes through a weights-only unpickler, which builds tensors and plain containers
and refuses anything else; a short allowlist admits the few harmless classes some real files name
(Lightning's callback classes, used as dict keys). torch's own weights-only loader reads pickles of
protocol 2 (torch.save's default); a torch.save zip of a higher protocol is read by artgen's restricted
unpickler in :mod:`.torchscript`, which has the same allowlist, instead of being refused. What cannot be
read safely (a TorchScript program, a bare ``pickle.dumps`` file, pickled code) is named as what it is, on
one line with the fix; torch's own warnings never reach the user.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import readable_file
from .torchscript import (CustomState, ForbiddenGlobal, ScriptWeights, is_torchscript, pickle_protocol,
                          read_torchscript, read_zip_pickle, zip_root)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a pre-1.6 (non-zip) torch.save file
RESAVE = "re-save it with torch.save(state_dict, path) or as .safetensors"


def load_safely(path: Path, what: str, missing_fix: str, allow: tuple[type, ...] = (),
                map_location: Any = "cpu", expected: str = "a state dict") -> Any:
    """A weights-only load of ``path`` with ``allow`` admitted; ``what`` names the file in errors.

    ``expected`` says what the file should be, for the message when it is a TorchScript archive instead.
    """
    readable_file(path, what, missing_fix)
    _refuse_unreadable_kinds(path, what, expected)
    if (pickle_protocol(path) or 2) > 2:  # a torch.save zip of protocol 3+: torch's loader would refuse it
        return _own_unpickler(path, what, allow)
    try:
        with torch.serialization.safe_globals(list(allow)), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "GLOBAL" in text or "Unsupported global" in text:  # the file names a class or function to call
            culprit = text.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in text else "an object"
            raise _pickled_code(what, path, culprit) from None
        raise _damaged(what, path, error) from None
    except Exception as error:  # a damaged file can trip the unpickler in any way (IndexError, KeyError, ...)
        raise _damaged(what, path, error) from None


def load_script_weights(path: Path, what: str, fix: str) -> ScriptWeights:
    """The parameters and buffers of a TorchScript archive, read without running any of its code."""
    try:
        return read_torchscript(path)
    except ForbiddenGlobal as error:
        raise UserError(f"{what} {path} is a TorchScript archive that names {error.name}, which is not a "
                        f"tensor or module; refusing to load it: {fix}") from None
    except CustomState as error:
        raise UserError(f"{what} {path} is a TorchScript archive whose {error.script_class} restores itself "
                        f"with its own code (a scripted __setstate__), which artgen never runs: {fix}") from None
    except Exception as error:  # a damaged archive can fail in any way (KeyError, RuntimeError, ...)
        raise _damaged(what, path, error) from None


def _refuse_unreadable_kinds(path: Path, what: str, expected: str) -> None:
    """Name the kinds of file a weights-only load cannot read, before torch meets (and warns about) them."""
    if is_torchscript(path):
        raise UserError(f"{what} {path} is a TorchScript archive (a saved program), not {expected}: "
                        f"pass {expected} instead")
    protocol = pickle_protocol(path)
    if protocol is None or zip_root(path) is not None:
        return
    if _first_object(path) != LEGACY_MAGIC:
        raise UserError(f"{what} {path} is a bare Python pickle (pickle.dumps, protocol {protocol}), not a "
                        f"torch.save file, and may hold code: {RESAVE}")
    if protocol > 2:
        raise UserError(f"{what} {path} is an old-format (non-zip) torch.save file with pickle protocol "
                        f"{protocol}, which artgen does not read: {RESAVE}")


def _first_object(path: Path) -> Any:
    """The first pickled object, read with every global refused (the legacy torch format starts with an int)."""
    try:
        with open(path, "rb") as stream:
            return _NoGlobals(stream).load()
    except Exception:  # whatever it is, it is not the legacy magic number
        return None


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise ForbiddenGlobal(f"{module}.{name}")


def _own_unpickler(path: Path, what: str, allow: tuple[type, ...]) -> Any:
    try:
        return read_zip_pickle(path, allow)
    except ForbiddenGlobal as error:
        raise _pickled_code(what, path, error.name) from None
    except Exception as error:  # a damaged file can fail in any way
        raise _damaged(what, path, error) from None


def _pickled_code(what: str, path: Path, culprit: str) -> UserError:
    return UserError(f"{what} {path} contains pickled code ({culprit}); refusing to load it: "
                     "use a file from a trusted source, or a plain state dict / .safetensors")


def _damaged(what: str, path: Path, error: BaseException) -> UserError:
    return UserError(f"{what} {path} is unreadable or truncated ({type(error).__name__}): download it again")
