"""db.open: the session database as DataFrames, row for row what the database holds.

The same recording is read on SQLite and, when CORTEXLOOP_TEST_POSTGRES_URL
names a scratch database (.ci/run starts one), on PostgreSQL; each table is
checked against a plain SQL join written out here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

import db
from db import (
    Database,
    ResponseMethod,
    RoiSpec,
    RunKind,
    SessionKind,
    SessionRecorder,
    StimulusKind,
    open_database,
)

URL = os.environ.get("CORTEXLOOP_TEST_POSTGRES_URL")

# The five-table join a lab programmer would otherwise write.
RESPONSES_SQL = """
SELECT sub.label, ses.label, r."index", p.trial_index, st.path, st.kind, p.condition, p.target_roi,
       roi.name, m.method, m.value, m.stderr
FROM measured_responses m
JOIN presentations p ON p.id = m.presentation_id
JOIN runs r ON r.id = p.run_id
JOIN stimuli st ON st.id = p.stimulus_id
JOIN rois roi ON roi.id = m.roi_id
JOIN sessions ses ON ses.id = r.session_id
JOIN subjects sub ON sub.id = ses.subject_id
WHERE ses.id = :session
ORDER BY r."index", p.trial_index, roi.id, m.method
"""


def _record(database: Database, subject: str) -> int:
    """Two runs of three trials; two trials of each measured in two ROIs by two methods."""
    recorder = SessionRecorder.start(
        database,
        subject=subject,
        session="01",
        kind=SessionKind.SCANNER,
        rois=[RoiSpec(name="V1"), RoiSpec(name="FFA")],
    )
    face = recorder.record_stimulus(sha256="a" * 64, path="natural/face.png", kind=StimulusKind.NATURAL)
    made = recorder.record_stimulus(
        sha256=f"{subject[-1]}" * 64, path=f"round01/FFA_{subject}.png", kind=StimulusKind.SYNTHESIZED,
        target_roi="FFA",
    )  # fmt: skip
    for number in (1, 2):
        run_id = recorder.start_run(kind=RunKind.TRAINING if number == 1 else RunKind.CLOSED_LOOP, tr_s=2.0)
        trials = [
            {"stimulus_id": made if k == 1 else face, "trial_index": k,
             "condition": "synthesized" if k == 1 else "natural", "target_roi": "FFA" if k == 1 else None,
             "planned_onset_s": 4.0 * k, "planned_duration_s": 1.0}
            for k in range(3)
        ]  # fmt: skip
        recorder.record_presentations(run_id, trials)
        with database.reader() as s:
            ids = s.execute(
                text("SELECT id FROM presentations WHERE run_id = :run ORDER BY trial_index"), {"run": run_id}
            ).scalars().all()  # fmt: skip
        for k, presentation in enumerate(ids[:2]):  # the third trial is not measured yet
            for method in (ResponseMethod.LSS, ResponseMethod.PROVISIONAL):
                recorder.record_responses(presentation, method, {"V1": number + k / 10, "FFA": -k - number})
        recorder.end_run(run_id)
    recorder.end_session()
    return recorder.session_id


def _check(target: str | Path) -> None:
    with open_database(target, create=True) as database:
        ids = [_record(database, subject) for subject in ("01", "02")]
    with db.open(target) as study:
        assert study.sessions()[["subject", "session"]].values.tolist() == [["01", "01"], ["02", "01"]]
        for session_id in ids:
            frames = study.session(session_id)
            got = frames.responses()
            with study.database.reader() as s:
                expected = [tuple(row) for row in s.execute(text(RESPONSES_SQL), {"session": session_id})]
            rows = [
                tuple(None if v != v else v for v in row) for row in got.itertuples(index=False)
            ]  # NaN: NULL
            assert rows == expected
            assert len(got) == 2 * 2 * 2 * 2  # runs x measured trials x ROIs x methods
            lss = frames.responses(method="lss")
            assert set(lss["method"]) == {"lss"}
            assert len(lss) == len(got) // 2
            trials = frames.trials()
            assert len(trials) == 6
            assert trials["target_roi"].tolist().count("FFA") == 2
            runs = frames.runs()
            assert runs[["run", "kind", "status"]].values.tolist() == [
                [1, "training", "completed"],
                [2, "closed_loop", "completed"],
            ]
        everyone = study.responses()
        assert len(everyone) == 2 * len(got)
        assert set(everyone["subject"]) == {"01", "02"}
        # Tidy: the mean response per image and ROI is one groupby away.
        means = everyone[everyone["method"] == "lss"].groupby(["stimulus", "roi"])["value"].mean()
        assert means.loc[("natural/face.png", "V1")] == pytest.approx(1.5)


def test_the_tables_equal_what_sqlite_holds(tmp_path: Path) -> None:
    _check(tmp_path / "study.sqlite")


@pytest.mark.postgres
@pytest.mark.skipif(URL is None, reason="set CORTEXLOOP_TEST_POSTGRES_URL to a scratch PostgreSQL database")
def test_the_tables_equal_what_postgres_holds(pg_url: str) -> None:
    _check(pg_url)
