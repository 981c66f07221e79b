"""`cortexloop session run` as an operator meets it: what cannot run is said before any wait."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from db import open_database
from loop.rehearsal import record_rehearsal

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def session_file(db_path: Path, tmp_path: Path) -> Path:
    """A session file naming a completed session (the rehearsal's), with no presenter or bridge running."""
    with open_database(db_path, create=True) as database:
        record_rehearsal(database, tmp_path / "stimuli")
    path = tmp_path / "session.toml"
    path.write_text(
        f'[session]\nsubject = "sub-rehearsal"\nsession = "ses-01"\ndatabase = "{db_path}"\n'
        '[scanner]\npresenter = "tcp://127.0.0.1:1"\nbridge = "tcp://127.0.0.1:2"\nkey_file = "k.key"\n'
    )
    return path


def _refused(result: subprocess.CompletedProcess[str], elapsed: float) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert elapsed < 25, "refused only after waiting on the presenter (30 s)"
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cortexloop: error: ")]
    return line


def test_a_completed_session_is_refused_at_once_with_its_report_command(
    cortexloop: Cli, session_file: Path, db_path: Path
) -> None:
    assert cortexloop("bridge", "keygen", session_file.parent / "k.key").returncode == 0
    started = time.monotonic()
    line = _refused(
        cortexloop("session", "run", "--config", session_file, "--resume"), time.monotonic() - started
    )
    assert "session sub-rehearsal/ses-01 is completed; nothing is left to run" in line
    assert f"`cortexloop report sub-rehearsal/ses-01 --db {db_path} --out report.html`" in line


def test_starting_a_recorded_session_again_names_the_resume_command(
    cortexloop: Cli, session_file: Path
) -> None:
    assert cortexloop("bridge", "keygen", session_file.parent / "k.key").returncode == 0
    started = time.monotonic()
    line = _refused(cortexloop("session", "run", "--config", session_file), time.monotonic() - started)
    assert "session sub-rehearsal/ses-01 is in the database already (completed)" in line
    assert f"`cortexloop session run --config {session_file} --resume`" in line
    other = session_file.with_name("other.toml")
    other.write_text(session_file.read_text().replace('"ses-01"', '"ses-02"'))
    started = time.monotonic()
    line = _refused(cortexloop("session", "run", "--config", other, "--resume"), time.monotonic() - started)
    assert "nothing to resume: the database has no session sub-rehearsal/ses-02" in line
