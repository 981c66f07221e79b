"""The controller's rules for what goes wrong, on a small session acquired in this process.

Each test runs the real controller on a short training run of the virtual
subject (no rounds), through an acquisition that misbehaves the way the
network can: a volume that never comes, a presenter that gives up.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from db import open_database
from db.models import VolumeStatus
from loop.acquisition import AcquisitionError, InProcessAcquisition, RunSink
from loop.config import SessionConfig
from loop.session import Controller
from scanner_bridge.simulate.scanner import SimulatedScanner
from scanner_bridge.simulate.subject import SubjectConfig, VirtualSubject
from scanner_bridge.volume import Volume
from stimulus.present import RunPlan, VirtualClock

pytestmark = pytest.mark.timeout(300)


def small_config(out: Path) -> SessionConfig:
    c = SessionConfig()
    return dataclasses.replace(
        c,
        session=dataclasses.replace(c.session, output=str(out), database=str(out / "db.sqlite")),
        training=dataclasses.replace(c.training, images=12, repeated=4, repeats=2, lead_out_s=12.0),
        rounds=dataclasses.replace(c.rounds, count=0),
        model=dataclasses.replace(c.model, budget=100),
    )


class Dropping(InProcessAcquisition):
    """Loses one volume on the way, as a network can; or delivers it late, after ``late_after``."""

    def __init__(self, *args: Any, drop: int, late_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop, self.late_after = drop, late_after

    def acquire(self, plan: RunPlan, number: int, sink: RunSink, *, resume: bool = False) -> dict[str, Any]:
        drop, late_after = self.drop, self.late_after
        held: list[Volume | None] = []

        class Lossy:
            def volume(self, index: int, status: VolumeStatus, volume: Volume | None) -> None:
                if index == drop:
                    held.append(volume)
                    sink.volume(index, VolumeStatus.MISSING, None)
                    return
                sink.volume(index, status, volume)
                if index == late_after:
                    sink.volume(drop, VolumeStatus.LATE, held[0])

            def onset(self, trial: int, onset_s: float, duration_s: float | None) -> None:
                sink.onset(trial, onset_s, duration_s)

            def event(
                self, level: str, code: str, message: str, details: dict[str, Any] | None = None
            ) -> None:
                sink.event(level, code, message, details)

        return super().acquire(plan, number, Lossy(), resume=resume)


class GivingUp(InProcessAcquisition):
    """A presenter that reports its first trigger never came, after some volumes were taken."""

    def acquire(self, plan: RunPlan, number: int, sink: RunSink, *, resume: bool = False) -> dict[str, Any]:
        record = self.scanner.run(run=number, plan=plan)
        from scanner_bridge.readers import read_part

        for index in range(5):
            part = read_part(self.export_dir / record.files[index][0])
            sink.volume(
                index, VolumeStatus.OK, Volume(index=index, data=part.data, affine=part.affine, series="x")
            )
        raise AcquisitionError(f"the presenter could not run {plan.run_id}: no trigger within 60 s")


def controller(tmp_path: Path, kind: type[InProcessAcquisition], **kwargs: Any) -> tuple[Controller, Path]:
    out = tmp_path / "session"
    config = small_config(out)
    subject = VirtualSubject(SubjectConfig.from_spec("default", seed=4))
    truth = out / "export-truth"
    scanner = SimulatedScanner(
        subject, out / "export", tr_s=2.0, clock=VirtualClock(), stimulus_dir=out / "stimuli", truth_dir=truth
    )
    acquisition = kind(scanner, export_dir=out / "export", **kwargs)
    database = open_database(out / "db.sqlite", create=True)
    atlas = (truth / "rois.nii.gz", truth / "rois.tsv")
    return Controller(config, database, acquisition, atlas=atlas, truth_dir=truth), out


def test_a_missing_volume_is_recorded_as_missing_logged_and_left_out_of_the_fit(tmp_path: Path) -> None:
    session, out = controller(tmp_path, Dropping, drop=7)
    session.run()
    with sqlite3.connect(out / "db.sqlite") as db:
        statuses = dict(db.execute('SELECT "index", status FROM volumes'))
        signals = db.execute(
            'SELECT COUNT(*) FROM roi_signals s JOIN volumes v ON v.id = s.volume_id WHERE v."index" = 7'
        ).fetchone()[0]
        events = db.execute(
            "SELECT level, code, message FROM events WHERE code = 'volume.missing'"
        ).fetchall()
        responses = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT presentation_id) FROM measured_responses"
        ).fetchone()
        status = db.execute("SELECT status FROM sessions").fetchone()[0]
    assert statuses[7] == "missing"
    assert signals == 0
    assert sum(s == "ok" for s in statuses.values()) == len(statuses) - 1
    assert events == [("warning", "volume.missing", "training run: volume 7 never came; left out of the fit")]
    assert responses == (6 * 16, 16)  # every trial still has a response for every ROI
    assert status == "completed"


def test_a_run_that_cannot_go_on_stays_open_and_a_resumed_session_completes_it(tmp_path: Path) -> None:
    session, out = controller(tmp_path, GivingUp)
    with pytest.raises(AcquisitionError, match=r"no trigger within 60 s.*--resume"):
        session.run()
    with sqlite3.connect(out / "db.sqlite") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("running",)]
        assert db.execute("SELECT COUNT(*) FROM volumes").fetchone()[0] == 5
        stopped = db.execute("SELECT level, message FROM events WHERE code = 'session.stopped'").fetchall()
    assert stopped[0][0] == "error"
    assert "no trigger within 60 s" in stopped[0][1]
    # Started again with resume: the same run is picked up, its first 5 volumes not recorded twice.
    again, _ = controller(tmp_path, InProcessAcquisition)
    again.run(resume=True)
    with sqlite3.connect(out / "db.sqlite") as db:
        runs = db.execute("SELECT id, n_volumes_planned, status FROM runs").fetchall()
        indices = [i for (i,) in db.execute('SELECT "index" FROM volumes ORDER BY "index"')]
        codes = [c for (c,) in db.execute("SELECT code FROM events ORDER BY id")]
    assert len(runs) == 1
    assert runs[0][2] == "completed"
    assert indices == list(range(runs[0][1]))
    assert "run.resumed" in codes
    assert codes[-1] == "session.completed"


def test_a_volume_declared_missing_that_comes_late_completes_its_record(tmp_path: Path) -> None:
    session, out = controller(tmp_path, Dropping, drop=7, late_after=12)
    session.run()
    with sqlite3.connect(out / "db.sqlite") as db:
        rows = db.execute('SELECT status FROM volumes WHERE "index" = 7').fetchall()
        signals = db.execute(
            'SELECT COUNT(*) FROM roi_signals s JOIN volumes v ON v.id = s.volume_id WHERE v."index" = 7'
        ).fetchone()[0]
        codes = [c for (c,) in db.execute("SELECT code FROM events ORDER BY id")]
    assert rows == [("late",)]  # one record, completed
    assert signals == 6
    assert codes.index("volume.missing") < codes.index("volume.late")
    assert codes[-1] == "session.completed"
