"""How a sweep scales: sessions per hour in a plain loop, and on one and two Dask workers.

The same short simulated sessions (one setting, ``--sessions`` seeds) run
three ways, side by side in this process: a plain loop here (each session
run, its records copied into a database, its figures computed: what a
sweep does for a session, without Dask), then ``run_sweep`` on a
LocalCluster of one worker and of two. Printed: sessions per hour for each,
the scheduling overhead per session of one worker against the plain loop,
and the speed-up of two workers over one.

    .venv/bin/python benchmarks/sweep_scaling.py [--sessions 4] [--config SESSION.toml]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from db import Database, open_database
from db.sweeps import record_sweep, store_session, sweep_sessions
from loop.sweep.efficacy import pool_truth, session_figures
from loop.sweep.plan import SweepPlan, load_sweep
from loop.sweep.runner import run_sweep
from loop.sweep.worker import run_session

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
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=4, help="seeds of the one setting")
    parser.add_argument("--config", type=Path, help="the session file (default: a short session)")
    parser.add_argument("--pool", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        base = args.config.resolve() if args.config else folder / "base.toml"
        if not args.config:
            base.write_text(SHORT)
        wall, start, inside = {}, {}, {}
        for label, workers in (("plain loop", 0), ("1 worker", 1), ("2 workers", 2)):
            sweep = folder / f"{label.replace(' ', '-')}.toml"
            sweep.write_text(
                f'[sweep]\nname = "{sweep.stem}"\nbase = "{base}"\nseeds = {list(range(args.sessions))}\n'
                f"pool = {args.pool}\n"
            )
            plan = load_sweep(sweep)
            with open_database(folder / f"{sweep.stem}.sqlite", create=True) as database:
                started = time.perf_counter()
                clock: list[float] = []
                if workers == 0:
                    with threadpool_limits(plan.threads):  # a worker's one thread, here too
                        _plain_loop(plan, database)
                else:
                    outcome = run_sweep(
                        plan,
                        database,
                        functools.partial(_local_cluster, workers, clock),
                        out=folder / sweep.stem,
                    )
                    assert outcome.complete, outcome
                wall[label] = time.perf_counter() - started
                start[label] = clock[0] - started if clock else 0.0
                with database.reader() as s:
                    inside[label] = float(
                        np.mean([r.seconds or np.nan for r in sweep_sessions(s, plan.name)])
                    )
            print(
                f"{label:10}: {args.sessions} sessions in {wall[label]:6.1f} s "
                f"({3600 * args.sessions / wall[label]:4.0f} sessions per hour); cluster start "
                f"{start[label]:4.1f} s (processes, imports); a session took {inside[label]:5.1f} s "
                "where it ran",
                flush=True,
            )
    overhead = (wall["1 worker"] - start["1 worker"] - wall["plain loop"]) / args.sessions
    print(
        f"\nscheduling overhead per session, 1 worker against the plain loop (cluster start aside): "
        f"{overhead:+.2f} s; in all, 1 worker took {wall['1 worker'] / wall['plain loop']:.2f}x the loop's "
        "time"
    )
    print(f"2 workers over 1: {wall['1 worker'] / wall['2 workers']:.2f}x the sessions per hour")


@contextlib.contextmanager
def _local_cluster(n: int, clock: list[float]) -> Iterator[Any]:
    """A LocalCluster of ``n`` one-thread workers and its client; ``clock`` gets the time it was up."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_up)  # a fresh worker's imports, paid once per worker: counted in its start
        clock.append(time.perf_counter())
        yield client


def _warm_up() -> None:
    import loop.simulation.inprocess
    import loop.simulation.subject
    import loop.sweep.worker  # noqa: F401


def _plain_loop(plan: SweepPlan, database: Database) -> None:
    """What a sweep does for each session, in this process, without Dask."""
    torch.set_num_threads(plan.threads)
    sweep_id = record_sweep(database, plan.name, plan.text, plan.base_toml)
    pools = {}
    for task in plan.tasks():
        result = run_session(task)
        assert result.database is not None, result.error
        if task.seed not in pools:
            pools[task.seed] = pool_truth(task.seed, plan.pool)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "session.sqlite"
            path.write_bytes(result.database)
            with open_database(path) as session:
                figures = session_figures(session, task.ref, pools[task.seed])
            store_session(
                database, sweep_id, setting=task.setting, seed=task.seed, overrides={}, source=path,
                ref=task.ref, worker=result.worker, seconds=result.seconds,
                figures={"rounds": [f.to_dict() for f in figures]},
            )  # fmt: skip


if __name__ == "__main__":
    main()
