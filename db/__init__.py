"""cortexloop's session database: schema, migrations, recording and queries.

Everything a session does is recorded here so that it can be resumed,
replayed and queried. SQLite (WAL) by default; any SQLAlchemy URL works.
This package imports no other cortexloop package.

:mod:`db.base` is the part every process shares (errors, enums, durable
writes, the wire, clocks): it loads no ORM. So that importing it stays
cheap, the names below are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.base.lazy import lazy_exports

if TYPE_CHECKING:
    from db.base import (
        ConfigError,
        CortexloopError,
        DatabaseError,
        DatabaseNotFoundError,
        EventLevel,
        NotADatabaseError,
        RecordNotFoundError,
        ResponseMethod,
        RunKind,
        SchemaMismatchError,
        SchemaTooNewError,
        SchemaTooOldError,
        SessionKind,
        Status,
        StimulusKind,
        VolumeStatus,
    )
    from db.database import Database, open_database
    from db.engine import make_engine, resolve_url
    from db.export import export_session
    from db.frames import SessionFrames, Study, open_study
    from db.frames import open as open
    from db.recorder import RoiSpec, SessionRecorder
    from db.schema import check_schema, head_revision, upgrade

_FROM_BASE = (
    "ConfigError", "CortexloopError", "DatabaseError", "DatabaseNotFoundError", "EventLevel",
    "NotADatabaseError", "RecordNotFoundError", "ResponseMethod", "RunKind", "SchemaMismatchError",
    "SchemaTooNewError", "SchemaTooOldError", "SessionKind", "Status", "StimulusKind", "VolumeStatus",
)  # fmt: skip
_EXPORTS = {
    **dict.fromkeys(_FROM_BASE, "db.base"),
    "Database": "db.database",
    "open_database": "db.database",
    "make_engine": "db.engine",
    "resolve_url": "db.engine",
    "export_session": "db.export",
    "open": "db.frames",
    "open_study": "db.frames",
    "SessionFrames": "db.frames",
    "Study": "db.frames",
    "RoiSpec": "db.recorder",
    "SessionRecorder": "db.recorder",
    "check_schema": "db.schema",
    "head_revision": "db.schema",
    "upgrade": "db.schema",
}

__all__ = [
    "ConfigError",
    "CortexloopError",
    "Database",
    "DatabaseError",
    "DatabaseNotFoundError",
    "EventLevel",
    "NotADatabaseError",
    "RecordNotFoundError",
    "ResponseMethod",
    "RoiSpec",
    "RunKind",
    "SchemaMismatchError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "SessionFrames",
    "SessionKind",
    "SessionRecorder",
    "Status",
    "StimulusKind",
    "Study",
    "VolumeStatus",
    "check_schema",
    "export_session",
    "head_revision",
    "make_engine",
    "open",
    "open_database",
    "open_study",
    "resolve_url",
    "upgrade",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
