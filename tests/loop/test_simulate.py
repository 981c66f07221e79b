"""``cortexloop simulate`` as the README runs it: every part a process, talking over ZeroMQ.

A short session (small training run, two rounds of few, quickly synthesized
images) keeps this to a couple of minutes; the science of the default
session is tested in test_session.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scanner_bridge.writers import nifti_bytes

SHORT = """
[training]
images = 30
repeated = 6
repeats = 2
lead_out_s = 12.0

[rounds]
count = 2
targets = ["FFA", "PPA"]
targets_per_round = 2
images_per_target = 2

[synthesis]
steps = 8
later_steps = 8
candidates = 100

[model]
budget = 200

[simulation]
speed = 20.0
"""


def start_simulation(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    config = tmp_path / "short.toml"
    config.write_text(SHORT)
    out = tmp_path / "session"
    process = subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--config", str(config),
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return process, out


def volumes_recorded(database: Path, run_index: int) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=1) as db:
            row = db.execute(
                'SELECT COUNT(*) FROM volumes v JOIN runs r ON r.id = v.run_id WHERE r."index" = ?',
                (run_index,),
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(row[0])


def check_every_volume_recorded_once(
    database: Path, statuses: frozenset[str] = frozenset({"ok"})
) -> list[tuple[int, str]]:
    with sqlite3.connect(database) as db:
        runs = db.execute(
            'SELECT id, "index", n_volumes_planned, status FROM runs ORDER BY "index"'
        ).fetchall()
        for run_id, index, planned, status in runs:
            assert status == "completed", (index, status)
            rows = db.execute(
                'SELECT "index", status FROM volumes WHERE run_id = ? ORDER BY "index"', (run_id,)
            )
            recorded = rows.fetchall()
            assert [i for i, _ in recorded] == list(range(planned)), index  # none lost, none twice
            assert {s for _, s in recorded} <= statuses, index
        return db.execute("SELECT code, message FROM events ORDER BY id").fetchall()


def run_status(database: Path, run_index: int) -> str | None:
    try:
        with sqlite3.connect(database, timeout=1) as db:
            row = db.execute('SELECT status FROM runs WHERE "index" = ?', (run_index,)).fetchone()
    except sqlite3.OperationalError:  # no database or schema yet
        return None
    return None if row is None else str(row[0])


def write_localizer(export: Path) -> None:
    """A localizer between two runs, as an operator runs one: three volumes of another grid."""
    affine = np.diag([4.0, 4.0, 6.0, 1.0])
    for i in range(3):
        data = np.full((32, 32, 10), 500 + i, np.int16)
        (export / f"localizer_{i:05d}.nii").write_bytes(nifti_bytes(data, affine, tr_s=2.0))


@pytest.mark.timeout(400)
def test_a_session_across_processes_survives_its_controller_killed_mid_run(tmp_path: Path) -> None:
    """Also: one bridge serves every run, and a localizer scanned between two runs is in none of them."""
    process, out = start_simulation(tmp_path)
    database = out / "cortexloop.sqlite"
    try:
        deadline = time.monotonic() + 300
        while run_status(database, 1) != "completed":  # the training run is over, round 1's not begun
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the training run never ended"
            time.sleep(0.05)
        write_localizer(out / "export")
        bridge = json.loads((out / "services.json").read_text())["bridge"]
        while volumes_recorded(database, 2) < 8:  # well into round 1's run
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "round 1 never started"
            time.sleep(0.05)
        controller = json.loads((out / "services.json").read_text())["controller"]
        os.kill(controller, signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, output[-4000:]
    assert "the controller was killed (signal 9); resuming it" in output
    # Every volume of every run recorded exactly once, the interrupted run's included.
    events = check_every_volume_recorded_once(database)
    codes = [code for code, _ in events]
    # One bridge for the whole session: never restarted, no run told to ignore another's files.
    assert json.loads((out / "services.json").read_text())["bridge"] == bridge
    assert "ignoring" not in output
    bridge_log = " ".join((out / "logs" / "bridge.log").read_text().split())
    assert bridge_log.count("series localizer_#####.nii began") == 1
    runs = [message for code, message in events if code == "run.series"]
    assert runs[:2] == ["run 1 is series run01_vol_#####.nii", "run 2 is series run02_vol_#####.nii"]
    assert "run 3 is series run03_vol_#####.nii" in runs
    assert "session.resumed" in codes
    assert "run.resumed" in codes
    assert events[-1] == ("session.completed", "session completed: 2 round(s)")
    # What the operator sees: the round tables, the outcome, the report; every part's log.
    assert "round 1: mean measured drive" in output
    assert "round 2: mean measured drive" in output
    assert "of 2 target ROIs driven above non-target images" in output
    assert (out / "report.html").stat().st_size > 10_000
    services = json.loads((out / "services.json").read_text())
    assert set(services) >= {"presenter", "scanner", "bridge", "controller"}
    assert {p.name for p in (out / "logs").iterdir()} == {
        f"{n}.log" for n in ("presenter", "scanner", "bridge", "controller")
    }
    # The virtual subject saw what the presenter showed, when it showed it: recorded onsets are the truth's.
    with sqlite3.connect(database) as db:
        for run in (1, 2, 3):
            recorded = db.execute(
                "SELECT p.actual_onset_s FROM presentations p JOIN runs r ON r.id = p.run_id "
                'WHERE r."index" = ? ORDER BY p.trial_index',
                (run,),
            ).fetchall()
            truth = json.loads((out / "export-truth" / f"run{run:02d}_truth.json").read_text())
            assert [onset for (onset,) in recorded] == [p["onset_s"] for p in truth["presentations"]]
    # The presenter wrote each run's BIDS events (a run picked up after the kill included).
    assert len(list((out / "events").glob("*_events.tsv"))) == 3


@pytest.mark.timeout(400)
def test_a_session_in_one_process_killed_mid_round_continues_with_resume_where_it_was_moved(
    tmp_path: Path,
) -> None:
    config = tmp_path / "short.toml"
    config.write_text(SHORT)
    out = tmp_path / "session"
    command = [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--in-process"]
    process = subprocess.Popen(
        [*command, "--config", str(config), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    database = out / "cortexloop.sqlite"
    try:
        deadline = time.monotonic() + 300
        while volumes_recorded(database, 2) < 1:  # round 1's run has begun
            assert process.poll() is None, "the session ended before round 1's run began"
            assert time.monotonic() < deadline, "round 1 never started"
            time.sleep(0.02)
        process.kill()  # the whole session: its one process
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    with sqlite3.connect(database) as db:
        left = db.execute("SELECT code FROM events ORDER BY id").fetchall()
    # Carried to another machine's disk, it continues there, into its own copy of the database.
    moved = tmp_path / "elsewhere" / "session"
    shutil.copytree(out, moved)
    resumed = subprocess.run(
        [*command, "--resume", "--out", str(moved)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "session resumed: 1 run(s) and 0 round(s) complete" in resumed.stdout
    events = check_every_volume_recorded_once(moved / "cortexloop.sqlite")
    assert events[-1] == ("session.completed", "session completed: 2 round(s)")
    assert (moved / "report.html").is_file()
    assert not (out / "report.html").exists()
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT code FROM events ORDER BY id").fetchall() == left  # the original untouched


@pytest.mark.timeout(600)
def test_a_killed_bridge_is_restarted_and_a_killed_presenter_stops_the_session_until_resumed(
    tmp_path: Path,
) -> None:
    # Probe case 8: after a bridge or a presenter was killed, `cortexloop simulate` pointed at an empty log
    # and could not go on; four processes had to be restarted by hand.
    process, out = start_simulation(tmp_path)
    database = out / "cortexloop.sqlite"

    def wait_for(volumes: int) -> None:
        deadline = time.monotonic() + 300
        while volumes_recorded(database, 2) < volumes:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, f"round 1's run never reached {volumes} volumes"
            time.sleep(0.05)

    try:
        wait_for(4)
        os.kill(json.loads((out / "services.json").read_text())["bridge"], signal.SIGKILL)
        wait_for(10)  # the restarted bridge read the run's files again and goes on
        os.kill(json.loads((out / "services.json").read_text())["presenter"], signal.SIGKILL)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, output[-4000:]
    assert "the bridge was killed (signal 9); resuming it" in output
    assert "the presenter was killed (signal 9)" in output
    assert f"cortexloop simulate --resume --out {out.resolve()}" in " ".join(output.split())
    command = [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--resume"]
    resumed = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "set aside in" in resumed.stdout
    assert list((out / "export" / "interrupted-1").glob("run02_vol_*.nii"))
    # Every run complete, its volumes recorded once: the interrupted run from its new acquisition only
    # (volumes the restarted bridge sent after their deadline are late, as they should be).
    codes = [code for code, _ in check_every_volume_recorded_once(database, frozenset({"ok", "late"}))]
    assert "run.restarted" in codes
    assert codes[-1] == "session.completed"
