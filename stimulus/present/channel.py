"""The presenter's network side: signed run plans and triggers in, presentation events out.

The presenter binds a ``ROUTER`` socket and speaks cortexloop's wire
(:mod:`db.base.channel`, docs/protocol.md). A peer (the controller, the
simulated scanner) connects a ``DEALER`` and says ``hello`` with its role;
the presenter answers with ``status``, which carries the presenter's nonce
(the challenge), and takes the peer on only when it says hello again,
addressed to that nonce. Every later message from the peer must be
addressed to the nonce too, come from the session that joined on that
connection, and be numbered upward, so a plan recorded and replayed later,
to this presenter or to one started since, or sent to another presenter, is
refused. Messages to a peer are addressed to its nonce in the same way. At
most :data:`MAX_PEERS` peers are held; a new one takes the place of the one
heard from longest ago.

One I/O thread owns the socket (a :class:`~db.base.channel.RouterService`).
It stamps each ``trigger`` with the presenter's clock the moment it reads it
(the run loop may be busy drawing), sets the abort flag the moment an
``abort`` arrives, and queues plans and other commands for the main thread,
which alone draws (PsychoPy's rule). Presentation events
(:mod:`stimulus.present.events`) go to every peer as they happen.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import queue
import threading
import time
import typing
from typing import Any

import zmq

from db.base import (
    Clock,
    DealerSocket,
    Message,
    MessageType,
    ProtocolError,
    RejectReason,
    RouterService,
    WireSession,
)
from stimulus.errors import PresenterError
from stimulus.present.events import PresenterEvent, event_from_wire
from stimulus.present.plan import RunPlan

__all__ = ["ChannelTriggers", "PresenterChannel", "PresenterClient", "Request"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 << 20  # a plan of a few thousand trials is well under this
MAX_PEERS = 32  # a controller and a scanner, reconnected many times
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


class PresenterChannel(RouterService):
    """The presenter's socket, served from a thread of its own.

    Parameters
    ----------
    endpoint : str
        Where to bind, e.g. ``tcp://*:5560`` or ``tcp://127.0.0.1:0`` (any free port).
    key : bytes
        The shared signing key.
    clock : Clock
        The run loop's clock: triggers are stamped on it.
    """

    def __init__(
        self, endpoint: str, key: bytes, clock: Clock, *, context: zmq.Context[Any] | None = None
    ) -> None:
        self.clock = clock
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._triggers: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._peers: collections.OrderedDict[bytes, _Peer] = collections.OrderedDict()
        self._status: dict[str, Any] = {"state": "starting"}
        self._status_lock = threading.Lock()
        self.abort = threading.Event()
        self.triggers_received = 0
        session = WireSession(
            key,
            takes={MessageType.HELLO, MessageType.TRIGGER, MessageType.COMMAND, MessageType.PLAN},
            max_message_bytes=MAX_MESSAGE_BYTES,
            limit_rate=True,
            name="the presenter",
        )
        super().__init__(endpoint, session, role="presenter", poll_s=0.5, context=context)
        self._start()

    @property
    def nonce(self) -> str:
        """The presenter's session: what every peer addresses its messages to."""
        return self.session.nonce

    # -- the main thread's side --------------------------------------------------------------------

    def set_status(self, **fields: Any) -> None:
        """Update what ``status`` replies say (state, run, refresh rate...)."""
        with self._status_lock:
            self._status.update(fields)

    def next_request(self, timeout_s: float) -> Request | None:
        """The next plan or command, or None when none came within ``timeout_s``."""
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

    def broadcast(self, event: PresenterEvent) -> None:
        """Send a presentation event to every peer."""
        self.post((event, None))

    def reply(self, peer: bytes, event: PresenterEvent) -> None:
        """Send a presentation event (an answer to a plan or command) to one peer."""
        self.post((event, peer))

    def __enter__(self) -> PresenterChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the I/O thread ----------------------------------------------------------------------------

    def _on_posted(self, item: object) -> None:
        event, peer = typing.cast(tuple[PresenterEvent, bytes | None], item)  # only this class posts
        content = event.to_wire()
        for identity in [peer] if peer is not None else list(self._peers):
            known = self._peers.get(identity)
            if known is not None:
                self.send(identity, MessageType.PRESENTATION, content, to=known.nonce)

    def _on_gone(self, identity: bytes) -> None:
        gone = self._peers.pop(identity, None)
        if gone is not None:
            logger.info("presenter peer %s (%s) dropped", identity.hex(), gone.role)

    def _on_message(self, identity: bytes, message: Message) -> None:
        received = self.clock.now()
        content, session = message.content, message.session
        if message.type is MessageType.HELLO:
            role = content.get("role")
            if role not in ROLES:
                raise ProtocolError(
                    RejectReason.MALFORMED, f"hello with role {role!r:.40}; roles: {', '.join(ROLES)}"
                )
            if message.addressed:  # the answer to this presenter's challenge: the peer joins
                self._peers[identity] = _Peer(nonce=session, role=str(role))
                self._peers.move_to_end(identity)
                while len(self._peers) > MAX_PEERS:
                    gone, _ = self._peers.popitem(last=False)
                    logger.warning("presenter: more than %d peers; forgot %s", MAX_PEERS, gone.hex())
            with self._status_lock:
                status = {**self._status, "presenter": self.nonce, "peers": len(self._peers)}
            self.send(identity, MessageType.STATUS, {**status, "joined": message.addressed}, to=session)
            return
        peer = self._peers.get(identity)
        if peer is None or peer.nonce != session:
            raise ProtocolError(RejectReason.REPLAYED, "not from the session that joined on this connection")
        self._peers.move_to_end(identity)
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
        else:  # a plan
            if peer.role != "controller":
                raise ProtocolError(RejectReason.UNSUPPORTED, f"a {peer.role} peer cannot send plans")
            self._requests.put(Request(message.type, content, identity))


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
        self._session = WireSession(
            key,
            takes={MessageType.STATUS, MessageType.PRESENTATION},
            max_message_bytes=MAX_MESSAGE_BYTES,
            name=f"the presenter's {role}",
        )
        self._socket = DealerSocket(endpoint, self._session, linger_ms=1000, context=context)
        self.presenter = ""
        self.status: dict[str, Any] = {}
        self._pending: collections.deque[PresenterEvent] = collections.deque()
        try:
            self.hello(timeout_s)
        except PresenterError:
            self._socket.close(linger_ms=0)
            raise

    @property
    def nonce(self) -> str:
        """This client's session: what the presenter addresses its messages to."""
        return self._session.nonce

    @property
    def rejected(self) -> collections.Counter[str]:
        """Messages from the presenter refused so far, by reason."""
        return self._session.rejected

    def hello(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Join the presenter (again) and return its status.

        The hello is addressed to the presenter's nonce as last known; a
        presenter that does not know it (the first hello, or a presenter
        started since) answers with its nonce, and the hello goes again,
        addressed to it.
        """
        self._socket.send(MessageType.HELLO, {"role": self.role}, to=self.presenter)
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._socket.receive(remaining)
            if message is None:
                break
            if message.type is MessageType.STATUS:
                self.status = message.content
                if message.content.get("joined") is True and message.session == self.presenter:
                    return self.status
                if message.session != self.presenter:  # the challenge: answer it
                    self.presenter = message.session
                    self._socket.send(MessageType.HELLO, {"role": self.role}, to=self.presenter)
                continue
            if (event := self._event(message)) is not None:
                self._pending.append(event)
        raise PresenterError(
            f"no presenter answered at {self.endpoint} within {timeout_s:g} s; is `cortexloop present` "
            "running there, with the same key file?"
        )

    def send_plan(self, plan: RunPlan) -> None:
        self._socket.send(MessageType.PLAN, {"plan": dataclasses.asdict(plan)}, to=self.presenter)

    def command(self, command: str, **fields: Any) -> None:
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {command!r}")
        self._socket.send(MessageType.COMMAND, {"command": command, **fields}, to=self.presenter)

    def trigger(self, index: int, scanner_time_s: float) -> None:
        self._socket.send(
            MessageType.TRIGGER, {"index": index, "scanner_time_s": scanner_time_s}, to=self.presenter
        )

    def next_event(self, timeout_s: float) -> PresenterEvent | None:
        """The next presentation event or reply, or None after ``timeout_s`` seconds without one."""
        if self._pending:
            return self._pending.popleft()
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._socket.receive(max(deadline - time.monotonic(), 0.0))
            if message is None:
                return None
            if message.type is MessageType.STATUS:
                self.status = message.content
            elif (event := self._event(message)) is not None:
                return event

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> PresenterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _event(self, message: Message) -> PresenterEvent | None:
        """The event a presentation message carries; a malformed one is refused and counted (None)."""
        try:
            return event_from_wire(message.content)
        except ProtocolError as exc:
            self._session.refuse(exc, self.endpoint)
            return None
