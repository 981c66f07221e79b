"""A DICOM node the scanner pushes its images to: :class:`DicomNode`, a :class:`VolumeSource`.

Scanners send images to a DICOM node as they are reconstructed (a Storage
SCP, C-STORE over DICOM networking), which is how many sites get real-time
data off the scanner without a shared folder. The node (pynetdicom) accepts
associations that call its AE title, stores each object it receives in
``store`` under its SOP Instance UID (written whole, then renamed into
place: the session's record and any replay read these files), and passes
each part to the same :class:`~scanner_bridge.assembly.VolumeAssembly` the
folder watcher uses. So the guarantees are the watcher's: whole volumes only
(single slices wait for the rest of their volume, mosaics and enhanced
multi-frame objects are whole already), each under its series and index,
duplicates and geometry changes reported, every series announced.

An object that cannot be stored (a full disk) is answered with "out of
resources" (0xA700) so the scanner knows it was not taken; one stored but
not readable as a volume (a report, a localizer's secondary capture) is
answered with success and reported.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event

from db.base import EventLevel, write_atomic
from scanner_bridge.assembly import VolumeAssembly
from scanner_bridge.config import DEFAULT_AE_TITLE, DEFAULT_PORT, WatchConfig
from scanner_bridge.errors import BridgeError, VolumeReadError
from scanner_bridge.readers import FilePart, read_part
from scanner_bridge.source import BridgeEvent, EventCode, EventSink, log_event
from scanner_bridge.volume import Volume

__all__ = ["DEFAULT_AE_TITLE", "DEFAULT_PORT", "DicomNode"]

logger = logging.getLogger(__name__)

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_TICK_S = 0.1  # how often slices are checked against their deadline while nothing comes


class DicomNode:
    """Yields each complete volume pushed to this DICOM node, once.

    Parameters
    ----------
    store : path
        Where received objects are written, one file each (made, mode 0700).
    port : int
        The TCP port to listen on (0: any free one; :attr:`port` says which).
    ae_title : str
        The node's AE title; associations calling another title are rejected.
    host : str
        The address to listen on ("" for every interface).
    config : WatchConfig
        The one series to follow (default: every series), slices per volume
        where the objects do not say, the slice deadline.
    on_event : callable
        Receives a :class:`BridgeEvent` for every object refused, ignored or inconsistent.
    """

    def __init__(
        self,
        store: Path | str,
        *,
        port: int = DEFAULT_PORT,
        ae_title: str = DEFAULT_AE_TITLE,
        host: str = "",
        config: WatchConfig | None = None,
        on_event: EventSink = log_event,
    ) -> None:
        if not 0 < len(ae_title) <= 16 or not ae_title.isascii() or "\\" in ae_title:
            raise BridgeError(f"AE title {ae_title!r} must be 1 to 16 ASCII characters without a backslash")
        self.store = Path(store)
        try:
            self.store.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise BridgeError(f"cannot make the store folder {self.store}: {exc.strerror or exc}") from None
        self.config = config or WatchConfig()
        self.ae_title = ae_title
        self._on_event = on_event
        self._inbox: queue.SimpleQueue[tuple[FilePart, float, float] | None] = queue.SimpleQueue()
        self._ready: collections.deque[Volume] = collections.deque()
        self._closed = threading.Event()
        self._assembly = VolumeAssembly(self.config, self._emit, where=f"DICOM node {ae_title}")
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = StoragePresentationContexts
        ae.require_called_aet = True
        ae.maximum_pdu_size = 0  # no limit: a mosaic or a multi-frame volume comes in fewer PDUs
        self._ae = ae
        try:
            server = ae.start_server(
                (host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
            )
        except OSError as exc:
            raise BridgeError(
                f"the DICOM node cannot listen on port {port}: {exc.strerror or exc}; is another node "
                "running there? Choose another --port (and tell the scanner)"
            ) from None
        assert server is not None  # not blocking: the server is returned
        self._server = server
        self.port: int = server.server_address[1]

    # The VolumeSource interface.
    def __iter__(self) -> Iterator[Volume]:
        while True:
            while self._ready:
                yield self._ready.popleft()
            if self._closed.is_set():
                return
            try:
                item = self._inbox.get(timeout=_TICK_S)
            except queue.Empty:
                item = None
            while item is not None:
                self._take(*item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
            self._assembly.give_up_on_slices(time.monotonic())

    def close(self) -> None:
        """Stop listening (associations in progress end); idempotent, from any thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._inbox.put(None)
            self._server.shutdown()

    def __enter__(self) -> DicomNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # In the iterating thread: the assembly is this thread's alone.
    def _take(self, part: FilePart, seen: float, written: float) -> None:
        try:
            if not self._assembly.begin(part):
                return
            volume = self._assembly.add(part, seen=seen, written=written)
        except (BridgeError, ValueError) as exc:  # a volume its own checks refuse (a NaN affine...)
            self._emit(
                EventLevel.ERROR, EventCode.UNREADABLE, f"{part.path}: {exc}; not passed on", path=part.path
            )
            return
        if volume is not None:
            self._ready.append(volume)

    # In pynetdicom's association threads.
    def _on_store(self, event: Event) -> int:
        seen = time.time()
        raw = event.encoded_dataset()
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        if not (_UID.fullmatch(uid) and len(uid) <= 64):
            self._emit(
                EventLevel.ERROR,
                EventCode.UNREADABLE,
                f"an object from {_peer(event)} has no valid SOP Instance UID ({uid!r:.70}); refused",
            )
            return CANNOT_UNDERSTAND
        path = self.store / f"{uid}.dcm"
        try:
            write_atomic(path, raw, mode=0o600, sync=False)
        except OSError as exc:
            self._emit(
                EventLevel.ERROR,
                EventCode.SOURCE_ERROR,
                f"cannot store {path}: {exc.strerror or exc}; the scanner was told it was not taken "
                "(free space, then have the scanner send it again)",
                path=str(path),
            )
            return OUT_OF_RESOURCES
        try:
            part = read_part(path, raw, slices_per_volume=self.config.slices_per_volume)
        except VolumeReadError as exc:
            self._emit(
                EventLevel.WARNING, EventCode.UNREADABLE, f"{exc}; stored, not passed on", path=str(path)
            )
            return SUCCESS
        self._inbox.put((part, seen, os.stat(path).st_mtime))
        return SUCCESS

    def _emit(
        self, level: EventLevel, code: EventCode, message: str, *, path: str = "", index: int | None = None
    ) -> None:
        self._on_event(BridgeEvent(level=level, code=code, message=message, path=path, index=index))


def _peer(event: Event) -> str:
    requestor: Any = event.assoc.requestor
    return f"{requestor.ae_title} at {requestor.address}"
