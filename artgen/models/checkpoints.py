"""Reading checkpoint files without running code from them.

Every ``.pt``/``.ckpt`` goes through torch's weights-only unpickler, which builds tensors and plain
containers and refuses anything else; a short allowlist admits the few harmless classes some real files
name (Lightning's callback classes, used as dict keys). Failures become one line naming the file and the fix.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import readable_file


def load_safely(path: Path, what: str, missing_fix: str, allow: tuple[type, ...] = (),
                map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with ``allow`` admitted; ``what`` names the file in errors."""
    readable_file(path, what, missing_fix)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "GLOBAL" in text or "Unsupported global" in text:  # the file names a class or function to call
            culprit = text.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in text else "an object"
            raise UserError(f"{what} {path} contains pickled code ({culprit}); refusing to load it: "
                            "use a file from a trusted source, or a plain state dict / .safetensors") from None
        raise UserError(f"{what} {path} is damaged ({type(error).__name__}): download it again") from None
    except Exception as error:  # a damaged file can trip the unpickler in any way (IndexError, KeyError, ...)
        raise UserError(f"{what} {path} is unreadable or truncated ({type(error).__name__}): "
                        "download it again") from None
