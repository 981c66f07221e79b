"""Opening a session database: checked, configured, ready for transactions."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from db.base import DatabaseError, DatabaseNotFoundError, NotADatabaseError
from db.engine import make_engine, resolve_url, sqlite_path
from db.schema import check_schema, schema_state, upgrade

__all__ = ["Database", "open_database", "upgrade_database"]

logger = logging.getLogger(__name__)


class Database:
    """An open session database.

    Use :meth:`transaction` for every write: it commits when the block ends
    and rolls back if it raises, so a crash never leaves half a record. A
    database that cannot be used (a full disk, a locked or read-only file, a
    server gone) raises :class:`~db.base.DatabaseError` naming it; what was
    committed before stays.

    Parameters
    ----------
    engine : Engine
        A configured engine (see :func:`db.engine.make_engine`).
    name : str
        How the database is named in messages: its path, or its URL without password.
    """

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[OrmSession]:
        """A session inside one transaction, committed when the block ends."""
        with _translated(self.name, keep=_CALLERS_MISTAKES), self._sessions.begin() as session:
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A bare connection inside one transaction, committed when the block ends.

        For the hot path (a volume a second, for an hour): no ORM session
        to build and tear down around a few inserts.
        """
        with _translated(self.name, keep=_CALLERS_MISTAKES), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def reader(self) -> Iterator[OrmSession]:
        """A session for queries; nothing it does is committed."""
        with _translated(self.name, keep=_CALLERS_MISTAKES), self._sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.name!r})"


def _display_name(url: URL) -> str:
    path = sqlite_path(url)
    return str(path) if path is not None else url.render_as_string(hide_password=True)


def open_database(
    target: str | os.PathLike[str] | URL, *, create: bool = False, read_only: bool = False
) -> Database:
    """Open a session database and check that its schema is this cortexloop's.

    Parameters
    ----------
    target : str, path or URL
        A SQLite file path or any SQLAlchemy URL.
    create : bool, default False
        Create the database (SQLite file and schema) if it does not exist or
        is empty. A database with an older schema is never upgraded here:
        that is ``cortexloop db upgrade``'s job, done on purpose after a backup.
    read_only : bool, default False
        Only read (listings, reports, replays, exports): a SQLite file is
        opened read-only, so one on read-only media, or another user's, can
        be read, and nothing in it or beside it changes.

    Raises
    ------
    DatabaseNotFoundError
        No file at a SQLite path and ``create`` is False.
    NotADatabaseError
        The file is not an SQLite database, or not a cortexloop one.
    SchemaTooOldError, SchemaTooNewError
        The schema revision is not this cortexloop's.
    DatabaseError
        The server cannot be reached or the file cannot be opened.
    """
    engine, name = _engine_for(target, create=create and not read_only, read_only=read_only)
    try:
        with _translated(name):
            if create and not read_only:
                with engine.connect() as connection:
                    state = schema_state(connection)
                if state.is_empty:
                    logger.info("creating session database %s", name)
                    upgrade(engine)
            check_schema(engine, name)
    except BaseException:
        engine.dispose()
        raise
    return Database(engine, name)


def upgrade_database(target: str | os.PathLike[str] | URL) -> tuple[str | None, str]:
    """Create or upgrade a database's schema to this cortexloop's newest revision.

    Returns
    -------
    (before, after) : tuple
        The revision before (None for a new database) and after the upgrade.
    """
    engine, name = _engine_for(target, create=True)
    try:
        with _translated(name):
            with engine.connect() as connection:
                before = schema_state(connection)
            if before.revision is None and not before.is_empty:
                raise NotADatabaseError(
                    f"{name} holds tables that are not cortexloop's ({', '.join(before.tables[:5])}); "
                    "refusing to add a cortexloop schema to it: check the --db path"
                )
            after = upgrade(engine)
    finally:
        engine.dispose()
    return before.revision, after


def _engine_for(
    target: str | os.PathLike[str] | URL, *, create: bool, read_only: bool = False
) -> tuple[Engine, str]:
    """An engine for ``target`` and its name for messages, after checking a SQLite path.

    The path is checked before connecting because SQLite would silently
    create a missing file.
    """
    url = resolve_url(target)
    name = _display_name(url)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_path(path, name, create=create)
    return make_engine(url, read_only=read_only), name


def _check_sqlite_path(p: Path, name: str, *, create: bool) -> None:
    if p.is_dir():
        raise NotADatabaseError(f"{name} is a directory, not a database file; check the --db path")
    if p.exists():
        return
    if not create:
        raise DatabaseNotFoundError(
            f"no session database at {name}; create one with `cortexloop db upgrade --db {name}` "
            "or point --db (or $CORTEXLOOP_DB) at an existing one"
        )
    if not p.parent.is_dir():
        raise DatabaseNotFoundError(
            f"cannot create {name}: the folder {p.parent} does not exist; create it first"
        )


# A constraint broken or a statement wrong is the calling code's mistake, not the database's state:
# those keep their own type (and their traceback).
_CALLERS_MISTAKES = (IntegrityError, ProgrammingError)


@contextmanager
def _translated(name: str, keep: tuple[type[DBAPIError], ...] = ()) -> Iterator[None]:
    """Turn driver errors into cortexloop errors that name the database (but those in ``keep``)."""
    try:
        yield
    except keep:
        raise
    except DBAPIError as exc:
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        if "file is not a database" in reason or "malformed" in reason:
            raise NotADatabaseError(
                f"{name} is not a readable SQLite database ({reason}); check the --db path, "
                "or restore the file from a backup"
            ) from exc
        raise DatabaseError(f"cannot use database {name}: {reason}") from exc
