"""Watching the scanner's export directory: :class:`DirectoryWatcher`, a :class:`VolumeSource`.

Files are picked up when they are complete: inotify's close-after-write and
rename-into-place events (``on_created`` fires before the writer is done),
read in the watcher's own thread on Linux (:class:`_KernelEvents`) and
through watchdog's observer elsewhere, a
periodic rescan that catches anything an event missed, or, for network shares
where no event ever comes, polling alone. Whatever the trigger, a file counts
as ready only when it parses completely; one that does not is retried until
``incomplete_timeout_s`` and then reported, never passed on half-read.

The watcher serves a whole session: every series that begins while it runs
(localizers, runs, a run started again) is passed on, each volume under its
own series and index, and each series is announced when its first volume is
read (:attr:`EventCode.SERIES_STARTED`). Files that were in the folder
before the watcher started belong to earlier series and are not read, unless
their series goes on (a bridge restarted mid-run reads the run's files
again) or a receiver asks for it by name (:meth:`DirectoryWatcher.want`).
With ``series`` configured, the watcher follows that series alone and
reports files of others once per series.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import queue
import select
import stat
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from watchdog.events import DirMovedEvent, FileClosedEvent, FileMovedEvent, FileSystemEventHandler
from watchdog.observers import Observer

from db.base import EventLevel
from scanner_bridge.assembly import VolumeAssembly
from scanner_bridge.config import WatchConfig
from scanner_bridge.errors import BridgeError, IncompleteVolumeError, VolumeReadError
from scanner_bridge.readers import (
    NIFTI_SUFFIXES,
    FilePart,
    is_volume_file,
    nifti_series_and_number,
    read_part,
)
from scanner_bridge.series import series_matches
from scanner_bridge.source import BridgeEvent, EventCode, EventSink, log_event
from scanner_bridge.volume import Volume

__all__ = ["DirectoryWatcher"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Want:
    series: str


# The watcher's inbox: a file to consider (path, when seen), a series a receiver asks for, or the end.
_Item = tuple[str, float] | _Want | None


class _KernelEvents:
    """inotify read in the watcher's own thread: close-after-write and renames into the folder (Linux).

    watchdog's observer hands each event across three threads before the watcher sees it: a
    millisecond at the median and several at the 99th percentile on a busy two-core machine
    (benchmarks/bridge_latency.py). Here the watcher waits on the inotify descriptor itself, and on
    a pipe that :meth:`wake` writes to when something else needs it (a series asked for, the end).
    """

    def __init__(self, directory: Path) -> None:
        from inotify_simple import INotify, flags  # Linux only; imported where it is used

        self._inotify = INotify()
        try:
            self._inotify.add_watch(directory, flags.CLOSE_WRITE | flags.MOVED_TO)
        except OSError:
            self._inotify.close()
            raise
        self._overflow = flags.Q_OVERFLOW
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()  # a wake-up never writes to a descriptor closed (and reused) since
        # Released when closed, or when collected (a watcher closed without being iterated to its end).
        self._release = weakref.finalize(self, _release, self._inotify, self._wake_r, self._wake_w)

    def wait(self, timeout_s: float) -> tuple[list[str], bool]:
        """Names closed or moved into the folder within ``timeout_s``, and whether the kernel dropped some."""
        ready, _, _ = select.select([self._inotify.fileno(), self._wake_r], [], [], timeout_s)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 4096)
        if self._inotify.fileno() not in ready:
            return [], False
        events = self._inotify.read(timeout=0)
        return [e.name for e in events if e.name], any(e.mask & self._overflow for e in events)

    def wake(self) -> None:
        with self._lock:
            if self._release.alive:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                    os.write(self._wake_w, b"!")

    def close(self) -> None:
        with self._lock:
            self._release()  # once; later calls do nothing


def _release(inotify: Any, *descriptors: int) -> None:
    inotify.close()
    for fd in descriptors:
        os.close(fd)


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: queue.SimpleQueue[_Item]) -> None:
        self._inbox = inbox

    def on_closed(self, event: FileClosedEvent) -> None:
        self._inbox.put((os.fsdecode(event.src_path), time.time()))

    def on_moved(self, event: DirMovedEvent | FileMovedEvent) -> None:
        if not event.is_directory:
            self._inbox.put((os.fsdecode(event.dest_path), time.time()))


def _name_hints(path: str) -> set[str] | None:
    """The series a file's name may belong to, without opening it (None: the name does not say).

    NIfTI names are their series. DICOM names of numbers joined by ``_`` may carry the series number
    first (``005_000017_001.dcm``: series, acquisition, slice) or second (a Siemens real-time export,
    ``001_000005_000017.dcm``: session, series, acquisition); either is taken, and the header decides.
    """
    name = os.path.basename(path)
    if name.lower().endswith(NIFTI_SUFFIXES):
        return {nifti_series_and_number(name)[0]}
    stem, dot, suffix = name.rpartition(".")
    fields = stem.split("_") if dot and suffix.lower() == "dcm" else []
    if len(fields) >= 2 and all(f.isdigit() for f in fields):
        return {str(int(f)) for f in fields[:2]}
    return None


@dataclasses.dataclass
class _Pending:
    seen: float  # wall clock, when first noticed
    first_try: float  # monotonic
    next_try: float  # monotonic
    error: str = ""


class DirectoryWatcher:
    """Yields each complete volume written into ``directory``, once.

    Parameters
    ----------
    directory : path
        The scanner's real-time export directory.
    config : WatchConfig
        Polling or events, deadlines, the one series to follow (default:
        every series that begins), index numbering.
    on_event : callable
        Receives a :class:`BridgeEvent` for every file given up on, ignored or
        inconsistent (default: log it).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        config: WatchConfig | None = None,
        on_event: EventSink = log_event,
    ) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise BridgeError(
                f"export directory {self.directory} does not exist or is not a directory; "
                "create it, or check the path (is the share mounted?)"
            )
        self.config = config or WatchConfig()
        self._on_event = on_event
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._done: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) when handled
        self._pending: dict[str, _Pending] = {}
        self._assembly = VolumeAssembly(self.config, self._emit, where=str(self.directory))
        self._follow = self.config.series  # None: every series that begins
        self._before: dict[str, list[str]] = collections.defaultdict(list)  # earlier series' files, by series
        self._asked: set[str] = set()  # series receivers asked for by name
        self._ready: collections.deque[Volume] = collections.deque()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._kernel: _KernelEvents | None = None
        # Files present at start: read when their series goes on, or is asked for, or is the one to follow.
        self._deferred = sorted(self._listing())
        if self._follow is not None:
            self._undefer(time.time(), self._follow)
        if self._deferred:
            self._emit(
                EventLevel.INFO,
                EventCode.OTHER_SERIES,
                f"{len(self._deferred)} volume file(s) were in {self.directory} before the bridge started; "
                "their series are served only if they go on, or when a receiver asks for one by name",
            )
        if not self.config.polling:
            self._start_observer()
        self._next_scan = time.monotonic() + self._scan_interval()

    def _start_observer(self) -> None:
        if sys.platform == "linux":
            try:
                self._kernel = _KernelEvents(self.directory)
                return
            except (ImportError, OSError) as exc:  # e.g. the inotify watch limit: watchdog says it again
                logger.debug("reading inotify directly failed (%s); through watchdog", exc)
        observer = Observer()
        observer.schedule(_Handler(self._inbox), str(self.directory), recursive=False)
        try:
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit
            self._emit(
                EventLevel.WARNING,
                EventCode.SOURCE_ERROR,
                f"cannot watch {self.directory} for events ({exc}); polling every "
                f"{self.config.poll_interval_s:g} s instead",
            )
            self.config = dataclasses.replace(self.config, polling=True)
            return
        self._observer = observer

    def _scan_interval(self) -> float:
        return self.config.poll_interval_s if self.config.polling else self.config.rescan_interval_s

    # The VolumeSource interface.
    def __iter__(self) -> Iterator[Volume]:
        while True:
            while self._ready:
                yield self._ready.popleft()
            if self._closed.is_set():
                if self._kernel is not None:
                    self._kernel.close()
                return
            self._step()

    def want(self, series: str) -> None:
        """A receiver asks for ``series`` by name: pass on its files present at start too (any thread)."""
        self._inbox.put(_Want(series))
        if self._kernel is not None:
            self._kernel.wake()

    def close(self) -> None:
        self._closed.set()
        self._inbox.put(None)
        if self._kernel is not None:
            self._kernel.wake()  # its descriptors are closed by the iterating thread, or when collected
        with self._close_lock:  # close() may come from a signal handler and a finally at once
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(timeout=5)

    def __enter__(self) -> DirectoryWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # One turn: wait for an event or the next timer, then handle what is due.
    def _step(self) -> None:
        now = time.monotonic()
        timers = [self._next_scan, *(p.next_try for p in self._pending.values())]
        timeout_s = max(0.0, min(timers) - now)
        item: _Item = None
        if self._kernel is not None:
            names, dropped = self._kernel.wait(timeout_s)
            seen = time.time()
            for name in names:
                self._consider(os.path.join(self.directory, name), seen)
            if dropped:  # the kernel's queue overflowed: a scan finds what its events would have said
                self._next_scan = time.monotonic()
            with contextlib.suppress(queue.Empty):
                item = self._inbox.get_nowait()
        else:
            with contextlib.suppress(queue.Empty):
                item = self._inbox.get(timeout=timeout_s)
        while item is not None:
            if isinstance(item, _Want):
                self._take_up(item.series)
            else:
                self._consider(*item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        now = time.monotonic()
        if now >= self._next_scan:
            self._scan()
            self._next_scan = time.monotonic() + self._scan_interval()
        for path, pending in list(self._pending.items()):
            if now >= pending.next_try:
                self._consider(path, pending.seen)
        self._assembly.give_up_on_slices(now)

    def _listing(self) -> dict[str, tuple[int, int]]:
        """Volume files in the directory and their (size, mtime_ns)."""
        try:
            listing = {}
            for entry in os.scandir(self.directory):
                if is_volume_file(entry.name) and not entry.is_dir(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)  # a link, a FIFO: listed, then refused by name
                    listing[entry.path] = (st.st_size, st.st_mtime_ns)
            return listing
        except OSError as exc:
            self._emit(EventLevel.ERROR, EventCode.SOURCE_ERROR, f"cannot list {self.directory}: {exc}")
            return {}

    def _scan(self) -> None:
        # A run leaves hundreds of files behind; only new or changed ones are opened.
        seen = time.time()
        deferred = set(self._deferred)
        for path, signature in sorted(self._listing().items()):
            if path not in self._pending and path not in deferred and self._done.get(path) != signature:
                self._consider(path, seen)

    def _undefer(self, seen: float, series: str) -> None:
        """Read the files present at start that may belong to ``series`` (by name, where the name says)."""
        maybe = [p for p in self._deferred if (hints := _name_hints(p)) is None
                 or any(series_matches(h, series) or series_matches(series, h) for h in hints)]  # fmt: skip
        if maybe:
            taken = set(maybe)
            self._deferred = [p for p in self._deferred if p not in taken]
            for path in maybe:
                self._consider(path, seen, at_start=True)

    def _take_up(self, series: str) -> None:
        """Pass on an earlier series a receiver asks for by name (a resumed run whose bridge restarted)."""
        if self._assembly.has(series) or (
            self._follow is not None and not series_matches(self._follow, series)
        ):
            return
        self._asked.add(series)
        self._read_earlier(series)

    def _read_earlier(self, series: str) -> None:
        """Read the files of ``series`` that were here at start: unread ones, and those kept back."""
        seen = time.time()
        self._undefer(seen, series)
        for name in [s for s in self._before if series_matches(series, s)]:
            for path in self._before.pop(name):
                self._done.pop(path, None)  # done when kept back, so that no rescan read it again
                self._consider(path, seen, at_start=True)

    # One file.
    def _consider(self, path: str, seen: float, *, at_start: bool = False) -> None:
        if not is_volume_file(path) or Path(path).parent != self.directory:
            return
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            self._pending.pop(path, None)
            return
        except OSError as exc:
            self._refuse(path, "is a symbolic link; links are not followed" if exc.errno == errno.ELOOP
                         else f"cannot be opened ({exc.strerror or exc})")  # fmt: skip
            return
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            signature = (st.st_size, st.st_mtime_ns)
            if self._done.get(path) == signature:
                return
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the watcher, a device never end
                self._refuse(path, f"is not a regular file ({stat.filemode(st.st_mode)})", signature)
                return
            if st.st_size > self.config.max_file_bytes:
                self._refuse(
                    path,
                    f"has {st.st_size} bytes, more than a volume file may ({self.config.max_file_bytes})",
                    signature,
                )
                return
            try:
                raw = f.read(st.st_size + 1)  # one more: a file still growing shows as changed below
                after = os.fstat(f.fileno())
            except OSError as exc:
                raw, after = b"", None
                error: VolumeReadError | None = VolumeReadError(f"cannot read {path}: {exc}")
            else:
                error = None
        if error is None and (
            after is None or (after.st_size, after.st_mtime_ns) != signature or len(raw) != st.st_size
        ):
            error = IncompleteVolumeError(f"{path} changed while it was read (still being written)")
        now = time.monotonic()
        pending = self._pending.get(path) or _Pending(seen=seen, first_try=now, next_try=now)
        try:
            if error is not None:
                raise error
            part = read_part(path, raw, slices_per_volume=self.config.slices_per_volume)
        except VolumeReadError as exc:
            pending.error = str(exc)
            if now - pending.first_try >= self.config.incomplete_timeout_s:
                self._pending.pop(path, None)
                self._done[path] = signature
                self._emit(
                    EventLevel.ERROR,
                    EventCode.UNREADABLE,
                    f"gave up on {path} after {self.config.incomplete_timeout_s:g} s: {exc}",
                    path=path,
                )
            else:
                pending.next_try = now + self.config.retry_interval_s
                self._pending[path] = pending
            return
        self._pending.pop(path, None)
        self._done[path] = signature
        try:
            self._handle(part, seen=pending.seen, written=st.st_mtime, at_start=at_start)
        except (BridgeError, ValueError) as exc:  # a volume its own checks refuse (a NaN affine...)
            self._emit(EventLevel.ERROR, EventCode.UNREADABLE, f"{path}: {exc}; not passed on", path=path)

    def _refuse(self, path: str, why: str, signature: tuple[int, int] | None = None) -> None:
        """Report at once, and never retry, a file that cannot be a volume whatever comes next."""
        self._pending.pop(path, None)
        if signature is None:
            try:
                st = os.lstat(path)
                signature = (st.st_size, st.st_mtime_ns)
            except OSError:
                signature = (-1, -1)
        if self._done.get(path) == signature:
            return  # reported already
        self._done[path] = signature
        self._emit(EventLevel.ERROR, EventCode.UNREADABLE, f"{path} {why}; not read", path=path)

    def _handle(self, part: FilePart, *, seen: float, written: float, at_start: bool = False) -> None:
        if not self._assembly.has(part.series):
            if (
                at_start
                and self._follow is None
                and not any(series_matches(a, part.series) for a in self._asked)
            ):
                self._before[part.series].append(part.path)  # an earlier series: kept back, unless it goes on
                return  # and its file stays done (no rescan reads it again) until its series is asked for
            if not self._assembly.begin(part):
                return
            self._read_earlier(part.series)  # a bridge restarted mid-run: the run's earlier files
        volume = self._assembly.add(part, seen=seen, written=written)
        if volume is not None:
            self._ready.append(volume)

    def _emit(
        self, level: EventLevel, code: EventCode, message: str, *, path: str = "", index: int | None = None
    ) -> None:
        self._on_event(BridgeEvent(level=level, code=code, message=message, path=path, index=index))
