"""Checks on the files a user names, before any reader opens them.

Readers of presets, configs, checkpoints and videos each failed in their own way when handed a folder, a
device, a named pipe or an unreadable file: "does not exist", a hang on a fifo, or a library's message about
something else. ``readable_file`` says in one line what is wrong with the path itself, so every reader can
assume a regular file it may open.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from .errors import UserError

_KINDS = ((stat.S_ISDIR, "a folder, not a file: give the file inside it"),
          (stat.S_ISCHR, "a character device, not a file"),
          (stat.S_ISBLK, "a block device, not a file"),
          (stat.S_ISFIFO, "a named pipe (fifo), not a file: artgen reads regular files only"),
          (stat.S_ISSOCK, "a socket, not a file"))


def readable_file(path: str | Path, what: str, fix: str = "check the path",
                  error: type[UserError] = UserError) -> Path:
    """``path`` as a Path when it names a regular file this process may read; else ``error`` with one line.

    ``what`` names the file in the message ("VQGAN config"), ``fix`` ends the line when the file is missing.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist: {fix}") from None
    except NotADirectoryError:
        raise error(f"{what} {path} does not exist: a part of its path is a file, not a folder; {fix}") from None
    except OSError as problem:
        raise error(f"{what} {path} cannot be reached ({problem.strerror or problem}): {fix}") from None
    for test, description in _KINDS:
        if test(mode):
            raise error(f"{what} {path} is {description}")
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file: give a file")
    if not os.access(path, os.R_OK):
        raise error(f"{what} {path} is not readable (permission denied): fix its permissions or give a copy")
    return path


def sha256_of(path: str | Path) -> str:
    """The file's sha256 in hex, read in blocks (a checkpoint may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
