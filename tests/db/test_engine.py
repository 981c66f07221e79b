"""Every SQLite connection is set up for session recording."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from db import Database, DatabaseError, make_engine, resolve_url
from db.engine import SQLITE_BUSY_TIMEOUT_MS


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
