"""The presenter's network side: signed run plans and triggers in, presentation events out.

The presenter binds a ``ROUTER`` socket and speaks cortexloop's wire protocol
(``scanner_bridge.protocol``, docs/protocol.md). A peer (the controller, the
simulated scanner) connects a ``DEALER`` and says ``hello`` with its role;
the presenter answers with ``status``, which carries the presenter's nonce.
Every later message from the peer must be addressed to that nonce and
numbered upward in the peer's session, so a plan recorded and replayed
later, or sent to another presenter, is refused. Messages to a peer are
addressed to the peer's nonce in the same way.

One I/O thread owns the socket. It stamps each ``trigger`` with the
presenter's clock the moment it reads it (the run loop may be busy drawing),
sets the abort flag the moment an ``abort`` arrives, and queues plans and
other commands for the main thread, which alone draws (PsychoPy's rule).
Presentation events go to every peer as they happen.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import secrets
import threading
import time
from typing import Any

import zmq

from db.base import Clock
from scanner_bridge.errors import ProtocolError, RejectReason
from scanner_bridge.protocol import Message, MessageType, Signer, decode, encode
from stimulus.errors import PresenterError
from stimulus.present.plan import RunPlan

__all__ = ["ChannelTriggers", "PresenterChannel", "PresenterClient", "Request"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 << 20  # a plan of a few thousand trials is well under this
ROLES = ("controller", "scanner")
COMMANDS = ("abort", "quit", "log", "status")


@dataclasses.dataclass(frozen=True)
class Request:
    """A plan or command for the main thread, and who sent it (to reply to)."""

    kind: MessageType
    content: dict[str, Any]
    peer: bytes


@dataclasses.dataclass
class _Peer:
    nonce: str
    role: str
    last_seq: int


class PresenterChannel:
    """The presenter's socket, served from a thread of its own.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://*:5560`` or ``tcp://127.0.0.1:0`` (any free port).
    key : bytes
        The shared signing key.
    clock : clock
        The run loop's clock: triggers are stamped on it.
    """

    def __init__(
        self, endpoint: str, key: bytes, clock: Clock, *, context: zmq.Context[Any] | None = None
    ) -> None:
        self.clock = clock
        self.nonce = secrets.token_hex(16)
        self._signer = Signer(key)
        self._seq = 0
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        try:
            self._router.bind(endpoint)
        except zmq.ZMQError as exc:
            self._router.close()
            raise PresenterError(
                f"cannot bind {endpoint}: {exc}; is another presenter running there?"
            ) from exc
        self.endpoint: str = self._router.getsockopt(zmq.LAST_ENDPOINT).decode()
        wake = f"inproc://cortexloop-presenter-{self.nonce}"
        self._wake_pull = self._ctx.socket(zmq.PULL)
        self._wake_pull.bind(wake)
        self._wake_push = self._ctx.socket(zmq.PUSH)
        self._wake_push.connect(wake)
        self._push_lock = threading.Lock()
        self._outbox: queue.SimpleQueue[tuple[MessageType, dict[str, Any], bytes | None] | None] = (
            queue.SimpleQueue()
        )
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._triggers: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._peers: dict[bytes, _Peer] = {}
        self._status: dict[str, Any] = {"state": "starting"}
        self._status_lock = threading.Lock()
        self.abort = threading.Event()
        self.rejected: collections.Counter[str] = collections.Counter()
        self.triggers_received = 0
        self._thread = threading.Thread(target=self._run, name="cortexloop-presenter-io", daemon=True)
        self._thread.start()

    # -- the main thread's side --------------------------------------------------------------------

    def set_status(self, **fields: Any) -> None:
        """Update what ``status`` replies say (state, run, refresh rate...)."""
        with self._status_lock:
            self._status.update(fields)

    def next_request(self, timeout_s: float) -> Request | None:
        try:
            return self._requests.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def clear_triggers(self) -> int:
        """Forget triggers that came while no run was armed; return how many."""
        n = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self._triggers.get_nowait()
                n += 1
        return n

    def wait_triggers(self, timeout_s: float) -> list[float]:
        """Trigger times (presenter clock) received so far, waiting up to ``timeout_s`` for the first."""
        times = []
        try:
            times.append(
                self._triggers.get(timeout=timeout_s) if timeout_s > 0 else self._triggers.get_nowait()
            )
            while True:
                times.append(self._triggers.get_nowait())
        except queue.Empty:
            pass
        return times

    def broadcast(self, content: dict[str, Any]) -> None:
        """Send a presentation event to every peer."""
        self._post(MessageType.PRESENTATION, content, None)

    def reply(self, peer: bytes, content: dict[str, Any]) -> None:
        """Send a presentation message (an answer to a plan or command) to one peer."""
        self._post(MessageType.PRESENTATION, content, peer)

    def close(self) -> None:
        """Send what is queued, then stop; idempotent."""
        if self._thread.is_alive():
            self._outbox.put(None)
            self._wake()
            self._thread.join(timeout=5)
        for sock in (self._wake_push, self._wake_pull, self._router):
            sock.close(linger=0)

    def __enter__(self) -> PresenterChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _post(self, kind: MessageType, content: dict[str, Any], peer: bytes | None) -> None:
        self._outbox.put((kind, content, peer))
        self._wake()

    def _wake(self) -> None:
        with self._push_lock:
            self._wake_push.send(b"")

    # -- the I/O thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(timeout=500))
            if self._router in ready:
                self._drain()
            if self._wake_pull in ready:
                while self._wake_pull.poll(0):
                    self._wake_pull.recv()
                while True:
                    try:
                        item = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        return
                    kind, content, peer = item
                    for identity in [peer] if peer is not None else list(self._peers):
                        self._send(identity, kind, content)

    def _send(self, identity: bytes, kind: MessageType, content: dict[str, Any]) -> None:
        peer = self._peers.get(identity)
        if peer is None:
            return
        self._seq += 1
        frames = encode(self._signer, kind, content, session=self.nonce, seq=self._seq, to=peer.nonce)
        try:
            self._router.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer went away; EAGAIN: it is not reading
            logger.info("presenter peer %s (%s) dropped: %s", identity.hex(), peer.role, exc)
            self._peers.pop(identity, None)

    def _drain(self) -> None:
        while True:
            try:
                identity, *frames = self._router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            received = self.clock.now()
            try:
                self._handle(identity, decode(self._signer, frames, max_bytes=MAX_MESSAGE_BYTES), received)
            except ProtocolError as exc:
                self.rejected[exc.reason.value] += 1
                logger.warning("presenter dropped a message from %s: %s", identity.hex(), exc)

    def _handle(self, identity: bytes, message: Message, received: float) -> None:
        header, content = message.header, message.content
        session, seq = str(header["session"]), int(header["seq"])
        if message.type is MessageType.HELLO:
            role = content.get("role")
            if role not in ROLES:
                raise ProtocolError(
                    RejectReason.MALFORMED, f"hello with role {role!r}; roles: {', '.join(ROLES)}"
                )
            known = self._peers.get(identity)
            if known is not None and known.nonce == session and seq <= known.last_seq:
                raise ProtocolError(RejectReason.REPLAYED, f"hello {seq} after {known.last_seq}")
            self._peers[identity] = _Peer(nonce=session, role=str(role), last_seq=seq)
            with self._status_lock:
                status = {**self._status, "presenter": self.nonce, "peers": len(self._peers)}
            self._seq += 1
            frames = encode(
                self._signer, MessageType.STATUS, status, session=self.nonce, seq=self._seq, to=session
            )
            with contextlib.suppress(zmq.ZMQError):
                self._router.send_multipart([identity, *frames], flags=zmq.NOBLOCK)
            return
        peer = self._peers.get(identity)
        if header["to"] != self.nonce or peer is None or peer.nonce != session:
            raise ProtocolError(RejectReason.REPLAYED, "not addressed to this presenter's current session")
        if seq <= peer.last_seq:
            raise ProtocolError(RejectReason.REPLAYED, f"sequence {seq} after {peer.last_seq}")
        peer.last_seq = seq
        if message.type is MessageType.TRIGGER:
            self.triggers_received += 1
            self._triggers.put(received)
        elif message.type is MessageType.COMMAND:
            command = content.get("command")
            if command not in COMMANDS:
                raise ProtocolError(
                    RejectReason.MALFORMED, f"command {command!r}; commands: {', '.join(COMMANDS)}"
                )
            if command in ("abort", "quit"):
                self.abort.set()
            self._requests.put(Request(message.type, content, identity))
        elif message.type is MessageType.PLAN:
            if peer.role != "controller":
                raise ProtocolError(RejectReason.UNSUPPORTED, f"a {peer.role} peer cannot send plans")
            self._requests.put(Request(message.type, content, identity))
        else:
            raise ProtocolError(
                RejectReason.UNSUPPORTED, f"the presenter does not take {message.type} messages"
            )


class ChannelTriggers:
    """Triggers that come over the network (the simulated scanner, or a bridge with a trigger input)."""

    def __init__(self, channel: PresenterChannel) -> None:
        self.channel = channel
        self.description = f"the network ({channel.endpoint})"

    def wait(self, until: float) -> list[float]:
        clock = self.channel.clock
        return self.channel.wait_triggers(clock.seconds_to_wall(until - clock.now()))


class PresenterClient:
    """A peer of the presenter: the controller (plans, commands) or the simulated scanner (triggers).

    Connecting says hello and waits for the presenter's status; no answer
    within ``timeout_s`` is a :class:`PresenterError` that says where it looked.
    """

    def __init__(
        self,
        endpoint: str,
        key: bytes,
        *,
        role: str = "controller",
        timeout_s: float = 10.0,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.endpoint, self.role = endpoint, role
        self._signer = Signer(key)
        self.nonce = secrets.token_hex(16)
        self._seq = 0
        self._last_seq: dict[str, int] = {}
        self.rejected: collections.Counter[str] = collections.Counter()
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._sock.connect(endpoint)
        self.presenter = ""
        self.status: dict[str, Any] = {}
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        try:
            self.hello(timeout_s)
        except PresenterError:
            self._sock.close(linger=0)
            raise

    def hello(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Say hello (again) and return the presenter's status."""
        self._send(MessageType.HELLO, {"role": self.role}, to="")
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._receive(remaining)
            if message is None:
                break
            if message.type is MessageType.STATUS:
                self.presenter = str(message.header["session"])
                self.status = message.content
                return self.status
            self._pending.append(message.content)
        raise PresenterError(
            f"no presenter answered at {self.endpoint} within {timeout_s:g} s; is `cortexloop present` "
            "running there, with the same key file?"
        )

    def send_plan(self, plan: RunPlan) -> None:
        self._send(MessageType.PLAN, {"plan": dataclasses.asdict(plan)})

    def command(self, command: str, **fields: Any) -> None:
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
        self._send(MessageType.COMMAND, {"command": command, **fields})

    def trigger(self, index: int, scanner_time_s: float) -> None:
        self._send(MessageType.TRIGGER, {"index": index, "scanner_time_s": scanner_time_s})

    def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next presentation event or reply, or None after ``timeout_s`` seconds without one."""
        if self._pending:
            return self._pending.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._receive(max(deadline - time.monotonic(), 0.0))
            if message is None:
                return None
            if message.type is MessageType.PRESENTATION:
                return message.content
            if message.type is MessageType.STATUS:
                self.status = message.content

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> PresenterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, kind: MessageType, content: dict[str, Any], to: str | None = None) -> None:
        self._seq += 1
        frames = encode(
            self._signer,
            kind,
            content,
            session=self.nonce,
            seq=self._seq,
            to=self.presenter if to is None else to,
        )
        self._sock.send_multipart(frames)

    def _receive(self, timeout_s: float) -> Message | None:
        deadline = time.monotonic() + timeout_s
        while True:
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms):
                return None
            frames = self._sock.recv_multipart()
            try:
                message = decode(self._signer, frames, max_bytes=MAX_MESSAGE_BYTES)
                header = message.header
                if header["to"] != self.nonce:
                    raise ProtocolError(RejectReason.REPLAYED, "addressed to another connection")
                session, seq = str(header["session"]), int(header["seq"])
                if seq <= self._last_seq.get(session, 0):
                    raise ProtocolError(
                        RejectReason.REPLAYED, f"sequence {seq} from presenter {session} seen before"
                    )
                self._last_seq[session] = seq
                return message
            except ProtocolError as exc:
                self.rejected[exc.reason.value] += 1
                logger.warning("dropped a message from the presenter: %s", exc)
                if time.monotonic() >= deadline:
                    return None
