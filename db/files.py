"""Files written whole or not at all.

Every artifact a session relies on (model files, stimuli, exported tables)
goes through :func:`write_atomic`: a temporary file in the same folder,
flushed to disk, then renamed into place. A crash or a full disk leaves the
previous file, never half of a new one. ``db`` sits at the bottom of the
dependency graph, so every package can use it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably; on failure nothing at ``path`` changes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
