"""A killed writer loses nothing it committed; a reader can read while it writes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

WRITER = Path(__file__).with_name("writer.py")


def _start_writer(db_path: Path, n_volumes: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db_path), str(n_volumes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", f"writer did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
    return proc


def _volumes(db_path: Path) -> dict[int, list[float]]:
    """Volume index -> its ROI signal values, read with plain sqlite3."""
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute(
            "SELECT v.[index], s.value FROM volumes v LEFT JOIN roi_signals s ON s.volume_id = v.id"
        ).fetchall()
    finally:
        con.close()
    out: dict[int, list[float]] = {}
    for index, value in rows:
        out.setdefault(index, []).append(value)
    return out


@pytest.mark.parametrize("n_before_kill", [1, 17, 60])
def test_sigkill_mid_stream_keeps_exactly_the_committed_volumes(db_path: Path, n_before_kill: int) -> None:
    proc = _start_writer(db_path, 100_000)
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(n_before_kill)]
    proc.send_signal(signal.SIGKILL)  # the writer is mid-stream: it never stops by itself this soon
    proc.wait(timeout=30)
    # Lines the writer flushed before dying are commits that returned too.
    reported += [int(line) for line in proc.stdout.read().split()]
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()

    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()

    volumes = _volumes(db_path)
    # Every commit that returned is there; at most the one in flight when the
    # kill landed may also be there (its commit finished, its report did not).
    assert set(reported) <= set(volumes)
    extra = set(volumes) - set(reported)
    assert extra <= {max(reported) + 1}, f"volumes nobody committed: {sorted(extra)}"
    # No volume is half-written: each has all 20 ROI signals, with its own values.
    for index, values in volumes.items():
        assert sorted(values) == [float(index * 100 + j) for j in range(20)]


def test_reader_queries_while_writer_commits(db_path: Path) -> None:
    n_volumes = 300
    proc = _start_writer(db_path, n_volumes)
    counts = []
    try:
        con = sqlite3.connect(db_path, timeout=10)
        while proc.poll() is None:
            # One statement, one snapshot: a reader sees whole volumes only.
            n, n_signals = con.execute(
                "SELECT (SELECT count(*) FROM volumes), (SELECT count(*) FROM roi_signals)"
            ).fetchone()
            assert n_signals == 20 * n
            counts.append(n)
            time.sleep(0.005)
        con.close()
    finally:
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert counts == sorted(counts), "a reader saw the volume count go backwards"
    assert len(set(counts)) > 3, f"the reader never overlapped the writer: {counts[:10]}"
    assert len(_volumes(db_path)) == n_volumes
