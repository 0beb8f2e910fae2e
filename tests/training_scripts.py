"""Load a script of training/ as a module, for tests of its pieces.

Why: training/ is a folder of scripts run from the repository root, not a package, so it cannot be imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

TRAINING = Path(__file__).resolve().parents[1] / "training"


def load_training_script(name: str) -> ModuleType:
    """training/<name>.py, executed once per call as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
