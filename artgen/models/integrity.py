"""The models cache's integrity: a lock per file for downloads, and every cached file's sha256 checked on load.

Why: several artgen processes (a batch's workers, two terminals) may ask for the same missing file at once; the
lock makes one download it while the others wait and then find it. A file whose sha256 is not published gets its
hash recorded beside it (``NAME.sha256``) the first time it is used whole (after its download, or the first load
of a file placed by hand), and every later load compares, so a file changed on disk (a truncated copy, a swapped
checkpoint) is refused in one line instead of loading something else. ``artgen models verify`` checks them all.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..errors import UserError
from ..files import sha256_of

FIX = "delete it to download it again, or run `artgen models verify --accept` to keep it"


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


@contextmanager
def download_lock(path: Path) -> Iterator[None]:
    """Held while ``path`` (a file in a model's folder of the cache) is checked for and downloaded: one process
    downloads, the others wait for it. The lock files live apart, in the cache's ``.locks`` folder, so a model's
    folder holds only its files."""
    lock = path.parent.parent / ".locks" / f"{path.parent.name}.{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        yield


def recorded(path: Path) -> str | None:
    record = record_path(path)
    return record.read_text().strip() if record.is_file() else None


def record(path: Path, digest: str) -> None:
    """Write ``path``'s hash beside it, whole or not at all (a crash leaves no half record)."""
    target = record_path(path)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_text(digest + "\n")
    os.replace(partial, target)


def check(path: Path, published: str | None, label: str) -> None:
    """Refuse ``path`` when its sha256 differs from the one recorded beside it (else the published one); record
    it when there is none yet."""
    if status(path, published, accept=False) == "changed":
        raise UserError(f"{label}: the cached file {path} has changed since it was first used (its sha256 differs): "
                        f"{FIX}")


def status(path: Path, published: str | None, accept: bool) -> str:
    """One cached file's state, ``artgen models verify``'s word for it: ok, recorded (no hash known: written now),
    changed, or accepted (changed, and its new hash recorded because ``accept``). A matching file without a record
    of its own gets one."""
    digest, own = sha256_of(path), recorded(path)
    expected = own or published
    if expected is None:
        record(path, digest)
        return "recorded"
    if digest == expected:
        if own is None:
            record(path, digest)
        return "ok"
    if accept:
        record(path, digest)
        return "accepted"
    return "changed"
