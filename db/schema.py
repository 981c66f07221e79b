"""Schema revisions: upgrading a database and checking one before use.

The schema is versioned with Alembic from its first revision. A database is
never changed behind its owner's back: opening one whose schema is older
than this cortexloop's says to run ``cortexloop db upgrade``; opening one
written by a newer cortexloop says which version is needed. Nothing is ever
dropped automatically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, insert, inspect, select

from db.base import NotADatabaseError, SchemaTooNewError, SchemaTooOldError
from db.models import SchemaHistory

__all__ = [
    "MIGRATIONS_DIR",
    "SchemaState",
    "check_schema",
    "cortexloop_version",
    "head_revision",
    "schema_state",
    "upgrade",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def cortexloop_version() -> str:
    """The installed cortexloop version."""
    try:
        return version("cortexloop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _config(connection: Connection | None = None, migrations_dir: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir or MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision(migrations_dir: Path | None = None) -> str:
    """The newest schema revision this cortexloop knows."""
    head = ScriptDirectory.from_config(_config(migrations_dir=migrations_dir)).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise RuntimeError(f"no migrations found in {migrations_dir or MIGRATIONS_DIR}")
    return head


@dataclass(frozen=True, kw_only=True)
class SchemaState:
    """Where a database's schema stands relative to this cortexloop.

    Attributes
    ----------
    revision : str or None
        The database's Alembic revision; None for an empty database.
    head : str
        The newest revision this cortexloop knows.
    known : bool
        Whether ``revision`` is one of this cortexloop's revisions.
    written_by : str or None
        The cortexloop version that last upgraded the database, if recorded.
    tables : tuple of str
        The tables the database holds (to recognise foreign databases).
    """

    revision: str | None
    head: str
    known: bool
    written_by: str | None
    tables: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        return not self.tables

    @property
    def is_current(self) -> bool:
        return self.revision == self.head


def schema_state(connection: Connection, migrations_dir: Path | None = None) -> SchemaState:
    """Read the schema revision of the database behind ``connection``."""
    tables = tuple(sorted(inspect(connection).get_table_names()))
    revision = MigrationContext.configure(connection).get_current_revision()
    script = ScriptDirectory.from_config(_config(migrations_dir=migrations_dir))
    known = revision is not None and _is_known(script, revision)
    written_by = None
    if SchemaHistory.__tablename__ in tables:
        written_by = connection.execute(
            select(SchemaHistory.cortexloop_version).order_by(SchemaHistory.id.desc()).limit(1)
        ).scalar_one_or_none()
    return SchemaState(
        revision=revision,
        head=head_revision(migrations_dir),
        known=known,
        written_by=written_by,
        tables=tables,
    )


def _is_known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises several types for an unknown id
        return False


def check_schema(engine: Engine, name: str, migrations_dir: Path | None = None) -> SchemaState:
    """Raise unless the database's schema is exactly this cortexloop's.

    Parameters
    ----------
    engine : Engine
        The database to check.
    name : str
        How to name the database in messages (its path or URL).
    """
    with engine.connect() as connection:
        state = schema_state(connection, migrations_dir)
    if state.is_current:
        return state
    if state.revision is None:
        if state.is_empty:
            raise SchemaTooOldError(
                f"{name} is an empty database with no cortexloop schema; "
                f"create it with `cortexloop db upgrade --db {name}`"
            )
        raise NotADatabaseError(
            f"{name} is a database but not a cortexloop session database "
            f"(it holds tables {', '.join(state.tables[:5])}{'...' if len(state.tables) > 5 else ''}); "
            "check the --db path"
        )
    if not state.known:
        by = f"cortexloop {state.written_by}" if state.written_by else "a newer cortexloop"
        raise SchemaTooNewError(
            f"{name} has schema revision {state.revision}, written by {by}; this is cortexloop "
            f"{cortexloop_version()} (newest schema {state.head}): install cortexloop "
            f"{state.written_by or 'newer'} or later to open it"
        )
    raise SchemaTooOldError(
        f"{name} has schema revision {state.revision}, older than this cortexloop's "
        f"{state.head}; back it up, then run `cortexloop db upgrade --db {name}`"
    )


def upgrade(engine: Engine, revision: str = "head", migrations_dir: Path | None = None) -> str:
    """Upgrade the schema to ``revision`` in one transaction; return the new revision.

    A database at an unknown (newer) revision is refused, never downgraded.
    Each upgrade that changes the revision is recorded in ``schema_history``.
    """
    with engine.begin() as connection:
        before = schema_state(connection, migrations_dir)
        if before.revision is not None and not before.known:
            raise SchemaTooNewError(
                f"the database has schema revision {before.revision}, unknown to cortexloop "
                f"{cortexloop_version()}; it was written by cortexloop "
                f"{before.written_by or '(a newer version)'}: upgrade cortexloop, not the database"
            )
        command.upgrade(_config(connection, migrations_dir), revision)
        after = MigrationContext.configure(connection).get_current_revision()
        if after is None:  # pragma: no cover - upgrade to a revision always stamps one
            raise RuntimeError("the upgrade left no schema revision behind")
        if after != before.revision:
            connection.execute(
                insert(SchemaHistory).values(revision=after, cortexloop_version=cortexloop_version())
            )
            logger.info("schema upgraded from %s to %s", before.revision or "empty", after)
    return after
