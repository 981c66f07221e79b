"""Write path of the session database: volumes with 20 ROI signals, one commit each.

Usage: python benchmarks/db_write.py [--volumes N] [--db PATH_OR_URL]

Writes N volumes through SessionRecorder.record_volume (the code the
controller uses, one transaction per volume, as in a session) and, side by
side in this process, the same rows through plain sqlite3 with the same
pragmas (WAL, synchronous=FULL) as the reference floor. Prints volumes per
second, p50/p99/max commit time, and the ratio of the two.

A scanner delivers about one volume a second: the p99 here is the margin.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from db import RoiSpec, RunKind, SessionKind, SessionRecorder, open_database

N_ROIS = 20


def _summary(latencies_s: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "volumes_per_s": len(ordered) / sum(ordered),
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * p99,
        "max_ms": 1e3 * ordered[-1],
    }


def bench_recorder(target: str, n_volumes: int) -> dict[str, float]:
    names = [f"roi{j:02d}" for j in range(N_ROIS)]
    with open_database(target, create=True) as database:
        recorder = SessionRecorder.start(
            database, subject="bench", session="01", kind=SessionKind.SIMULATION,
            rois=[RoiSpec(name=n) for n in names],
        )  # fmt: skip
        run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=1.0)
        latencies = []
        for index in range(n_volumes):
            signals = {name: 1000.0 + index + j for j, name in enumerate(names)}
            start = time.perf_counter()
            recorder.record_volume(run_id, index, roi_signals=signals)
            latencies.append(time.perf_counter() - start)
    return _summary(latencies)


def bench_raw_sqlite(path: Path, n_volumes: int) -> dict[str, float]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("CREATE TABLE volumes (id INTEGER PRIMARY KEY, run_id INTEGER, idx INTEGER, status TEXT)")
    con.execute(
        "CREATE TABLE roi_signals (volume_id INTEGER REFERENCES volumes(id), roi_id INTEGER, value REAL, "
        "PRIMARY KEY (volume_id, roi_id))"
    )
    latencies = []
    for index in range(n_volumes):
        start = time.perf_counter()
        con.execute("BEGIN")
        volume_id = con.execute(
            "INSERT INTO volumes (run_id, idx, status) VALUES (1, ?, 'ok') RETURNING id", (index,)
        ).fetchone()[0]
        con.executemany(
            "INSERT INTO roi_signals VALUES (?, ?, ?)",
            [(volume_id, j, 1000.0 + index + j) for j in range(N_ROIS)],
        )
        con.execute("COMMIT")
        latencies.append(time.perf_counter() - start)
    con.close()
    return _summary(latencies)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--volumes", type=int, default=1000)
    parser.add_argument("--db", help="database for the recorder run (default: a temporary SQLite file)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        target = args.db or str(Path(tmp) / "bench.sqlite")
        ours = bench_recorder(target, args.volumes)
        raw = bench_raw_sqlite(Path(tmp) / "raw.sqlite", args.volumes)

    out = sys.stdout
    out.write(f"{args.volumes} volumes x {N_ROIS} ROI signals, one commit per volume\n")
    out.write(f"{'':28}{'volumes/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}\n")
    for label, r in (("cortexloop SessionRecorder", ours), ("plain sqlite3 (reference)", raw)):
        out.write(
            f"{label:28}{r['volumes_per_s']:12.0f}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}{r['max_ms']:10.2f}\n"
        )
    out.write(
        f"ratio cortexloop/reference: throughput {ours['volumes_per_s'] / raw['volumes_per_s']:.2f}x, "
        f"p99 {ours['p99_ms'] / raw['p99_ms']:.2f}x\n"
    )
    out.write(f"headroom at 1 volume/s: p99 commit is {ours['p99_ms'] / 10:.2f}% of a 1 s TR\n")


if __name__ == "__main__":
    main()
