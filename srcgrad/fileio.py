"""Atomic file writes, shared by the code cache, the dataset downloader and checkpoints.

A reader (another process, or a crash part-way through) sees the old file or the complete new
one, never a torn write: the data goes to a temporary file in the same directory, is flushed to
disk, and replaces the target with one ``os.replace``.
"""
import os
import tempfile
from pathlib import Path


def write_atomic(path, write, mode="wb"):
    """Create ``path`` by calling ``write(handle)`` on a temporary file, then renaming it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
