"""What the presenter reports: its events as types, and the record of a presented run.

Every message the presenter sends its peers is one of the frozen
dataclasses below, each with its :class:`PresenterEventType`; on the wire it
is a JSON object with a ``"type"`` key and the dataclass's fields
(docs/protocol.md). :meth:`PresenterEvent.to_wire` writes one and
:func:`event_from_wire` reads one back, checking every field, so that the
controller and the simulated scanner match on types, never on strings.

During a run: :class:`Armed`, :class:`Triggered`, :class:`Onset`,
:class:`Offset`, :class:`Response`, :class:`Aborted`, :class:`Done` (or
:class:`TriggerTimeout`), then :class:`LogReady` with the whole
:class:`RunLog`. Answers and notices: :class:`Refused`, :class:`RunError`,
:class:`StaleTriggers`, :class:`PresenterWarning`, :class:`Ack`, :class:`Served`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar

from db.base import ProtocolError, RejectReason, from_wire

__all__ = [
    "Aborted",
    "Ack",
    "Armed",
    "AttentionScore",
    "Done",
    "LogReady",
    "Offset",
    "Onset",
    "PresenterEvent",
    "PresenterEventType",
    "PresenterWarning",
    "Refused",
    "Response",
    "RunError",
    "RunLog",
    "Served",
    "StaleTriggers",
    "TrialRecord",
    "TriggerTimeout",
    "Triggered",
    "event_from_wire",
]


# --- the record of a run ---------------------------------------------------------------------------


@dataclass
class TrialRecord:
    """What happened to one planned trial; times in seconds from the first trigger."""

    index: int
    stimulus: str
    sha256: str
    condition: str | None
    target_roi: str | None
    planned_onset_s: float
    planned_duration_s: float
    actual_onset_s: float | None = None
    actual_duration_s: float | None = None
    dropped_frames: int = 0

    @property
    def onset_error_ms(self) -> float | None:
        return None if self.actual_onset_s is None else 1e3 * (self.actual_onset_s - self.planned_onset_s)

    @property
    def shown(self) -> bool:
        return self.actual_onset_s is not None


@dataclass(frozen=True)
class AttentionScore:
    """The fixation task: a colour change is hit by a response key pressed within the response window."""

    changes: int
    hits: int
    false_alarms: int
    reaction_times_s: tuple[float, ...]

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.changes if self.changes else None

    def to_wire(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hit_rate": self.hit_rate}


@dataclass
class RunLog:
    """Everything the run loop measured: the typed record of a presented run."""

    run_id: str
    refresh_hz: float
    trials: list[TrialRecord]
    triggers_s: list[float] = field(default_factory=list)
    responses: list[tuple[str, float]] = field(default_factory=list)
    fixation_changes_s: list[float] = field(default_factory=list)
    dropped_frames: int = 0
    aborted: bool = False
    first_trigger_clock: float | None = None
    attention: AttentionScore | None = None

    @property
    def complete(self) -> bool:
        """Not aborted, and every trial shown."""
        return not self.aborted and all(t.shown for t in self.trials)

    def to_wire(self) -> dict[str, Any]:
        """Plain JSON values (what the presenter sends back at the end of a run)."""
        data = dataclasses.asdict(self)
        data["attention"] = None if self.attention is None else self.attention.to_wire()
        return data

    @classmethod
    def from_wire(cls, content: Any) -> RunLog:
        """A run log read back from the wire; :class:`ProtocolError` (``malformed``) if it is not one."""
        return from_wire(cls, content, what="run log")


# --- the events --------------------------------------------------------------------------------------


class PresenterEventType(enum.StrEnum):
    ARMED = "armed"
    TRIGGER = "trigger"
    ONSET = "onset"
    OFFSET = "offset"
    RESPONSE = "response"
    ABORTED = "aborted"
    DONE = "done"
    TRIGGER_TIMEOUT = "trigger_timeout"
    LOG = "log"
    REFUSED = "refused"
    ERROR = "error"
    STALE_TRIGGERS = "stale_triggers"
    WARNING = "warning"
    ACK = "ack"
    STATUS = "status"


@dataclass(frozen=True, kw_only=True)
class PresenterEvent:
    """What every presenter message has: its type, and the run it concerns (if any)."""

    type: ClassVar[PresenterEventType]
    run_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        content = {"type": self.type.value, **dataclasses.asdict(self)}
        for name, value in vars(self).items():  # nested records say what their wire form is
            if hasattr(value, "to_wire"):
                content[name] = value.to_wire()
        return content


@dataclass(frozen=True, kw_only=True)
class Armed(PresenterEvent):
    """A plan is checked and armed; the run starts at the first trigger."""

    type = PresenterEventType.ARMED
    refresh_hz: float
    tr_s: float
    n_volumes: int
    stimuli: tuple[str, ...]  # the plan's distinct image files


@dataclass(frozen=True, kw_only=True)
class Triggered(PresenterEvent):
    """The ``index``-th trigger of the run came, ``time_s`` after the first."""

    type = PresenterEventType.TRIGGER
    index: int
    time_s: float


@dataclass(frozen=True, kw_only=True)
class Onset(PresenterEvent):
    """Trial ``trial``'s image is on screen since the flip at ``actual_onset_s``."""

    type = PresenterEventType.ONSET
    trial: int
    stimulus: str
    planned_onset_s: float
    actual_onset_s: float
    planned_duration_s: float
    onset_error_ms: float


