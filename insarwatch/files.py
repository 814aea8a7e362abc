"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Owns the one way insarwatch replaces a file (reports, the dataset manifest, a model
version's index and metrics, synthetic frames): write under a hidden temporary name in the
same directory, then ``os.replace`` it onto the target. Hidden, so a watcher of the
directory ignores the partial file; same directory, so the rename is atomic (POSIX).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import stops

# What a plain open() gives under the usual umask 022: the daemon, a web server or another
# user may have to read what was written, and mkstemp alone would leave it owner-only.
READABLE = 0o644


@contextmanager
def replacing(path: str | Path, mode: int = READABLE) -> Iterator[Path]:
    """A temporary path to write in full; moved onto ``path`` if the block succeeds, removed if not."""
    path = Path(path)
    stops.point("before write", path.parent.name)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str, mode: int = READABLE) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    with replacing(path, mode) as temporary:
        temporary.write_text(text, encoding="utf-8")
