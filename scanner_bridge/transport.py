"""Delivery over ZeroMQ: the bridge's publisher (with its on-disk spool) and the consumer's receiver.

The bridge binds a ROUTER socket; each receiver connects a DEALER and says
hello (signed) with the series it wants and the next index it needs, then
again every heartbeat with the indices it lacks. The bridge answers every
hello with its status, which lists the session's series (a
:class:`~scanner_bridge.series.SeriesInfo` each), and sends it again to
every subscriber when a series begins; a receiver picks its run's series
from that list (:class:`~scanner_bridge.series.SeriesChoice`) and names it
in its next hello. The bridge sends a subscriber every spooled volume of its
series from the index it asked for, each new volume of that series, and
what it lacks. So a receiver that restarts, or a bridge that restarts (the
spool is on disk), loses nothing, and no series is mixed into another's run.

Both sides are :mod:`db.base.channel`'s: the publisher is a
:class:`~db.base.channel.RouterService`, the receiver a
:class:`~db.base.channel.DealerSocket`, and their :class:`~db.base.channel.WireSession`
refuses a recorded message replayed later, or one sent to another receiver.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
import queue
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from db.base import (
    Clock,
    DealerSocket,
    EventLevel,
    Message,
    MessageType,
    ProtocolError,
    RejectReason,
    RouterService,
    VolumeStatus,
    WallClock,
    WireSession,
    write_atomic,
)
from db.base.wire import Frame, buffer_digests
from scanner_bridge.config import PublisherConfig, ReceiverConfig
from scanner_bridge.errors import ReceiveTimeoutError, SpoolError
from scanner_bridge.series import MAX_NAME, MAX_SERIES_ANNOUNCED, SeriesChoice, SeriesInfo, series_matches
from scanner_bridge.source import BridgeEvent, EventCode, EventSink, log_event
from scanner_bridge.volume import MAX_INDEX, Volume

__all__ = [
    "Arrival",
    "ReceiverStats",
    "Spool",
    "VolumePublisher",
    "VolumeReceiver",
    "default_spool_dir",
    "private_folder",
]

logger = logging.getLogger(__name__)

MAX_HELLO_BYTES = 64 * 1024
MAX_WANTED = 256  # indices one hello may ask for


# --- the spool -------------------------------------------------------------------------------------


# How long after a volume goes out the spool writes it (volumes come a TR apart: 0.3 s or more).
SPOOL_AFTER_S = 0.005


class Spool:
    """One bridge run's validated volumes on disk, one file per index, for serving any index later.

    The spool belongs to one bridge run and one user: each :class:`Spool`
    makes a folder of its own (``run-XXXXXXXX``, mode 0700) inside ``root``,
    which must be a real folder (not a symbolic link) of this user that
    nobody else can write (:func:`private_folder`), so nobody else can plant
    a volume in it or turn a file into a link to one of the user's. A
    restarted bridge starts a new spool (its watcher reads the run's files
    again); so a run never serves an earlier run's volumes, even under the
    same file names. Each series gets a subfolder. Each file holds a 4-byte
    big-endian length, the volume's wire content (JSON) and its raw voxels;
    each is written whole to a temporary file and renamed into place
    (:func:`db.base.write_atomic`), so no entry is ever read half-written. It
    is not synced to the disk: the spool lives as long as its bridge run, and
    a restarted bridge never reads it. :meth:`close` removes the run's folder.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = private_folder(Path(root))
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root))

    def _folder(self, series: str) -> Path:
        return self.run_dir / hashlib.sha256(series.encode()).hexdigest()[:16]

    def _path(self, series: str, index: int) -> Path:
        return self._folder(series) / f"{index:05d}.vol"

    def put(self, volume: Volume) -> None:
        folder = self._folder(volume.series)
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            write_atomic(folder / "series.txt", (volume.series + "\n").encode(), mode=0o600, sync=False)
        content, buffers = volume.to_wire()
        content_b = json.dumps(content).encode()
        header = len(content_b).to_bytes(4, "big")
        path = self._path(volume.series, volume.index)
        write_atomic(path, header, content_b, buffers[0], mode=0o600, sync=False)

    def indices(self, series: str) -> list[int]:
        """The indices of ``series`` spooled so far."""
        folder = self._folder(series)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.vol") if p.stem.isdigit())

    def get(self, series: str, index: int) -> Volume:
        """The spooled volume ``index`` of ``series``; ``OSError`` or ``ValueError`` if it cannot be read."""
        path = self._path(series, index)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        n = int.from_bytes(raw[:4], "big")
        message = Message(MessageType.VOLUME, {}, json.loads(raw[4 : 4 + n]), [memoryview(raw)[4 + n :]])
        try:
            return Volume.from_wire(message)
        except ProtocolError as exc:
            raise ValueError(f"spool entry {path}: {exc}") from exc

    def close(self) -> None:
        """Remove this run's folder (what a receiver still lacks is then gone)."""
        shutil.rmtree(self.run_dir, ignore_errors=True)


