"""The :class:`VolumeSource` interface and the events sources report.

A source produces the volumes of one run, in the order they become
available, until it is closed or runs out. Problems that are not the
caller's fault (a corrupt file, a file of another series, a volume that
changed shape) do not raise: they become :class:`BridgeEvent` values passed
to the source's ``on_event`` callback, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from db.base import EventLevel, from_wire
from scanner_bridge.volume import Volume

__all__ = ["BridgeEvent", "EventCode", "EventSink", "VolumeSource", "log_event"]

logger = logging.getLogger(__name__)


class EventCode(enum.StrEnum):
    UNREADABLE = "unreadable"  # gave up on a file at its deadline
    OTHER_SERIES = "other_series"  # a series not served: not the one followed, or there before the start
    DUPLICATE = "duplicate"  # a volume index seen before
    MISMATCH = "mismatch"  # shape, affine or dtype differs from the run's first volume
    SERIES_STARTED = "series_started"  # a series began (its first volume was read)
    SOURCE_ERROR = "source_error"  # the source itself failed (a watch lost, a disk full)
    REWRITTEN = (
        "rewritten"  # a volume's file was written again with other data, or is gone, after it was read
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class BridgeEvent:
    """Something the operator should know about, recorded in the session's event log."""

    level: EventLevel
    code: EventCode
    message: str
    path: str = ""
    index: int | None = None
    time: float = dataclasses.field(default_factory=time.time)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, content: dict[str, Any]) -> BridgeEvent:
        """The event in an ``event`` message; :class:`ProtocolError` (``malformed``) if it is not one."""
        return from_wire(cls, content, what="bridge event")


EventSink = Callable[[BridgeEvent], None]


def log_event(event: BridgeEvent) -> None:
    """The default sink: log the event at its level."""
    logger.log(logging.getLevelName(event.level.upper()), "%s", event.message)


@runtime_checkable
class VolumeSource(Protocol):
    """Where volumes come from: a watched export directory, a replay, the simulated scanner.

    Iterating yields each volume once, stamped at least ``seen`` and ``read``,
    and ends when the source is closed (from any thread) or exhausted.
    """

    def __iter__(self) -> Iterator[Volume]: ...

    def close(self) -> None:
        """Stop; idempotent. Iteration in progress ends after the volume in hand."""
        ...

    def __enter__(self) -> VolumeSource: ...

    def __exit__(self, *exc_info: object) -> None: ...
