"""The controller's rules for what goes wrong, on a small session acquired in this process.

Each test runs the real controller on a short training run of the virtual
subject (no rounds), through an acquisition that misbehaves the way the
network can: a volume that never comes, a presenter that gives up.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from db import open_database
from db.base import VolumeStatus
from db.export import export_session
from db.queries import run_volumes, session_info, session_runs
from loop.acquisition import InProcessAcquisition, RunSink
from loop.analysis.roi import RoiSignals
from loop.config import SessionConfig
from loop.errors import AcquisitionError, SessionError
from loop.quality import run_quality
from loop.recording import SessionReference
from loop.replay import session_atlas
from loop.simulation.bold import BoldRun
from loop.simulation.subject import SubjectConfig, VirtualSubject
from scanner_bridge.readers import VolumeFiles, read_volume
from scanner_bridge.volume import Volume
from stimulus.present import RunLog, RunPlan, write_bids_events
from tests.loop.conftest import controller

pytestmark = pytest.mark.timeout(300)


class Dropping(InProcessAcquisition):
    """Loses one volume on the way, as a network can; or delivers it late, after ``late_after``."""

    def __init__(self, *args: Any, drop: int, late_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop, self.late_after = drop, late_after

    def acquire(self, plan: RunPlan, number: int, sink: RunSink, **options: Any) -> RunLog:
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

        return super().acquire(plan, number, Lossy(), **options)


class GivingUp(InProcessAcquisition):
    """A presenter that reports its first trigger never came, after some volumes were taken."""

    def acquire(self, plan: RunPlan, number: int, sink: RunSink, **options: Any) -> RunLog:
        record = self.scanner.run(run=number, plan=plan)
        for index in range(5):
            part = read_volume([self.export_dir / name for name in record.files[index]])
            sink.volume(index, VolumeStatus.OK, part.as_volume(index, {}))
        raise AcquisitionError(f"the presenter could not run {plan.run_id}: no trigger within 60 s")


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
        machines = db.execute(
            "SELECT code, details FROM events WHERE code IN ('session.started', 'session.resumed') "
            "ORDER BY id"
        ).fetchall()
    assert len(runs) == 1
    assert runs[0][2] == "completed"
    assert indices == list(range(runs[0][1]))
    assert "run.resumed" in codes
    assert codes[-1] == "session.completed"
    # Where it began and where it was resumed: each records the machine (a resumed session may round apart).
    assert [code for code, _ in machines] == ["session.started", "session.resumed"]
    for _, details in machines:
        recorded = json.loads(details)["environment"]
        assert recorded["torch"] == version("torch")
        assert recorded["numpy"] == np.__version__
        assert recorded["torch_kernels"] == torch.backends.cpu.get_cpu_capability()


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


class Watching(InProcessAcquisition):
    """Notes which series the controller tells it to refuse for each run, and what the presenter logged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[int, set[str]] = {}
        self.presented: dict[int, tuple[RunPlan, RunLog]] = {}

    def acquire(self, plan: RunPlan, number: int, sink: RunSink, **options: Any) -> RunLog:
        self.refused[number] = set(options["series"].exclude)
        log = super().acquire(plan, number, sink, **options)
        self.presented[number] = (plan, log)
        return log


def test_each_run_refuses_the_series_of_the_runs_recorded_before_it(tmp_path: Path) -> None:
    """What a resumed controller relies on: the series come from the database, not from memory.

    Also: on a subject's second day every run is placed against the first day's reference volume; the
    session file's attention task reaches every plan, and its score every run's record (the
    virtual subject never presses a key: a warning); the export's events files hold the rows the
    presenter's hold, fixation changes included, written by the one events writer.
    """

    def one_quick_round(c: SessionConfig) -> SessionConfig:
        rounds = dataclasses.replace(c.rounds, count=1, targets=("FFA", "PPA"), targets_per_round=2)
        return dataclasses.replace(
            c,
            rounds=dataclasses.replace(rounds, images_per_target=1),
            synthesis=dataclasses.replace(c.synthesis, steps=2),
            fixation=dataclasses.replace(c.fixation, task=True, changes_per_minute=12.0),
        )

    # Day 2 of a subject: its head 4.5 mm from day 1's, and moved again after the break between runs.
    subject = VirtualSubject(
        SubjectConfig.from_spec("default", seed=4, run_shift_mm=2.0, head_mm=(3.0, -3.0, 1.5))
    )
    day_one = tmp_path / "day1" / "reference.npz"  # day 1's first volume, the head where it began
    SessionReference(day_one, [3.0, 3.0, 3.0]).position(
        BoldRun(subject, 2.0, 1, seed=99).volume(), subject.affine
    )

    def on_day_two(c: SessionConfig) -> SessionConfig:
        c = one_quick_round(c)
        return dataclasses.replace(c, atlas=dataclasses.replace(c.atlas, reference=str(day_one)))

    session, out = controller(tmp_path, Watching, adjust=on_day_two, subject=subject)
    session.run()
    assert isinstance(session.acquisition, Watching)
    assert session.acquisition.refused == {1: set(), 2: {"run01_vol_#####.nii"}}
    # Each run was found where the head was against day 1, and its ROIs followed it there.
    with sqlite3.connect(out / "db.sqlite") as db:
        placed = db.execute(
            'SELECT r."index", e.details FROM events e JOIN runs r ON r.id = e.run_id '
            "WHERE e.code = 'run.position' ORDER BY r.\"index\""
        ).fetchall()
    assert [number for number, _ in placed] == [1, 2]
    for number, details in placed:
        start = json.loads((out / "export-truth" / f"run{number:02d}_truth.json").read_text())["motion_mm"][0]
        print(
            f"run {number}: found at {json.loads(details)['translation_mm']} mm, truly {np.round(start, 3)}"
        )
        np.testing.assert_allclose(json.loads(details)["translation_mm"], start, atol=0.3)
    with sqlite3.connect(out / "db.sqlite") as db:
        rows = db.execute(
            "SELECT level, message, details FROM events WHERE code = 'run.attention'"
        ).fetchall()
    assert len(rows) == 2  # one per run
    for level, message, details in rows:
        changes = json.loads(details)["changes"]
        assert changes > 0
        assert level == "warning"
        assert f"answered 0 of {changes} fixation colour changes" in message
    with open_database(out / "db.sqlite") as database:
        export_session(database, "sub-01/ses-01", tmp_path / "bids", stimuli=out / "stimuli")
    for number, (plan, log) in session.acquisition.presented.items():
        task = "training" if number == 1 else "closedloop"
        assert plan.run_id == f"sub-01_ses-01_task-{task}_run-{number:02d}"  # the presenter's file name
        presenter, _ = write_bids_events(log, plan, tmp_path / "presenter" / f"{plan.run_id}_events.tsv")
        exported = tmp_path / "bids" / "sub-01" / "ses-01" / "func" / presenter.name
        ours, theirs = _table(presenter), _table(exported)
        assert list(ours) == list(theirs)  # the same columns
        assert sum(t == "fixation_change" for t in ours["trial_type"]) == log.attention.changes > 0
        for column in set(ours) - {"stim_kind"}:  # the presenter does not know each image's kind
            assert ours[column] == theirs[column], column
        kinds = [
            k
            for k, t in zip(theirs["stim_kind"], theirs["trial_type"], strict=True)
            if t != "fixation_change"
        ]
        assert len(kinds) == len(plan.trials)
        assert set(kinds) <= {"natural", "synthesized", "control"}  # which the export adds from the record