def private_folder(path: Path) -> Path:
    """``path`` as a folder only this user can write, made (mode 0700) if absent; :class:`SpoolError` if not.

    Refused: a symbolic link, something not a folder, a folder of another
    user, a folder that its group or others can write, or one inside a folder
    that anyone can write without the sticky bit (they could swap it for another).
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as exc:
        raise SpoolError(
            f"spool folder {path} cannot be made: {exc.strerror or exc}; choose another --spool"
        ) from None
    what = None
    if stat.S_ISLNK(st.st_mode):
        what = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        what = "is not a folder"
    elif hasattr(os, "getuid") and st.st_uid != os.getuid():
        what = f"belongs to another user (uid {st.st_uid})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        what = f"can be written by others (mode {stat.S_IMODE(st.st_mode):04o}; `chmod 700 {path}`)"
    else:
        for parent in path.resolve().parents:
            mode = parent.stat().st_mode
            if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
                what = f"is inside {parent}, which anyone can write"
                break
    if what is not None:
        raise SpoolError(
            f"spool folder {path} {what}: another user could plant volumes there; "
            "choose a folder of your own with --spool"
        )
    return path


def default_spool_dir() -> Path:
    """Where spools go by default: the user's cache folder, not the world-writable temporary one."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cortexloop" / "spool"


# --- the publisher (bridge side) -------------------------------------------------------------------


def _source_changed(volume: Volume) -> str | None:
    """How the file ``volume`` was read from has changed since (None: unchanged, or no file to check)."""
    written = volume.stamps.get("written")
    if not volume.source or written is None:
        return None
    try:
        mtime = os.stat(volume.source).st_mtime
    except FileNotFoundError:
        return "is gone"
    except OSError:
        return None  # unreadable now (a share gone): not evidence of a change
    return None if mtime == written else "was written again"