@dataclass(frozen=True, kw_only=True)
class Offset(PresenterEvent):
    """Trial ``trial``'s image is gone."""

    type = PresenterEventType.OFFSET
    trial: int
    actual_duration_s: float
    dropped_frames: int


@dataclass(frozen=True, kw_only=True)
class Response(PresenterEvent):
    """A button press during the run."""

    type = PresenterEventType.RESPONSE
    key: str
    time_s: float


@dataclass(frozen=True, kw_only=True)
class Aborted(PresenterEvent):
    """The run was stopped (escape, or the controller's abort); ``time_s`` is None before any trigger."""

    type = PresenterEventType.ABORTED
    time_s: float | None
    before_first_trigger: bool = False


@dataclass(frozen=True, kw_only=True)
class Done(PresenterEvent):
    """The run loop has ended."""

    type = PresenterEventType.DONE
    aborted: bool
    dropped_frames: int
    attention: AttentionScore | None = None


@dataclass(frozen=True, kw_only=True)
class TriggerTimeout(PresenterEvent):
    """The first trigger did not come within ``timeout_s`` from ``source``."""

    type = PresenterEventType.TRIGGER_TIMEOUT
    timeout_s: float
    source: str


@dataclass(frozen=True, kw_only=True)
class LogReady(PresenterEvent):
    """The whole run, after it ended, and where its BIDS events file was written (None if it was not)."""

    type = PresenterEventType.LOG
    log: RunLog
    events_tsv: str | None = None


@dataclass(frozen=True, kw_only=True)
class Refused(PresenterEvent):
    """A plan that cannot be armed, with the reason naming each problem."""

    type = PresenterEventType.REFUSED
    error: str


@dataclass(frozen=True, kw_only=True)
class RunError(PresenterEvent):
    """A run that could not go on (no first trigger), or a log asked for of a run never presented."""

    type = PresenterEventType.ERROR
    error: str


@dataclass(frozen=True, kw_only=True)
class StaleTriggers(PresenterEvent):
    """Triggers that came before the run was armed, dropped."""

    type = PresenterEventType.STALE_TRIGGERS
    count: int


@dataclass(frozen=True, kw_only=True)
class PresenterWarning(PresenterEvent):
    """Something the operator should know (an events file that could not be written)."""

    type = PresenterEventType.WARNING
    warning: str


@dataclass(frozen=True, kw_only=True)
class Ack(PresenterEvent):
    """A command (``abort``, ``quit``) was taken."""

    type = PresenterEventType.ACK
    command: str


@dataclass(frozen=True, kw_only=True)
class Served(PresenterEvent):
    """The answer to ``status``: the runs presented so far."""

    type = PresenterEventType.STATUS
    runs: tuple[str, ...]


EVENT_TYPES: dict[PresenterEventType, type[PresenterEvent]] = {
    cls.type: cls
    for cls in (
        Armed, Triggered, Onset, Offset, Response, Aborted, Done, TriggerTimeout, LogReady, Refused,
        RunError, StaleTriggers, PresenterWarning, Ack, Served,
    )
}  # fmt: skip


def event_from_wire(content: Any) -> PresenterEvent:
    """The event in a presentation message; :class:`ProtocolError` (``malformed``) if it is not one."""
    kind = content.get("type") if isinstance(content, dict) else None
    try:
        cls = EVENT_TYPES[PresenterEventType(str(kind))]
    except ValueError:
        raise ProtocolError(RejectReason.MALFORMED, f"presenter event of type {kind!r:.40}") from None
    return from_wire(cls, content, what=f"presenter {kind} event")
