"""Engines and connections for the session database.

``--db`` takes a path or any SQLAlchemy URL. A path means SQLite, which is
what a single controller computer uses; a lab-wide database is a URL such as
``postgresql+psycopg://user@host/cortexloop`` and needs no code change.

On SQLite every new connection is set up the same way (WAL so that readers
never block the writer, foreign keys enforced, a busy timeout instead of an
immediate "database is locked", a full sync on commit so that a commit
that returned survives a killed process and a power cut alike, and explicit
BEGIN so that schema changes are as atomic as inserts).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from db.base import DatabaseError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "make_engine",
    "resolve_url",
    "sqlite_path",
]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000


def resolve_url(target: str | os.PathLike[str] | URL) -> URL:
    """Turn a path or a URL string into a SQLAlchemy URL.

    Anything containing ``://`` is a URL; anything else is a path to a
    SQLite file, made absolute so that log lines and errors are unambiguous.
    """
    if isinstance(target, URL):
        return target
    text = os.fspath(target)
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    try:
        return make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise DatabaseError(
            f"cannot parse database URL {text!r} ({exc}); give a file path or a URL such as "
            "sqlite:///sessions.sqlite or postgresql+psycopg://user@host/cortexloop"
        ) from exc


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory SQLite."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _configure_sqlite_reader(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # A read-only connection changes nothing, not even the journal mode.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # pysqlite opens transactions itself, and only before DML: DDL (a schema
    # upgrade) would run outside any transaction. Take that job away from it
    # and emit BEGIN in `_begin_sqlite`, so that every transaction, DDL
    # included, is atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def make_engine(target: str | os.PathLike[str] | URL, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for a path or URL, configured for session recording.

    Parameters
    ----------
    target : str, path or URL
        A SQLite file path or any SQLAlchemy URL.
    read_only : bool
        For SQLite: open the file read-only (``mode=ro``), changing nothing
        in it or beside it; on read-only media (where SQLite cannot make the
        write-ahead log's index) as immutable. Other backends: unchanged.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    Engine
        For SQLite, every connection it opens has WAL, foreign keys and a
        busy timeout set.
    """
    url = resolve_url(target)
    kwargs.setdefault("pool_pre_ping", url.get_backend_name() != "sqlite")
    path = sqlite_path(url)
    if read_only and path is not None:
        immutable = "&immutable=1" if not os.access(path.parent, os.W_OK) else ""
        url = URL.create("sqlite", database=f"file:{path}?mode=ro{immutable}", query={"uri": "true"})
    try:
        engine = create_engine(url, **kwargs)
    except (ModuleNotFoundError, NoSuchModuleError) as exc:
        shown = url.render_as_string(hide_password=True)
        raise DatabaseError(
            f"no database driver for {shown} ({exc}); for PostgreSQL install cortexloop[postgres] "
            "and use a postgresql+psycopg:// URL"
        ) from exc
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite_reader if read_only else _configure_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
    logger.debug("engine for %s", url.render_as_string(hide_password=True))
    return engine