@dataclasses.dataclass
class _Subscriber:
    nonce: str
    last_heard: float
    series: str | None = None  # the series it asked for; none yet: statuses and events only
    sent_at: dict[int, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Held:
    """A series the bridge serves: what it announces of it, and the indices it can send."""

    info: SeriesInfo
    indices: set[int] = dataclasses.field(default_factory=set)

    def announced(self) -> dict[str, Any]:
        info = dataclasses.replace(self.info, highest_index=max(list(self.indices), default=None))
        return info.to_wire()


class VolumePublisher(RouterService):
    """Serves volumes to receivers from a thread of its own.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://*:5555``, ``tcp://127.0.0.1:0`` (any free port), ``ipc:///tmp/x``.
    key : bytes
        The shared signing key.
    spool : Spool
        Where validated volumes are kept for resending.
    on_wanted : callable, optional
        Called (from the publisher's thread) with a series a subscriber asks
        for that the bridge does not hold: a restarted bridge's watcher then
        reads that series' files again (:meth:`DirectoryWatcher.want`).
    """

    def __init__(
        self,
        endpoint: str,
        key: bytes,
        spool: Spool,
        *,
        config: PublisherConfig | None = None,
        on_wanted: Callable[[str], None] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config or PublisherConfig()
        self.spool = spool
        self.on_wanted = on_wanted
        self._subscribers: dict[bytes, _Subscriber] = {}
        self._held: dict[str, _Held] = {}  # every series served, in the order they began
        session = WireSession(
            key,
            takes={MessageType.HELLO},
            max_message_bytes=MAX_HELLO_BYTES,
            name="the bridge",
            limit_rate=True,
        )
        super().__init__(endpoint, session, role="bridge", send_hwm=10_000, context=context)
        # Disk writes go through a thread of their own: a stalled disk must not delay delivery.
        self._unspooled: dict[tuple[str, int], Volume] = {}
        self._spool_queue: queue.SimpleQueue[tuple[float, Volume] | None] = queue.SimpleQueue()
        self._spooler = threading.Thread(target=self._spool_forever, name="cortexloop-spooler", daemon=True)
        self._spooler.start()
        self._start()

    # Called from the producer's thread.
    def publish(self, item: Volume | BridgeEvent) -> None:
        """Send a volume (stamped ``sent``) or an event to every subscriber; volumes are also spooled."""
        self.post(item)

    def close(self) -> None:
        """Stop serving, finish spooling, then remove the spool (it is this run's alone); idempotent."""
        super().close()
        if self._spooler.is_alive():
            self._spool_queue.put(None)
            self._spooler.join(timeout=30)
        self.spool.close()

    def __enter__(self) -> VolumePublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def series(self) -> list[SeriesInfo]:
        """The series served so far, in the order they began (a snapshot; any thread)."""
        return [SeriesInfo.from_wire(held.announced()) for held in list(self._held.values())]

    # Everything below runs in the publisher's thread, which alone touches the socket.
    def _on_posted(self, item: object) -> None:
        assert isinstance(item, Volume | BridgeEvent)
        try:
            self._handle_item(item)
        except OSError as exc:  # a full disk must not stop delivery
            logger.error("could not prepare the spool: %s", exc)

    def _on_tick(self) -> None:
        self._expire_subscribers()

    def _on_gone(self, identity: bytes) -> None:
        self._subscribers.pop(identity, None)

    def _handle_item(self, item: Volume | BridgeEvent) -> None:
        if isinstance(item, BridgeEvent):
            for identity, sub in list(self._subscribers.items()):
                self.send(identity, MessageType.EVENT, item.to_wire(), to=sub.nonce)
            return
        held = self._held.get(item.series)
        began = held is None
        if held is None:
            held = self._held[item.series] = _Held(SeriesInfo.of(item))
        held.indices.add(item.index)
        content, buffers = item.to_wire()
        digests = buffer_digests(buffers)
        for identity, sub in list(self._subscribers.items()):
            if sub.series is not None and series_matches(sub.series, item.series):
                self._send_volume(identity, content, buffers, digests, item.index)
        self._unspooled[(item.series, item.index)] = item
        self._spool_queue.put((time.monotonic(), item))
        if began:  # announced: a receiver waiting for its run's series may take this one
            for identity, sub in list(self._subscribers.items()):
                self.send(identity, MessageType.STATUS, self._status(sub), to=sub.nonce)

    def _spool_forever(self) -> None:
        while (queued := self._spool_queue.get()) is not None:
            # Delivery first: while the volume crosses to its receivers, writing it out would take a
            # core from them (on 2 cores, the 99th percentile of delivery rose from 1.0 to 2.5 ms,
            # benchmarks/bridge_latency.py). Until written, it is served from memory.
            sent, volume = queued
            time.sleep(max(0.0, sent + SPOOL_AFTER_S - time.monotonic()))
            try:
                self.spool.put(volume)
            except OSError as exc:  # a full disk must not stop delivery; the volume stays in memory
                logger.error("could not spool volume %d: %s; it is kept in memory", volume.index, exc)
                continue
            self._unspooled.pop((volume.series, volume.index), None)

    def _send_volume(
        self,
        identity: bytes,
        content: dict[str, Any],
        buffers: list[Frame],
        digests: list[bytes],
        index: int,
    ) -> None:
        sub = self._subscribers.get(identity)
        if sub is None:
            return
        now = time.time()
        content = {**content, "stamps": {**content["stamps"], "sent": now}}
        if self.send(identity, MessageType.VOLUME, content, buffers, to=sub.nonce, digests=digests):
            sub.sent_at[index] = now

    def _send_from_spool(self, identity: bytes, series: str, index: int) -> None:
        try:
            volume = self._unspooled.get((series, index)) or self.spool.get(series, index)
        except (OSError, ValueError) as exc:
            logger.error("spooled volume %d cannot be read (%s); it cannot be resent", index, exc)
            return
        if (changed := _source_changed(volume)) is not None:
            self._held[series].indices.discard(index)
            self._handle_item(BridgeEvent(
                level=EventLevel.ERROR, code=EventCode.REWRITTEN, path=volume.source, index=index,
                message=f"volume {index}: its file {volume.source} {changed} since it was read; "
                "it is not served again (was the export folder reused or cleaned during the run?)",
            ))  # fmt: skip
            return
        content, buffers = volume.to_wire()
        self._send_volume(identity, content, buffers, buffer_digests(buffers), index)

    def _held_for(self, name: str | None) -> _Held | None:
        """The series ``name`` names (whole, or by number or UID), if held."""
        if name is None:
            return None
        held = self._held.get(name)
        return held or next((h for s, h in self._held.items() if series_matches(name, s)), None)

    def _status(self, sub: _Subscriber | None) -> dict[str, Any]:
        """The status a subscriber (None: a peer not joined) is sent: its series, and every series held.

        A peer not joined learns no more than the counts (the answer to an unproven hello stays small).
        """
        held = self._held_for(sub.series) if sub is not None else None
        status: dict[str, Any] = {
            "series": held.info.series if held is not None else (sub and sub.series) or "",
            "tr_s": held.info.tr_s if held is not None else None,
            "highest_index": max(held.indices, default=None) if held is not None else None,
            "subscribers": len(self._subscribers),
            "joined": sub is not None,
        }
        if sub is not None:
            status["catalog"] = [h.announced() for h in list(self._held.values())[-MAX_SERIES_ANNOUNCED:]]
        return status

    def _on_message(self, identity: bytes, message: Message) -> None:
        nonce, content = message.session, message.content
        if not message.addressed:  # the handshake's first half: the challenge (this bridge's nonce), no more
            self.send(identity, MessageType.STATUS, self._status(None), to=nonce)
            return
        next_index = content.get("next_index", 0)
        wanted = content.get("wanted", [])
        series = content.get("series")
        if not (isinstance(next_index, int) and next_index >= 0 and isinstance(wanted, list)):
            raise ProtocolError(RejectReason.MALFORMED, f"hello with next_index={next_index!r:.40}")
        if not (series is None or (isinstance(series, str) and 0 < len(series) <= MAX_NAME)):
            raise ProtocolError(RejectReason.MALFORMED, f"hello with series={series!r:.40}")
        now = time.time()
        sub = self._subscribers.get(identity)
        joined = sub is None or sub.nonce != nonce
        if joined:
            if len(self._subscribers) >= self.config.max_subscribers:
                logger.warning("refused a subscriber: already %d", len(self._subscribers))
                return
            sub = self._subscribers[identity] = _Subscriber(nonce=nonce, last_heard=now)
            logger.info("subscriber joined, wants volumes from %d", next_index)
        assert sub is not None
        sub.last_heard = now
        chose = False
        if series is not None and series != sub.series:
            chose, sub.series, sub.sent_at = True, series, {}
            if self._held_for(series) is None and self.on_wanted is not None:
                self.on_wanted(series)  # a series from before this bridge started: read its files again
        self.send(identity, MessageType.STATUS, self._status(sub), to=nonce)
        held = self._held_for(sub.series)
        if held is None:
            return
        if joined or chose:
            todo = sorted(i for i in held.indices if i >= next_index)
        else:
            todo = [
                i
                for i in wanted[:MAX_WANTED]
                if isinstance(i, int)
                and i in held.indices
                and now - sub.sent_at.get(i, 0.0) >= self.config.resend_interval_s
            ]
        for index in todo:
            self._send_from_spool(identity, held.info.series, index)

    def _expire_subscribers(self) -> None:
        now = time.time()
        for identity, sub in list(self._subscribers.items()):
            if now - sub.last_heard > self.config.subscriber_timeout_s:
                logger.info(
                    "subscriber %s silent for %.0f s; forgotten", identity.hex(), now - sub.last_heard
                )
                del self._subscribers[identity]


# --- the receiver (consumer side) ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One index of the run, delivered in order: a volume (``ok`` or ``late``) or a gap (``missing``)."""

    index: int
    status: VolumeStatus
    volume: Volume | None = None


@dataclasses.dataclass
class ReceiverStats:
    """What the receiver has seen so far."""

    received: int = 0  # volumes handed to the caller, late ones included
    late: int = 0
    missing: int = 0
    duplicates: int = 0
    rejected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    events: int = 0
    other_series: int = 0  # volumes of a series not this run's, dropped

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "late": self.late,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected),
            "events": self.events,
            "other_series": self.other_series,
        }


