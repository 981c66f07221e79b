"""The session database on PostgreSQL, with no code change.

Runs when CORTEXLOOP_TEST_POSTGRES_URL names a database the tests may wipe
(.ci/run starts a throwaway server for it); skips otherwise.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db import RoiSpec, RunKind, SessionKind, SessionRecorder, VolumeStatus, open_database
from db.models import Base
from db.queries import list_sessions, roi_timeseries, session_detail

URL = os.environ.get("CORTEXLOOP_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        URL is None, reason="set CORTEXLOOP_TEST_POSTGRES_URL to a scratch PostgreSQL database"
    ),
]


def test_schema_on_postgres_matches_the_models(pg_url: str) -> None:
    with open_database(pg_url, create=True) as database, database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_session_recorded_on_postgres_reads_back_the_same(pg_url: str) -> None:
    with open_database(pg_url, create=True) as database:
        recorder = SessionRecorder.start(
            database, subject="01", session="01", kind=SessionKind.SCANNER,
            rois=[RoiSpec(name="V1"), RoiSpec(name="FFA")],
        )  # fmt: skip
        run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=1.5)
        acquired = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
        recorder.record_volume(run_id, 0, roi_signals={"V1": 1.5, "FFA": -0.5}, acquired_at=acquired)
        recorder.record_volume(run_id, 1, roi_signals={}, status=VolumeStatus.MISSING)
        recorder.record_volume(run_id, 2, roi_signals={"V1": 2.5, "FFA": 0.5})
        with database.reader() as s:
            (summary,) = list_sessions(s)
            detail = session_detail(s, "sub-01/ses-01")
            series = roi_timeseries(s, run_id)
    assert summary.n_volumes == 2
    assert (detail.runs[0].n_volumes, detail.runs[0].n_missing) == (2, 1)
    assert series.values == [[1.5, -0.5], [None, None], [2.5, 0.5]]
    assert summary.started_at.tzinfo is not None
