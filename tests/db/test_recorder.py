"""The controller's write path: what it records, and what it refuses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from db import Database, RecordNotFoundError, RunKind, SessionRecorder
from db.base import bids_label
from db.models import RoiSignal, Run, Volume


def _count_volumes(database: Database) -> tuple[int, int]:
    with database.reader() as s:
        return s.scalar(select(func.count(Volume.id))) or 0, s.scalar(
            select(func.count()).select_from(RoiSignal)
        ) or 0


def test_timestamps_come_back_as_the_same_utc_instant(
    database: Database, make_recorder: Callable[..., SessionRecorder]
) -> None:
    recorder = make_recorder()
    run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=2.0)
    berlin = dt.timezone(dt.timedelta(hours=1))
    acquired = dt.datetime(2026, 11, 22, 9, 30, 0, 123456, tzinfo=berlin)
    recorder.record_volume(run_id, 0, roi_signals={"roi00": 1.0}, acquired_at=acquired)
    with database.reader() as s:
        stored = s.scalar(select(Volume.acquired_at))
    assert stored == acquired
    assert stored is not None
    assert stored.utcoffset() == dt.timedelta(0)


def test_naive_timestamp_is_refused(make_recorder: Callable[..., SessionRecorder]) -> None:
    recorder = make_recorder()
    run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=2.0)
    with pytest.raises(Exception, match="naive datetime"):
        recorder.record_volume(run_id, 0, roi_signals={}, acquired_at=dt.datetime(2026, 11, 22, 9, 30))


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ({"roi00": float("nan")}, "ROI 'roi00' signal of volume 0 is nan"),
        ({"V1": 1.0}, "ROI 'V1' is not in this session's atlas; known ROIs: roi00"),
    ],
)
def test_bad_roi_signals_are_refused_and_nothing_is_written(
    database: Database, make_recorder: Callable[..., SessionRecorder], signals: dict[str, float], message: str
) -> None:
    recorder = make_recorder()
    run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=2.0)
    with pytest.raises((ValueError, RecordNotFoundError), match=message):
        recorder.record_volume(run_id, 0, roi_signals={"roi01": 5.0, **signals})
    assert _count_volumes(database) == (0, 0)


def test_a_volume_recorded_twice_keeps_the_first(
    database: Database, make_recorder: Callable[..., SessionRecorder]
) -> None:
    recorder = make_recorder()
    run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=2.0)
    recorder.record_volume(run_id, 0, roi_signals={"roi00": 1.0, "roi01": 2.0})
    with pytest.raises(IntegrityError):
        recorder.record_volume(run_id, 0, roi_signals={"roi00": 9.0})
    assert _count_volumes(database) == (1, 2)
    with database.reader() as s:
        assert sorted(s.scalars(select(RoiSignal.value))) == [1.0, 2.0]


def test_runs_and_rounds_are_numbered_in_order_and_survive_resume(
    database: Database, make_recorder: Callable[..., SessionRecorder]
) -> None:
    recorder = make_recorder()
    first = recorder.start_run(kind=RunKind.TRAINING, tr_s=2.0)
    round_id = recorder.start_round(policy="round-robin", targets=["roi03"])
    # the controller dies here and is restarted
    resumed = SessionRecorder.resume(database, "sub-01/ses-01")
    assert resumed.session_id == recorder.session_id
    assert resumed.roi_names == recorder.roi_names
    second = resumed.start_run(kind=RunKind.CLOSED_LOOP, tr_s=2.0, round_id=round_id)
    with database.reader() as s:
        indices = {run_id: index for run_id, index in s.execute(select(Run.id, Run.index))}
    assert indices == {first: 1, second: 2}


def test_same_session_label_twice_is_refused(make_recorder: Callable[..., SessionRecorder]) -> None:
    make_recorder(session="02")
    with pytest.raises(ValueError, match=r"sub-01/ses-02 already exists.*resume it"):
        make_recorder(session="02")


@pytest.mark.parametrize(("value", "expected"), [("sub-01", "01"), ("07", "07"), ("pilotA", "pilotA")])
def test_bids_labels_are_normalised(value: str, expected: str) -> None:
    assert bids_label(value, "sub") == expected


@pytest.mark.parametrize("value", ["sub_01", "01 ", "", "sub-0-1"])
def test_non_bids_labels_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a BIDS label"):
        bids_label(value, "sub")
