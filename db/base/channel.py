"""Signed sessions and the sockets that carry them: one layer for every channel.

:class:`WireSession` is one side of a conversation, the part jupyter_client's
``Session`` plays for every channel of a kernel: it numbers and signs what
its side sends and verifies what it receives, refusing replays by one rule:

- every side has a nonce, random and new every time it starts: its
  challenge. A message must be addressed (header ``to``) to the receiving
  side's nonce. Only a ``hello`` may be addressed otherwise (to nothing, or
  to the nonce of a side that has since restarted), because its sender does
  not know the nonce yet; such a hello is marked unaddressed
  (:attr:`Message.addressed` false) and earns nothing but a ``status``
  that carries the nonce. A server acts on a peer (serves it volumes, takes
  its plans) only once it has said hello addressed to the server's nonce;
- every sender session numbers its messages upward (header ``seq``): a
  number not above the last one seen from that session is a replay, from
  whichever connection it comes. The last :data:`MAX_SENDERS` sessions are
  remembered;
- on a server (``limit_rate``), one sender session may send at most
  :data:`RATE_PER_S` messages a second (bursts of :data:`RATE_BURST`); more
  are refused as ``flooded``. A peer takes whatever its server sends (a
  bridge catching a receiver up sends hundreds of volumes at once).

So a message recorded earlier cannot be replayed to the side it was sent to
(its ``seq`` is spent), nor to that side restarted (its nonce is new, so a
recorded hello is unaddressed and earns only a status of a few hundred
bytes), nor to another side, without synchronized clocks.

:class:`RouterService` is the server's socket: a ``ROUTER`` bound to an
endpoint and served by a thread of its own, which alone touches the socket
(ZeroMQ's rule); other threads hand it work with :meth:`~RouterService.post`.
A hook that raises anything but a refusal is logged and the message refused:
no message stops the thread. The bridge's publisher and the presenter's
channel are both one. :class:`DealerSocket` is the peer's side: a
``DEALER`` connected to a server, used from one thread (the bridge's
receivers, the presenter's clients).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

import zmq

from db.base.errors import EndpointError, ProtocolError, RejectReason
from db.base.wire import Frame, Message, MessageType, Signer, decode, encode

__all__ = ["MAX_SENDERS", "RATE_BURST", "RATE_PER_S", "DealerSocket", "RouterService", "WireSession"]

logger = logging.getLogger(__name__)

MAX_SENDERS = 4096  # sender sessions whose last sequence number a side remembers
RATE_PER_S = 200.0  # messages a second one sender session may send (a heartbeat is 2, triggers at 20x are 10)
RATE_BURST = 400.0
BIND_RETRY_S = 2.0  # a server restarted right after the old one stopped may find its port not yet released


class WireSession:
    """One side of the wire: signs and numbers what it sends, checks what it receives.

    Parameters
    ----------
    key : bytes
        The shared signing key.
    takes : collection of MessageType
        The types this side accepts; others are refused as ``unsupported``.
    max_message_bytes : int
        Larger messages are refused as ``oversized``.
    name : str
        This side, as messages name it ("the bridge", "the presenter").
    limit_rate : bool
        Refuse a sender session's messages beyond :data:`RATE_PER_S` a second (a server's side).
    """

    def __init__(
        self,
        key: bytes,
        *,
        takes: Collection[MessageType],
        max_message_bytes: int,
        name: str,
        limit_rate: bool = False,
    ) -> None:
        self.limit_rate = limit_rate
        self.signer = Signer(key)
        self.nonce = secrets.token_hex(16)
        self.takes = frozenset(takes)
        self.max_message_bytes = max_message_bytes
        self.name = name
        self.rejected: collections.Counter[str] = collections.Counter()  # refusals, by reason
        self._seq = 0
        # sender session -> (last seq, tokens left, when the tokens were counted)
        self._senders: collections.OrderedDict[str, tuple[int, float, float]] = collections.OrderedDict()

    def encode(
        self,
        msg_type: MessageType,
        content: dict[str, Any],
        buffers: Sequence[Frame] = (),
        *,
        to: str = "",
        digests: Sequence[bytes] | None = None,
    ) -> list[Frame]:
        """The frames of the next message of this session, addressed to the nonce ``to``."""
        self._seq += 1
        return encode(
            self.signer, msg_type, content, buffers, session=self.nonce, seq=self._seq, to=to, digests=digests
        )

    def decode(self, frames: Sequence[Frame]) -> Message:
        """Verify one incoming message and check that this side takes it and has not seen it.

        Raises
        ------
        ProtocolError
            Naming the reason; nothing of the message has been acted on.
        """
        message = decode(self.signer, frames, max_bytes=self.max_message_bytes)
        if message.type not in self.takes:
            raise ProtocolError(
                RejectReason.UNSUPPORTED, f"{self.name} does not take {message.type} messages"
            )
        addressed = message.header["to"] == self.nonce
        if not addressed and message.type is not MessageType.HELLO:
            raise ProtocolError(RejectReason.REPLAYED, f"addressed to another session than {self.name}'s")
        session, seq = message.session, message.header["seq"]
        last, tokens, counted = self._senders.get(session, (0, RATE_BURST, message.received_at))
        if seq <= last:
            raise ProtocolError(RejectReason.REPLAYED, f"sequence {seq} from session {session} after {last}")
        tokens = min(RATE_BURST, tokens + (message.received_at - counted) * RATE_PER_S)
        if tokens < 1 and self.limit_rate:
            self._senders[session] = (last, tokens, message.received_at)
            raise ProtocolError(
                RejectReason.FLOODED, f"session {session} sends more than {RATE_PER_S:g} messages a second"
            )
        self._senders[session] = (seq, tokens - 1, message.received_at)
        self._senders.move_to_end(session)
        if len(self._senders) > MAX_SENDERS:
            self._senders.popitem(last=False)
        return dataclasses.replace(message, addressed=addressed)

    def refuse(self, error: ProtocolError, source: str) -> None:
        """Count and log a refused message from ``source``."""
        self.rejected[error.reason.value] += 1
        logger.warning("%s dropped a message from %s: %s", self.name, source, error)


class RouterService:
    """A ``ROUTER`` socket bound to ``endpoint``, served by a thread of its own.

    Subclasses implement the hooks, which run in the service's thread:
    :meth:`_on_message` for each verified incoming message, :meth:`_on_posted`
    for each item another thread :meth:`post`-ed, :meth:`_on_tick` after every
    poll, :meth:`_on_gone` for a peer whose connection went away. They send
    with :meth:`send`, and call :meth:`_start` at the end of their
    ``__init__``.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://*:5555``, ``tcp://127.0.0.1:0`` (any free port), ``ipc:///tmp/x``.
    session : WireSession
    role : str
        What serves here ("bridge", "presenter"): names the thread and the messages.
    poll_s : float
        The longest the thread sleeps between ticks.
    send_hwm : int, optional
        Messages queued per peer before sends to it fail (ZeroMQ's default otherwise).
    """

    def __init__(
        self,
        endpoint: str,
        session: WireSession,
        *,
        role: str,
        poll_s: float = 0.2,
        send_hwm: int | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.session = session
        self.role = role
        self._poll_ms = int(poll_s * 1000)
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, session.max_message_bytes)
        if send_hwm is not None:
            self._router.setsockopt(zmq.SNDHWM, send_hwm)
        self._bind(endpoint)
        self.endpoint: str = self._router.getsockopt(zmq.LAST_ENDPOINT).decode()
        wake = f"inproc://cortexloop-{role}-{session.nonce}"
        self._wake_pull = self._ctx.socket(zmq.PULL)
        self._wake_pull.bind(wake)
        self._wake_push = self._ctx.socket(zmq.PUSH)
        self._wake_push.connect(wake)
        self._push_lock = threading.Lock()
        self._posted: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stop = object()
        self._thread = threading.Thread(target=self._serve, name=f"cortexloop-{role}", daemon=True)

    @property
    def rejected(self) -> collections.Counter[str]:
        """Incoming messages refused so far, by reason."""
        return self.session.rejected

    def _bind(self, endpoint: str) -> None:
        give_up = time.monotonic() + BIND_RETRY_S
        while True:
            try:
                self._router.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EADDRINUSE and time.monotonic() < give_up:
                    time.sleep(0.05)
                    continue
                self._router.close()
                hint = (
                    f"is another {self.role} running there?"
                    if exc.errno == zmq.EADDRINUSE
                    else "give an endpoint such as tcp://*:5555 or ipc:///tmp/cortexloop"
                )
                raise EndpointError(f"cannot bind {endpoint}: {exc}; {hint}") from exc

    def _start(self) -> None:
        self._thread.start()

    # -- any thread ---------------------------------------------------------------------------------

    def post(self, item: object) -> None:
        """Hand ``item`` to the service's thread (:meth:`_on_posted`), in order."""
        self._posted.put(item)
        self._wake()

    def close(self) -> None:
        """Handle what was posted, then stop serving; idempotent."""
        if self._thread.is_alive():
            self._posted.put(self._stop)
            self._wake()
            self._thread.join(timeout=5)
        for sock in (self._wake_push, self._wake_pull, self._router):
            sock.close(linger=0)

    def _wake(self) -> None:
        with self._push_lock:
            self._wake_push.send(b"")

    # -- the service's thread -----------------------------------------------------------------------

    def send(
        self,
        identity: bytes,
        msg_type: MessageType,
        content: dict[str, Any],
        buffers: Sequence[Frame] = (),
        *,
        to: str,
        digests: Sequence[bytes] | None = None,
    ) -> bool:
        """Send one message to the peer ``identity`` (its nonce ``to``); False when it could not go."""
        frames = self.session.encode(msg_type, content, buffers, to=to, digests=digests)
        try:
            self._router.send_multipart([identity, *frames], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.warning(
                "%s: peer %s is not keeping up; it will ask again for what it missed",
                self.role,
                identity.hex(),
            )
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: its connection is gone
            logger.info("%s: peer %s is gone (%s)", self.role, identity.hex(), exc)
            self._on_gone(identity)
            return False
        return True

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake_pull, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(timeout=self._poll_ms))
            if self._wake_pull in ready:
                while self._wake_pull.poll(0):
                    self._wake_pull.recv()
                while True:
                    try:
                        item = self._posted.get_nowait()
                    except queue.Empty:
                        break
                    if item is self._stop:
                        return
                    try:
                        self._on_posted(item)
                    except Exception:  # a bug in one item must not leave the server deaf
                        logger.exception(
                            "%s: could not handle %r; serving on", self.role, type(item).__name__
                        )
            if self._router in ready:
                self._drain()
            self._on_tick()

    def _drain(self) -> None:
        while True:
            try:
                identity, *frames = self._router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            peer = identity.bytes
            try:
                self._on_message(peer, self.session.decode([f.buffer for f in frames]))
            except ProtocolError as exc:
                self.session.refuse(exc, f"peer {peer.hex()}")
            except Exception as exc:  # a message no check foresaw: refused, and the server serves on
                logger.exception("%s: a message from peer %s raised", self.role, peer.hex())
                self.session.refuse(
                    ProtocolError(RejectReason.MALFORMED, repr(exc)[:200]), f"peer {peer.hex()}"
                )

    # -- hooks ----------------------------------------------------------------------------------------

    def _on_message(self, identity: bytes, message: Message) -> None:
        """A verified, fresh message from ``identity``; raise :class:`ProtocolError` to refuse it."""
        raise NotImplementedError

    def _on_posted(self, item: object) -> None:
        """Something another thread posted."""
        raise NotImplementedError

    def _on_tick(self) -> None:
        """After every poll: time-driven work (forgetting silent peers)."""

    def _on_gone(self, identity: bytes) -> None:
        """The peer ``identity`` cannot be reached any more."""


class DealerSocket:
    """A peer's ``DEALER`` socket connected to a server, speaking through ``session``; one thread uses it.

    Parameters
    ----------
    endpoint : str
        The server's endpoint, e.g. ``tcp://scanner-pc:5555``.
    session : WireSession
    linger_ms : int
        How long :meth:`close` waits to deliver what is queued.
    receive_hwm : int, optional
        Messages queued for receiving before ZeroMQ drops more (0: no limit).
    """

    def __init__(
        self,
        endpoint: str,
        session: WireSession,
        *,
        linger_ms: int = 0,
        receive_hwm: int | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        if receive_hwm is not None:
            self._sock.setsockopt(zmq.RCVHWM, receive_hwm)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise EndpointError(
                f"cannot connect to {endpoint}: {exc}; give an endpoint such as tcp://scanner-pc:5555"
            ) from exc

    def send(
        self, msg_type: MessageType, content: dict[str, Any], *, to: str = "", block: bool = True
    ) -> bool:
        """Send one message; with ``block=False``, False when it cannot be queued now (not connected)."""
        frames = self.session.encode(msg_type, content, to=to)
        if block:
            self._sock.send_multipart(frames)
            return True
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def receive(self, timeout_s: float) -> Message | None:
        """The next valid message, waiting up to ``timeout_s`` seconds; None when none came.

        Refused messages are counted and logged on the way (:meth:`WireSession.refuse`).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms):
                return None
            frames = self._sock.recv_multipart(copy=False)
            try:
                return self.session.decode([f.buffer for f in frames])
            except ProtocolError as exc:
                self.session.refuse(exc, self.endpoint)

    def wait_ms(self, timeout_ms: int) -> bool:
        """Whether something can be received within ``timeout_ms`` milliseconds."""
        return bool(self._sock.poll(timeout_ms))

    def close(self, linger_ms: int | None = None) -> None:
        self._sock.close(linger=linger_ms)
