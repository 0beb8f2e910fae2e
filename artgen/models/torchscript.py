"""Reading tensors out of torch's zip archives without running anything stored in them.

Why: ``torch.jit.load`` runs an archive's TorchScript, including a scripted ``__setstate__``, so a CLIP
``.pt`` file could write files or worse the moment it is opened; and torch's own weights-only unpickler
refuses pickles of protocol 4 and up, which legitimate state dicts sometimes are. Both kinds of file share
one layout: a zip whose ``<root>/data.pkl`` pickles the object and names each tensor's bytes
``<root>/data/<key>`` through a persistent id ``('storage', <storage type>, key, location, numel)``.
TorchScript archives add ``code/`` (the program, never read here except for the literal lists of each
module's parameter and buffer names) and ``constants.pkl`` (tensors baked into the code, not part of a
state dict, so never read).

This module unpickles ``data.pkl`` with an unpickler that admits only tensor rebuilding, storage types,
``OrderedDict``, TorchScript's list helpers and, for TorchScript, an inert stand-in for every
``__torch__.*`` class whose ``__setstate__`` only stores what it is given. Anything else stops the read
with :class:`ForbiddenGlobal`, naming what the file asked for.
"""

from __future__ import annotations

import ast
import collections
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
_DECLARED = re.compile(r"^\s+__(parameters|buffers)__ = (\[.*\])\s*$")
_CLASS = re.compile(r"^class (\w+)\(")


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside the allowlist (pickled code, or an unknown object)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class ScriptObject:
    """Inert stand-in for a TorchScript class: unpickling only stores its state, nothing of it runs."""

    script_class = "__torch__"

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass
class ScriptWeights:
    """A TorchScript archive's parameters and buffers, by dotted name, and the classes its modules use."""

    state: dict[str, Tensor]
    classes: set[str]


def zip_root(path: Path) -> str | None:
    """The top folder of a torch zip archive (``<root>/data.pkl``), or None when the file is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    roots = [name[: -len("data.pkl")] for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    return roots[0] if roots else None


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (saved by torch.jit.save): a torch zip with code/ or constants.pkl."""
    root = zip_root(path)
    if root is None:
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.startswith(root + "code/") or n == root + "constants.pkl" for n in archive.namelist())


def pickle_protocol(path: Path) -> int | None:
    """The pickle protocol of a torch zip's data.pkl or of a bare pickle; None when it does not say."""
    root = zip_root(path)
    try:
        if root is not None:
            with zipfile.ZipFile(path) as archive, archive.open(root + "data.pkl") as stream:
                head = stream.read(2)
        else:
            with open(path, "rb") as stream:
                head = stream.read(2)
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def read_torchscript(path: Path) -> ScriptWeights:
    """The parameters and buffers of a TorchScript archive, named as ``torch.jit.load(path).state_dict()``."""
    root = zip_root(path)
    if root is None:
        raise pickle.UnpicklingError("not a torch zip archive")
    with zipfile.ZipFile(path) as archive:
        declared = _declared_state_names(archive, root)
        top = _Unpickler(archive, root, script=True).load()
    if not isinstance(top, ScriptObject):
        raise pickle.UnpicklingError("the archive does not hold a TorchScript module")
    state: dict[str, Tensor] = {}
    classes: set[str] = set()
    _walk(top, "", declared, state, classes, set())
    return ScriptWeights(state, classes)


def read_zip_pickle(path: Path, allow: tuple[type, ...] = ()) -> Any:
    """A torch.save zip (any pickle protocol) of tensors and plain containers; ``allow`` admits a few classes."""
    root = zip_root(path)
    if root is None:
        raise pickle.UnpicklingError("not a torch zip archive")
    with zipfile.ZipFile(path) as archive:
        return _Unpickler(archive, root, script=False, allow=allow).load()


