"""`cortexloop db ...` as an operator uses it: listings, export, and bad input."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from db import open_database
from loop.rehearsal import ROIS, record_rehearsal

# The `cortexloop` fixture (tests/loop/conftest.py) runs the command in its own process.
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def recorded(db_path: Path, tmp_path: Path) -> Path:
    with open_database(db_path, create=True) as database:
        record_rehearsal(database, tmp_path / "stimuli")
    return db_path


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cortexloop: error: ")
    return lines[0]


def test_sessions_json_lists_what_was_recorded(cortexloop: Cli, recorded: Path) -> None:
    result = cortexloop("db", "sessions", "--db", recorded, "--json")
    assert result.returncode == 0, result.stderr
    (session,) = json.loads(result.stdout)
    assert session["subject"] == "rehearsal"
    assert session["status"] == "completed"
    assert session["n_volumes"] == 103  # 104 planned, one missing


def test_show_reports_counts_and_the_gap(cortexloop: Cli, recorded: Path) -> None:
    result = cortexloop("db", "show", "sub-rehearsal/ses-01", "--db", recorded, "--json")
    assert result.returncode == 0, result.stderr
    detail = json.loads(result.stdout)
    (run,) = detail["runs"]
    assert (run["n_volumes"], run["n_missing"], run["n_presentations"], run["n_shown"]) == (103, 1, 8, 8)
    assert detail["events_by_level"] == {"warning": 1}
    table = cortexloop("db", "show", "1", "--db", recorded)
    assert "103/104" in table.stdout


def test_export_writes_bids_events_and_roi_timeseries(
    cortexloop: Cli, recorded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    result = cortexloop("db", "export", "1", "--db", recorded, "--out", out)
    assert result.returncode == 0, result.stderr
    stem = "sub-rehearsal_ses-01_task-training_run-01"
    raw, derived = (
        root / "sub-rehearsal" / "ses-01" / "func" for root in (out, out / "derivatives" / "cortexloop")
    )
    with (raw / f"{stem}_events.tsv").open() as f:
        events = list(csv.DictReader(f, delimiter="\t"))
    assert len(events) == 8
    assert [float(e["planned_onset"]) for e in events] == [24.0 * i for i in range(8)]
    for e in events:  # measured flip times, a few ms after the plan
        assert 0 < float(e["onset"]) - float(e["planned_onset"]) < 0.02
        assert e["onset_measured"] == "true"
        assert len(e["stim_sha256"]) == 64
        assert (out / "stimuli" / e["stim_file"]).is_file()  # the image, beside the events that show it
    sidecar = json.loads((raw / f"{stem}_events.json").read_text())
    assert sidecar["onset"]["Units"] == "s"

    with (derived / f"{stem}_desc-roi_timeseries.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 104
    assert list(rows[0]) == ["volume", "status", *ROIS]
    assert rows[3]["status"] == "missing"
    assert rows[3]["V1"] == "n/a"
    assert 900 < float(rows[4]["V1"]) < 1100
    assert json.loads((derived / f"{stem}_desc-roi_timeseries.json").read_text())["RepetitionTime"] == 2.0
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "raw"
    assert not list(out.rglob("*.part"))


def test_db_default_comes_from_the_environment(cortexloop: Cli, recorded: Path) -> None:
    result = cortexloop("db", "sessions", "--json", env={**os.environ, "CORTEXLOOP_DB": str(recorded)})
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 1


def test_upgrade_creates_then_reports_current(cortexloop: Cli, tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    first = cortexloop("db", "upgrade", "--db", path)
    assert first.returncode == 0, first.stderr
    assert "(new database) -> " in first.stdout
    again = cortexloop("db", "upgrade", "--db", path)
    assert "already at revision" in again.stdout
    assert cortexloop("db", "sessions", "--db", path).returncode == 0


def test_missing_database(cortexloop: Cli, tmp_path: Path) -> None:
    path = tmp_path / "typo.sqlite"
    line = _one_line_error(cortexloop("db", "sessions", "--db", path))
    assert f"no session database at {path}" in line
    assert "cortexloop db upgrade" in line
    assert not path.exists(), "looking for a database must not create one"


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 500, b"subject,run\n01,1\n"])
def test_file_that_is_not_a_database(cortexloop: Cli, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(content)
    line = _one_line_error(cortexloop("db", "show", "1", "--db", path))
    assert f"{path} is not a readable SQLite database" in line
    assert path.read_bytes() == content, "the file must be left as it was"


def test_session_that_does_not_exist(cortexloop: Cli, recorded: Path) -> None:
    line = _one_line_error(cortexloop("db", "show", "sub-02/ses-01", "--db", recorded))
    assert "no session 'sub-02/ses-01'" in line
    assert "cortexloop db sessions" in line
    line = _one_line_error(cortexloop("db", "export", "42", "--db", recorded, "--out", recorded.parent / "x"))
    assert "no session '42'" in line


def test_schema_mismatch(cortexloop: Cli, recorded: Path) -> None:
    con = sqlite3.connect(recorded)
    con.execute("UPDATE alembic_version SET version_num = 'f00d'")
    con.execute(
        "INSERT INTO schema_history (revision, cortexloop_version, upgraded_at) "
        "VALUES ('f00d', '3.2.0', '2030-01-01')"
    )
    con.commit()
    con.close()
    line = _one_line_error(cortexloop("db", "sessions", "--db", recorded))
    assert "schema revision f00d, written by cortexloop 3.2.0" in line
    assert "install cortexloop 3.2.0" in line


def test_unparseable_url(cortexloop: Cli) -> None:
    line = _one_line_error(cortexloop("db", "sessions", "--db", "postgresql://host:notaport/x"))
    assert "cannot" in line
    assert "postgresql://host:notaport/x" in line


def test_names_from_the_record_are_escaped_in_the_report(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Probe case 8: ROI names from an atlas went into the HTML report as they were (stored XSS).
    from db import EventLevel, SessionRecorder
    from loop import rehearsal
    from loop.report import write_report

    hostile = '<script>alert("roi")</script>'
    monkeypatch.setattr(rehearsal, "ROIS", (hostile, *ROIS[1:]))
    with open_database(db_path, create=True) as database:
        record_rehearsal(database, tmp_path / "stimuli", subject="x")
        SessionRecorder.resume(database, "sub-x/ses-01").record_event(  # a bridge's event naming a file
            EventLevel.WARNING, "bridge", "unreadable", f"gave up on /export/{hostile}.nii"
        )
        report = write_report(database, "sub-x/ses-01", tmp_path / "report.html").read_text()
    assert "<script>" not in report
    assert "&lt;script&gt;" in report


def test_an_export_folder_that_cannot_be_made_is_named_in_one_line(cortexloop: Cli, recorded: Path) -> None:
    line = _one_line_error(cortexloop("db", "export", "1", "--db", recorded, "--out", "/proc/cortexloop-x"))
    assert "/proc/cortexloop-x" in line
    assert "choose a folder you can write" in line


def test_an_unknown_event_level_is_refused_naming_the_levels(cortexloop: Cli, recorded: Path) -> None:
    result = cortexloop("db", "events", "1", "--db", recorded, "--level", "bogus")
    assert result.returncode == 2
    assert "'bogus' is not one of" in result.stderr
    assert "'warning'" in result.stderr
    shown = cortexloop("db", "events", "1", "--db", recorded, "--level", "WARNING", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [e["level"] for e in json.loads(shown.stdout)] == ["warning"]