class VolumeReceiver:
    """Receives a run's volumes, those of one series, from a bridge and yields them in index order.

    Parameters
    ----------
    endpoint : str
        The bridge's endpoint, e.g. ``tcp://scanner-pc:5555``.
    key : bytes
        The shared signing key.
    start_index : int
        The first index wanted: 0 for a new run; after a restart, one past the
        last index recorded.
    clock : Clock
        Decides when a volume is overdue (a scaled clock for fast replays).
    on_event : callable
        Called with each :class:`BridgeEvent` the bridge reports (default: log it).
    choice : SeriesChoice or None
        Which of the bridge's series is the run's (default: the first it
        announces). None: none yet; :meth:`choose` gives it later, once the
        caller knows which series were there before the run (:attr:`catalog`).
    """

    def __init__(
        self,
        endpoint: str,
        key: bytes,
        *,
        start_index: int = 0,
        config: ReceiverConfig | None = None,
        clock: Clock | None = None,
        on_event: EventSink = log_event,
        choice: SeriesChoice | None = SeriesChoice(),  # noqa: B008 (frozen)
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config or ReceiverConfig()
        self._choice = choice
        self.series: str | None = None  # the run's series, once chosen
        self.catalog: list[SeriesInfo] = []  # the bridge's series, as its last status listed them
        self._joined = False  # a status of the bridge's, addressed to this receiver, has come
        self.clock = clock or WallClock()
        self._session = WireSession(
            key,
            takes={MessageType.STATUS, MessageType.EVENT, MessageType.VOLUME},
            max_message_bytes=self.config.max_message_bytes,
            name="the receiver",
        )
        self.stats = ReceiverStats(rejected=self._session.rejected)
        self._on_event = on_event
        self._next = start_index
        self._ahead: dict[int, Volume] = {}
        self._delivered: set[int] = set()
        self._declared_missing: set[int] = set()
        self._ready: collections.deque[Arrival] = collections.deque()
        self._ref: tuple[int, float] | None = None  # (index, clock time) of the last volume delivered on time
        self._sent_ref: tuple[int, float] | None = None  # (index, bridge's send time) of the last on time
        self._evidence_at: float | None = None  # when we first knew a later index than _next exists
        self._bridge_highest: int | None = None
        self._tr_s: float | None = None
        self._next_hello = 0.0
        self._bridge = ""  # the bridge's nonce, once its status has told it: what hellos are addressed to
        self._last_heard = time.monotonic()
        self._warned_silent = False
        self._socket = DealerSocket(endpoint, self._session, receive_hwm=0, context=context)
        self.endpoint = endpoint
        self._send_hello()

    @property
    def tr_s(self) -> float:
        return self._tr_s or self.config.default_tr_s

    @property
    def next_index(self) -> int:
        """The index the receiver will deliver next."""
        return self._next

    def wait_joined(self, timeout_s: float) -> list[SeriesInfo]:
        """Wait until the bridge has taken this receiver on; its series then. ReceiveTimeoutError if not."""
        deadline = time.monotonic() + timeout_s
        while not self._joined:
            now = time.monotonic()
            if now >= deadline:
                raise ReceiveTimeoutError(
                    f"no bridge answered at {self.endpoint} within {timeout_s:g} s; is `cortexloop bridge "
                    "watch` running there, with this key?"
                )
            if now >= self._next_hello:
                self._send_hello()
            if self._socket.wait_ms(int((min(self._next_hello, deadline) - now) * 1000) + 1):
                self._drain()
        return list(self.catalog)

    def choose(self, choice: SeriesChoice) -> None:
        """Take the run's series by ``choice`` from what the bridge announces (now, or when it begins)."""
        self._choice = choice
        self._pick()

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> VolumeReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Arrival]:
        while True:
            yield self.get()

    def get(self, timeout_s: float | None = None) -> Arrival:
        """The next arrival in index order; :class:`ReceiveTimeoutError` after ``timeout_s`` real seconds."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._ready:
            now_wall = time.monotonic()
            if deadline is not None and now_wall >= deadline:
                raise ReceiveTimeoutError(
                    f"no volume {self._next} from {self.endpoint} within {timeout_s:g} s "
                    f"({self.stats.received} received so far)"
                )
            if now_wall >= self._next_hello:
                self._send_hello()
            self._check_bridge_alive(now_wall)
            waits = [self._next_hello - now_wall]
            if deadline is not None:
                waits.append(deadline - now_wall)
            overdue_at = self._overdue_at()
            if overdue_at is not None:
                waits.append(self.clock.seconds_to_wall(overdue_at - self.clock.now()))
            if self._socket.wait_ms(max(0, int(min(waits) * 1000) + 1)):
                self._drain()
            self._advance()
        arrival = self._ready.popleft()
        if arrival.status is VolumeStatus.MISSING:
            self.stats.missing += 1
        else:
            self.stats.received += 1
            self.stats.late += arrival.status is VolumeStatus.LATE
        return arrival

    # Receiving.
    def _send_hello(self) -> None:
        content = {"next_index": self._next, "wanted": self._wanted(), "series": self.series}
        # Not connected yet: the next heartbeat. Unaddressed (before the bridge's status), it only
        # asks for the bridge's nonce; addressed, it joins and asks for volumes (docs/protocol.md).
        self._socket.send(MessageType.HELLO, content, to=self._bridge, block=False)
        self._next_hello = time.monotonic() + self.config.heartbeat_s

    def _wanted(self) -> list[int]:
        top = max([self._bridge_highest or -1, *self._ahead], default=-1)
        gaps = [i for i in range(self._next, min(top + 1, self._next + MAX_WANTED)) if i not in self._ahead]
        late = sorted(self._declared_missing)
        return (gaps + late)[:MAX_WANTED]

    def _check_bridge_alive(self, now_wall: float) -> None:
        silent = now_wall - self._last_heard
        if silent > self.config.bridge_silent_s and not self._warned_silent:
            logger.warning(
                "no word from the bridge at %s for %.0f s; is `cortexloop bridge watch` running there?",
                self.endpoint,
                silent,
            )
            self._warned_silent = True

    def _drain(self) -> None:
        while (message := self._socket.receive(0)) is not None:
            self._last_heard, self._warned_silent = time.monotonic(), False
            try:
                self._dispatch(message)
            except ProtocolError as exc:
                self._session.refuse(exc, self.endpoint)

    def _pick(self) -> None:
        choice = self._choice
        if choice is None or (self.series is not None and self.series != choice.name):
            return  # none yet, or taken from the bridge's announcements: the run's for good
        info = choice.pick(self.catalog)
        if info is not None and info.series != self.series:
            self.series = info.series
            logger.info("this run is series %s", info.describe())
        elif info is None and choice.name is not None and self.series is None and self._joined:
            # Not announced (a bridge restarted since the run began): asked for by name, which has it read.
            self.series = choice.name
            logger.info("asking the bridge at %s for series %s by name", self.endpoint, self.series)
        else:
            return
        self._send_hello()  # now the bridge sends its volumes

    def _dispatch(self, message: Message) -> None:
        if message.type is MessageType.STATUS and message.content.get("joined") is not True:
            self._bridge = message.session  # the bridge's challenge: hello again, addressed to it
            self._send_hello()
            return
        if message.type is MessageType.STATUS:
            self.catalog = SeriesInfo.catalog_from_wire(message.content.get("catalog"))
            self._joined = True
            self._pick()
            if self.series is None or message.content.get("series") != self.series:
                return  # a status from before the bridge took this receiver's series: no counts of it
            highest = message.content.get("highest_index")
            if isinstance(highest, int) and 0 <= highest <= MAX_INDEX:
                self._bridge_highest = max(highest, self._bridge_highest or -1)
                if highest >= self._next and self._evidence_at is None:
                    self._evidence_at = self.clock.now()
            tr = message.content.get("tr_s")
            if isinstance(tr, int | float) and 0 < tr < 3600:
                self._tr_s = float(tr)
        elif message.type is MessageType.EVENT:
            event = BridgeEvent.from_wire(message.content)
            self.stats.events += 1
            self._on_event(event)
        else:
            volume = Volume.from_wire(message)
            if self.series is None or not series_matches(self.series, volume.series):
                self.stats.other_series += 1  # never mixed into this run
                return
            self._accept(volume.stamped("received", message.received_at))

    # Ordering.
    def _accept(self, volume: Volume) -> None:
        index = volume.index
        if volume.tr_s:
            self._tr_s = volume.tr_s
        if index in self._delivered or index in self._ahead:
            self.stats.duplicates += 1
            return
        if index in self._declared_missing:
            self._declared_missing.discard(index)
            self._delivered.add(index)
            self._ready.append(Arrival(index, VolumeStatus.LATE, volume))
            return
        if index < self._next:
            # Before where this receiver started: the consumer has it already.
            self.stats.duplicates += 1
            return
        self._ahead[index] = volume
        if index > self._next and self._evidence_at is None:
            self._evidence_at = self.clock.now()

    def _timeliness(self, volume: Volume) -> VolumeStatus:
        """``late`` for a volume the bridge sent more than ``missing_after_trs`` TRs after it was due.

        Due: one TR after the last volume sent on time, on the bridge's clock
        (its ``sent`` stamps), so a bridge that froze shows, and a consumer
        busy between two reads does not. No deadline before the first volume.
        """
        sent = volume.stamps.get("sent")
        if sent is None:
            return VolumeStatus.OK
        if self._sent_ref is not None:
            ref_index, ref_sent = self._sent_ref
            allowed = self.clock.seconds_to_wall(
                (volume.index - ref_index + self.config.missing_after_trs) * self.tr_s
            )
            if sent - ref_sent > allowed:
                logger.warning(
                    "volume %d was sent %.1f s after its TR deadline; recorded late",
                    volume.index, sent - ref_sent - allowed,
                )  # fmt: skip
                return VolumeStatus.LATE
        self._sent_ref = (volume.index, sent)
        return VolumeStatus.OK

    def _overdue_at(self) -> float | None:
        """Clock time at which the volume awaited is declared missing (None: no sign it exists)."""
        if self._evidence_at is None or self._next in self._ahead:
            return None
        tr = self.tr_s
        if self._ref is None:
            due = self._evidence_at
        else:
            ref_index, ref_time = self._ref
            due = ref_time + (self._next - ref_index) * tr
        return max(due + self.config.missing_after_trs * tr, self._evidence_at + 0.5 * tr)

    def _advance(self) -> None:
        while True:
            volume = self._ahead.pop(self._next, None)
            if volume is not None:
                status = self._timeliness(volume)
                if status is VolumeStatus.OK:
                    self._ref = (self._next, self.clock.now())
                self._delivered.add(self._next)
                self._ready.append(Arrival(self._next, status, volume))
            else:
                overdue_at = self._overdue_at()
                if overdue_at is None or self.clock.now() < overdue_at:
                    break
                logger.warning(
                    "volume %d did not arrive within %.3g TRs; marked missing",
                    self._next,
                    self.config.missing_after_trs,
                )
                self._declared_missing.add(self._next)
                self._ready.append(Arrival(self._next, VolumeStatus.MISSING))
            self._next += 1
            later = self._bridge_highest is not None and self._bridge_highest >= self._next
            self._evidence_at = (self._evidence_at or self.clock.now()) if (self._ahead or later) else None
