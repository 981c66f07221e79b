"""Fixtures of the database tests."""

from __future__ import annotations

import os

import pytest

from db import make_engine


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
