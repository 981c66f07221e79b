"""cortexloop's session database: schema, migrations, recording and queries.

Everything a session does is recorded here so that it can be resumed,
replayed and queried. SQLite (WAL) by default; any SQLAlchemy URL works.
This package imports no other cortexloop package.
"""

from __future__ import annotations

from db.database import Database, open_database
from db.engine import make_engine, resolve_url
from db.errors import (
    ConfigError,
    CortexloopError,
    DatabaseError,
    DatabaseNotFoundError,
    NotADatabaseError,
    RecordNotFoundError,
    SchemaMismatchError,
    SchemaTooNewError,
    SchemaTooOldError,
)
from db.export import export_session
from db.models import (
    EventLevel,
    ResponseMethod,
    RunKind,
    SessionKind,
    Status,
    StimulusKind,
    VolumeStatus,
)
from db.recorder import RoiSpec, SessionRecorder
from db.schema import check_schema, head_revision, upgrade

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
    "SessionKind",
    "SessionRecorder",
    "Status",
    "StimulusKind",
    "VolumeStatus",
    "check_schema",
    "export_session",
    "head_revision",
    "make_engine",
    "open_database",
    "resolve_url",
    "upgrade",
]
