"""Files written whole or not at all, and durably: the one atomic write every process uses.

A file is written under a hidden temporary name in its own folder
(``.NAME.XXXXXXXXXXXX.partial``: watchers and globs skip it), flushed and
synced to disk, then renamed into place, and the folder is synced so that
the rename survives a power cut too. A crash, a kill or a full disk leaves
the previous file, never half of a new one.

:func:`prepare_atomic` does the first half and returns a
:class:`PendingFile` to put in place later (the simulated scanner prepares
a volume during its TR and renames it when the TR ends, as a scanner
does); :func:`write_atomic` does both at once. Files get the permissions
of a newly created file (``mode`` less the umask), not a temporary file's 0600.
``sync=False`` keeps the atomicity and skips the syncs, for files nothing
needs after a power cut (a simulated scanner's volumes, a rehearsed export).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

__all__ = ["PendingFile", "prepare_atomic", "read_regular", "write_atomic"]

Buffer = bytes | bytearray | memoryview


class PendingFile:
    """A file written in full under a temporary name beside ``path``, not yet in place."""

    def __init__(self, path: Path, temporary: Path, *, sync: bool = True) -> None:
        self.path, self.temporary, self.sync = path, temporary, sync

    def commit(self) -> Path:
        """Rename the file into place (atomically replacing what was there); return its path."""
        try:
            os.replace(self.temporary, self.path)
        except BaseException:
            self.discard()
            raise
        if self.sync:
            _sync_folder(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; the file in place (if any) is untouched."""
        self.temporary.unlink(missing_ok=True)


def prepare_atomic(path: Path | str, *parts: Buffer, mode: int = 0o666, sync: bool = True) -> PendingFile:
    """Write ``parts`` one after the other to a synced temporary file beside ``path``.

    Raises what the file system raised (a full disk: ``OSError``), after
    removing the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                out.write(part)
            out.flush()
            if sync:
                os.fsync(out.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return PendingFile(path, temporary, sync=sync)


def write_atomic(path: Path | str, *parts: Buffer, mode: int = 0o666, sync: bool = True) -> Path:
    """Write ``parts`` to ``path`` atomically and durably; on failure nothing at ``path`` changes."""
    return prepare_atomic(path, *parts, mode=mode, sync=sync).commit()


def read_regular(path: Path | str, *, max_bytes: int, follow_links: bool = True) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; ``OSError`` otherwise.

    A FIFO or a device is refused without blocking on it or reading it
    (either could never end), a larger file without reading it; with
    ``follow_links=False`` a symbolic link is refused too (``errno.ELOOP``).
    The error's ``strerror`` says why, for the caller's message.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise OSError(errno.ELOOP, "a symbolic link; links are not followed", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({stat.filemode(st.st_mode)})", str(path))
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than the {max_bytes} allowed", str(path))
        return f.read(st.st_size)  # not max_bytes: a buffer that size would be allocated first


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk; some file systems cannot sync a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
