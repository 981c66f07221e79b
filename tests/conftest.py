"""Shared factories: a seeded rng, temporary session databases, recorders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from db import Database, RoiSpec, SessionKind, SessionRecorder, make_engine, open_database

ROI_NAMES = [f"roi{i:02d}" for i in range(20)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.sqlite"


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    with open_database(db_path, create=True) as db:
        yield db


@pytest.fixture
def make_recorder(database: Database) -> Callable[..., SessionRecorder]:
    """Start a session with 20 ROIs; pass ``session=`` for more than one."""

    def make(session: str = "01", subject: str = "01") -> SessionRecorder:
        return SessionRecorder.start(
            database,
            subject=subject,
            session=session,
            kind=SessionKind.SIMULATION,
            rois=[RoiSpec(name=name) for name in ROI_NAMES],
        )

    return make


@pytest.fixture
def pg_url() -> str:
    """CORTEXLOOP_TEST_POSTGRES_URL, its public schema emptied (the tests that use it skip without one)."""
    url = os.environ.get("CORTEXLOOP_TEST_POSTGRES_URL")
    assert url is not None
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return url
