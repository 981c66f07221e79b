"""The vocabularies the session database records, as enums free of any ORM.

The bridge, the presenter and the controller all speak them (a volume's
status comes off the wire, an event's level goes into the log), and the
database stores their values (``db.models`` maps them to columns), so they
live in the base that every process can import cheaply.
"""

from __future__ import annotations

import enum

__all__ = [
    "EventLevel",
    "ResponseMethod",
    "RunKind",
    "SessionKind",
    "Status",
    "StimulusKind",
    "VolumeStatus",
]


class SessionKind(enum.StrEnum):
    SCANNER = "scanner"
    SIMULATION = "simulation"
    REPLAY = "replay"


class Status(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RunKind(enum.StrEnum):
    TRAINING = "training"
    CLOSED_LOOP = "closed_loop"
    LOCALIZER = "localizer"


class StimulusKind(enum.StrEnum):
    NATURAL = "natural"
    SYNTHESIZED = "synthesized"
    CONTROL = "control"


class VolumeStatus(enum.StrEnum):
    OK = "ok"
    LATE = "late"  # arrived after it had been declared missing
    MISSING = "missing"  # never arrived; the row records the gap


class ResponseMethod(enum.StrEnum):
    PROVISIONAL = "provisional"  # incremental GLM during the run
    LSA = "lsa"  # least-squares-all after the run
    LSS = "lss"  # least-squares-separate after the run


class EventLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