def _table(path: Path) -> dict[str, list[str]]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return {name: [row[k] for row in rows] for k, name in enumerate(header)}


def test_a_session_scanned_as_single_slice_dicom_records_and_exports_what_nifti_does(tmp_path: Path) -> None:
    signals, planned, bold, tsnr = {}, {}, {}, {}
    for fmt in ("nifti", "dicom"):
        session, out = controller(tmp_path / fmt, InProcessAcquisition, fmt=fmt)
        session.run()
        with sqlite3.connect(out / "db.sqlite") as db:
            signals[fmt] = db.execute(
                'SELECT v."index", s.roi_id, s.value FROM roi_signals s JOIN volumes v ON v.id = s.volume_id '
                'ORDER BY v."index", s.roi_id'
            ).fetchall()
            planned[fmt] = db.execute("SELECT n_volumes_planned FROM runs").fetchone()[0]
        with open_database(out / "db.sqlite") as database:  # as `cortexloop db export` reads volumes
            export_session(
                database, "sub-01/ses-01", tmp_path / f"bids-{fmt}", read_volume=VolumeFiles().arrays
            )
            with database.reader() as s:  # and as the report's image quality reads them
                info = session_info(s, "sub-01/ses-01")
                first = session_runs(s, info.id)[0]
                files = [(v.index, Path(v.file_path or "")) for v in run_volumes(s, first.id)]
            tsnr[fmt] = run_quality(files, 2.0, RoiSignals(session_atlas(info))).roi_tsnr
        (run,) = (tmp_path / f"bids-{fmt}").rglob("*_task-training_run-01_bold.nii.gz")
        image = nib.as_closest_canonical(nib.load(run))  # DICOM slices stack head to foot
        bold[fmt] = (image.get_fdata(), image.affine)
    # Each volume assembled from its 16 slice files is the NIfTI volume, voxel for voxel, in the same place.
    assert bold["dicom"][0].shape == bold["nifti"][0].shape
    np.testing.assert_allclose(bold["dicom"][0], bold["nifti"][0], rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(bold["dicom"][1], bold["nifti"][1], atol=1e-4)
    assert tsnr["dicom"] == pytest.approx(tsnr["nifti"], rel=1e-3)  # each ROI's median tSNR
    assert len(signals["dicom"]) == 6 * planned["dicom"]  # every volume (all its slices), every ROI
    assert np.allclose(np.array(signals["dicom"]), np.array(signals["nifti"]))


def test_a_head_the_registration_cannot_find_stops_the_session_before_its_run_is_recorded(
    tmp_path: Path,
) -> None:
    """Day 2, the head turned 45 degrees from day 1's: said, with what to check; none of the run recorded."""
    subject = VirtualSubject(SubjectConfig.from_spec("default", seed=4, head_deg=(0.0, 0.0, 45.0)))
    day_one = tmp_path / "day1" / "reference.npz"
    still = VirtualSubject(SubjectConfig.from_spec("default", seed=4))
    SessionReference(day_one, [3.0, 3.0, 3.0]).position(
        BoldRun(still, 2.0, 1, seed=99).volume(), still.affine
    )

    def on_day_two(c: SessionConfig) -> SessionConfig:
        return dataclasses.replace(c, atlas=dataclasses.replace(c.atlas, reference=str(day_one)))

    session, out = controller(tmp_path, InProcessAcquisition, adjust=on_day_two, subject=subject)
    with pytest.raises(
        SessionError, match=r"training run: registering its first volume .* did not find the head"
    ):
        session.run()
    with sqlite3.connect(out / "db.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM volumes").fetchone()[0] == 0
        stopped = db.execute("SELECT message FROM events WHERE code = 'session.stopped'").fetchall()
    assert len(stopped) == 1
    assert "Check that [atlas] reference" in stopped[0][0]
