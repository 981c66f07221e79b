"""What every cortexloop process shares, loading no ORM and no torch.

The scanner's computer (the bridge), the stimulus computer (the presenter)
and the controller all import this, and only this, of ``db``:

- :mod:`~db.base.errors`: the root of the error tree and its branches;
- :mod:`~db.base.enums`: the vocabularies the session database records;
- :mod:`~db.base.files`: the one durable atomic write;
- :mod:`~db.base.bids`: BIDS labels, tables and the events columns;
- :mod:`~db.base.clock`: real, scaled and virtual clocks;
- :mod:`~db.base.wire`: the signed message format and the key files;
- :mod:`~db.base.channel`: signed sessions (one freshness rule) and the sockets that carry them;
- :mod:`~db.base.checked`: records built from hostile JSON, every field checked.

The rest of ``db`` (the schema, recording, queries) builds on it; nothing
here imports the rest of ``db``.
"""

from __future__ import annotations

from db.base.bids import (
    EVENT_COLUMNS,
    EVENTS_SIDECAR,
    TASK_DESCRIPTIONS,
    TASKS,
    BidsEvent,
    attention_events,
    bids_label,
    trial_event,
    write_events,
    write_json,
    write_tsv,
)
from db.base.channel import DealerSocket, RouterService, WireSession
from db.base.checked import from_wire
from db.base.clock import Clock, ScaledClock, VirtualClock, WallClock
from db.base.enums import EventLevel, ResponseMethod, RunKind, SessionKind, Status, StimulusKind, VolumeStatus
from db.base.errors import (
    ConfigError,
    CortexloopError,
    DatabaseError,
    DatabaseNotFoundError,
    EndpointError,
    KeyFileError,
    NotADatabaseError,
    ProtocolError,
    RecordNotFoundError,
    RejectReason,
    SchemaMismatchError,
    SchemaTooNewError,
    SchemaTooOldError,
    WireError,
)
from db.base.files import PendingFile, prepare_atomic, read_regular, write_atomic
from db.base.wire import Message, MessageType, Signer, generate_key_file, load_key

__all__ = [
    "EVENTS_SIDECAR",
    "EVENT_COLUMNS",
    "TASKS",
    "TASK_DESCRIPTIONS",
    "BidsEvent",
    "Clock",
    "ConfigError",
    "CortexloopError",
    "DatabaseError",
    "DatabaseNotFoundError",
    "DealerSocket",
    "EndpointError",
    "EventLevel",
    "KeyFileError",
    "Message",
    "MessageType",
    "NotADatabaseError",
    "PendingFile",
    "ProtocolError",
    "RecordNotFoundError",
    "RejectReason",
    "ResponseMethod",
    "RouterService",
    "RunKind",
    "ScaledClock",
    "SchemaMismatchError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SessionKind",
    "Signer",
    "Status",
    "StimulusKind",
    "VirtualClock",
    "VolumeStatus",
    "WallClock",
    "WireError",
    "WireSession",
    "attention_events",
    "bids_label",
    "from_wire",
    "generate_key_file",
    "load_key",
    "prepare_atomic",
    "read_regular",
    "trial_event",
    "write_atomic",
    "write_events",
    "write_json",
    "write_tsv",
]