class _Unpickler(pickle.Unpickler):
    """Builds tensors from the archive's storages; refuses every global outside a short allowlist."""

    def __init__(self, archive: zipfile.ZipFile, root: str, script: bool, allow: tuple[type, ...] = ()) -> None:
        super().__init__(archive.open(root + "data.pkl"))
        self.archive, self.root, self.script = archive, root, script
        self.allow = {(cls.__module__, cls.__qualname__): cls for cls in allow}
        self.storages: dict[str, Tensor] = {}
        self.stand_ins: dict[str, type] = {}
        _check_byteorder(archive, root)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if (module, name) in self.allow:
            return self.allow[module, name]
        if self.script and (module == "__torch__" or module.startswith("__torch__.")):
            return self._stand_in(f"{module}.{name}")
        raise ForbiddenGlobal(f"{module}.{name}")

    def _stand_in(self, qualified: str) -> type:
        if qualified not in self.stand_ins:
            self.stand_ins[qualified] = type("ScriptObject", (ScriptObject,), {"script_class": qualified})
        return self.stand_ins[qualified]

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:60]}")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}data/{key}"))
            if len(raw) != numel * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, not {numel} {dtype} values")
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _rebuild_tensor(storage: Tensor, offset: int, size: Any, stride: Any, requires_grad: bool = False,
                    hooks: Any = None, metadata: Any = None) -> Tensor:
    """A view of the flat storage; as_strided refuses a view that reaches outside it."""
    if not isinstance(storage, Tensor):
        raise pickle.UnpicklingError("a tensor without storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: Tensor, requires_grad: bool = False, hooks: Any = None) -> Tensor:
    if not isinstance(data, Tensor):
        raise pickle.UnpicklingError("a parameter without a tensor")
    return data


def _same(value: Any, *_: Any) -> Any:
    """TorchScript's list builders and type tags: the plain value is all that is needed."""
    return value


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch.jit._pickle", name): _same for name in
       ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")},
}


def _check_byteorder(archive: zipfile.ZipFile, root: str) -> None:
    try:
        order = archive.read(root + "byteorder").decode().strip()
    except KeyError:
        return  # archives from before torch recorded it are little-endian
    if order != sys.byteorder:
        raise pickle.UnpicklingError(f"the tensors are stored {order}-endian")


def _declared_state_names(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """Each class's ``__parameters__`` + ``__buffers__``, read as literals from code/ (nothing is executed)."""
    declared: dict[str, set[str]] = {}
    for name in archive.namelist():
        if not (name.startswith(root + "code/") and name.endswith(".py")):
            continue
        module = name[len(root + "code/"): -len(".py")].replace("/", ".")
        current = None
        for line in archive.read(name).decode("utf-8", "replace").splitlines():
            if match := _CLASS.match(line):
                current = f"{module}.{match.group(1)}"
                declared.setdefault(current, set())
            elif current and (match := _DECLARED.match(line)):
                declared[current].update(str(n) for n in ast.literal_eval(match.group(2)))
    return declared


def _walk(node: ScriptObject, prefix: str, declared: dict[str, set[str]], state: dict[str, Tensor],
          classes: set[str], seen: set[int]) -> None:
    """Collect tensors by dotted name, as a module's state_dict does: declared parameters and buffers."""
    if id(node) in seen:
        raise pickle.UnpicklingError("the modules refer to each other in a cycle")
    seen.add(id(node))
    classes.add(node.script_class)
    attributes = getattr(node, "state", None)
    if not isinstance(attributes, dict):
        raise CustomState(node.script_class)
    names = declared.get(node.script_class)
    for name, value in attributes.items():
        if isinstance(value, ScriptObject):
            _walk(value, f"{prefix}{name}.", declared, state, classes, seen)
        elif isinstance(value, Tensor) and (names is None or name in names):
            state[prefix + name] = value


class CustomState(pickle.UnpicklingError):
    """A module restores itself with its own scripted ``__setstate__``: its state has no attribute names."""

    def __init__(self, script_class: str) -> None:
        super().__init__(script_class)
        self.script_class = script_class
