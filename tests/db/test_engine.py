"""Every SQLite connection is set up for session recording."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from db import Database, DatabaseError, SessionKind, SessionRecorder, make_engine, open_database, resolve_url
from db.engine import SQLITE_BUSY_TIMEOUT_MS
from db.queries import list_sessions


def test_every_pooled_connection_has_wal_foreign_keys_and_busy_timeout(database: Database) -> None:
    connections = [database.engine.connect() for _ in range(3)]  # three distinct pooled connections
    try:
        for connection in connections:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        for connection in connections:
            connection.close()


def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"), database.transaction() as s:
        s.connection().exec_driver_sql("INSERT INTO volumes (run_id, [index], status) VALUES (999, 0, 'ok')")


def test_a_failed_transaction_leaves_nothing(database: Database) -> None:
    def add_the_same_subject_twice() -> None:
        with database.transaction() as s:
            insert = "INSERT INTO subjects (label, created_at) VALUES ('01', '2026-01-01')"
            s.connection().exec_driver_sql(insert)
            s.connection().exec_driver_sql(insert)

    with pytest.raises(IntegrityError):
        add_the_same_subject_twice()
    with database.reader() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM subjects").scalar() == 0


def test_paths_become_absolute_sqlite_urls_and_urls_pass_through(tmp_path: Path) -> None:
    url = resolve_url(tmp_path / "a.sqlite")
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "a.sqlite")
    pg = resolve_url("postgresql+psycopg://lab@db.example/cortexloop")
    assert (pg.get_backend_name(), pg.host, pg.database) == ("postgresql", "db.example", "cortexloop")


def test_url_without_its_driver_says_what_to_install() -> None:
    with pytest.raises(DatabaseError, match=r"no database driver.*cortexloop\[postgres\]"):
        make_engine("postgresql+pg8000://lab@localhost/cortexloop")


def test_a_database_that_cannot_do_what_was_asked_is_named_and_keeps_what_was_committed(
    database: Database, db_path: Path
) -> None:
    with database.transaction() as s:
        s.connection().exec_driver_sql("INSERT INTO subjects (label, created_at) VALUES ('01', '2026-01-01')")

    def delete_everything_at_once() -> None:
        with database.transaction() as s:
            s.connection().exec_driver_sql("PRAGMA busy_timeout = 0")
            s.connection().exec_driver_sql("DELETE FROM subjects")

    other = database.engine.raw_connection()  # another writer holds the lock, as a second controller would
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(DatabaseError, match=rf"cannot use database {db_path}: database is locked"):
            delete_everything_at_once()
    finally:
        other.rollback()
        other.close()
    with database.reader() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM subjects").scalar() == 1


def test_a_database_opened_read_only_is_read_and_left_exactly_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Probe case 8: a database on read-only media could not be read at all.
    path = tmp_path / "sessions.sqlite"
    with open_database(path, create=True) as database:
        SessionRecorder.start(database, subject="01", session="01", kind=SessionKind.SIMULATION, rois=[])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.sqlite"]  # checkpointed at close
    before = path.read_bytes()
    with open_database(path, read_only=True) as database, database.reader() as s:
        assert [row.ref for row in list_sessions(s)] == ["sub-01/ses-01"]
        with pytest.raises(DatabaseError, match="readonly"), database.transaction() as t:
            t.execute(text("DELETE FROM sessions"))
    assert path.read_bytes() == before
    # On read-only media (here: a folder the process may not write) nothing can be made beside the
    # file, not even the write-ahead log's index: it is opened as immutable, and read all the same.
    (tmp_path / "sessions.sqlite-shm").unlink(missing_ok=True)
    (tmp_path / "sessions.sqlite-wal").unlink(missing_ok=True)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    with open_database(path, read_only=True) as database, database.reader() as s:
        assert [row.ref for row in list_sessions(s)] == ["sub-01/ses-01"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions.sqlite"]
    assert path.read_bytes() == before
