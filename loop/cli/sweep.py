"""``cortexloop sweep``: a protocol sweep, simulated sessions settings x seeds, on a Dask cluster."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from db.base import ConfigError, CortexloopError
from loop.cli._common import console

__all__ = ["sweep"]


class SchedulerError(CortexloopError, ConnectionError):
    """The Dask scheduler named by --scheduler cannot be reached."""


def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="The sweep file (docs/sweep.md).", show_default=False)],
    out: Annotated[
        Path,
        typer.Option("--out", help="Where the settings' session files, reports and the sweep report go."),
    ] = Path("sweep-output"),
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="A running Dask scheduler (tcp://host:8786): a lab's workstations or cluster."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Workers of a cluster on this machine, one session each (default: one per core).",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="The sweep database: a SQLite path or an SQLAlchemy URL (default: OUT/cortexloop.sqlite).",
        ),
    ] = None,
) -> None:
    """Run every setting of a sweep file on every seed, each a simulated session, on Dask.

    Each session runs on a worker, in one process, on that worker's own disk; its records go into
    the sweep database as it ends. Run the same command again to continue a sweep that stopped: what
    is complete is not run again. A setting whose session file is wrong is reported once, by name.
    """
    from db import open_database
    from loop.sweep.plan import load_sweep
    from loop.sweep.report import write_sweep_report
    from loop.sweep.runner import run_sweep

    if scheduler is not None and workers is not None:
        raise ConfigError("give --scheduler (a cluster that runs already) or --workers (one here), not both")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be 1 or more, not {workers}")
    plan = load_sweep(sweep_file)
    for setting, problem in plan.problems.items():
        console.print(f"[red]setting {setting!r} is not run[/]: {problem}", markup=True, highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    target = db or str(out / "cortexloop.sqlite")
    with open_database(target, create=True) as database:
        console.print(
            f"sweep {plan.name}: {len(plan.settings)} setting(s) x {len(plan.seeds)} seed(s); "
            f"records into {database.name}"
        )
        try:
            with _Bar() as bar:
                outcome = run_sweep(
                    plan, database, lambda: _Cluster(scheduler, workers), out=out, progress=bar.update
                )
        except KeyboardInterrupt:
            console.print(
                f"sweep {plan.name} stopped; every session stored so far is in {database.name}: run the "
                "same command again to continue it"
            )
            raise typer.Exit(130) from None
        report = write_sweep_report(database, plan.name, out / "report.html", sessions=out / "sessions")
        _print_ranking(database, plan.name)
    stored = outcome.complete_before + outcome.stored
    if outcome.stored == 0 and outcome.complete:
        console.print(
            f"sweep {plan.name} is complete: all {outcome.total} sessions were in {database.name} "
            "already; nothing ran"
        )
    else:
        console.print(
            f"sweep {plan.name}: {outcome.stored} session(s) run and stored in {outcome.seconds:.0f} s; "
            f"{stored} of {outcome.total} complete"
        )
    console.print(f"the sweep report is {report}")
    for setting, problem in outcome.problems.items():
        if setting not in plan.problems:  # found by a worker; those of the file were said before it ran
            console.print(f"setting {setting!r} failed with a configuration error: {problem}", markup=False)
    for (setting, seed), error in outcome.failed.items():
        console.print(f"setting {setting!r}, seed {seed} failed: {error}", markup=False)
    if not outcome.complete:
        console.print(
            f"{outcome.total - stored} session(s) not complete: run the same command again to retry "
            "them (a setting with a configuration error needs its fix first)"
        )
        raise typer.Exit(1)


class _Cluster:
    """A Dask client: of the scheduler at ``address``, or of a cluster started here and stopped after."""

    def __init__(self, address: str | None, workers: int | None) -> None:
        self.address, self.workers = address, workers
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        # Dask narrates its cluster's every start and stop at INFO (set when it is imported, so here).
        logging.getLogger("distributed").setLevel(max(logging.getLogger().level, logging.WARNING))

        if self.address is not None:
            try:
                self.client = Client(self.address, timeout="5s")
            except (OSError, TimeoutError) as exc:
                raise SchedulerError(
                    f"cannot reach the Dask scheduler at {self.address} ({exc}); start one with "
                    "`dask scheduler` "
                    "and workers with `dask worker ADDRESS`, or run here with --workers N"
                ) from None
            console.print(f"running on {_describe(self.client)}")
            return self.client
        n = self.workers or max(1, os.cpu_count() or 1)
        self.cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)
        console.print(f"running on {_describe(self.client)}")
        return self.client

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _describe(client: Any) -> str:
    workers = client.scheduler_info().get("workers", {})
    return f"{len(workers)} Dask worker(s) at {client.scheduler.address}"


class _Bar:
    """The sweep's progress: sessions stored of those to run, running and failed now, time left."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("sessions"),
            BarColumn(),
            TextColumn(
                "{task.completed}/{task.total} done, {task.fields[running]} running, "
                "{task.fields[failed]} failed"
            ),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, state: Any) -> None:
        if self.task is None:
            self.task = self.progress.add_task("sessions", total=state.total, running=0, failed=0)
        self.progress.update(self.task, completed=state.done, running=state.running, failed=state.failed)


def _print_ranking(database: Any, name: str) -> None:
    from loop.report import ci_text
    from loop.sweep.report import setting_figures

    ranked = setting_figures(database, name)
    if not any(f.rows for f in ranked):
        return
    table = Table(title=f"sweep {name}: settings ranked (last round, mean [95% CI] over seeds)")
    for column in (
        "setting",
        "seeds",
        "true / pool's best",
        "ROIs above the pool's best",
        "measured above best",
    ):
        table.add_column(column)
    for f in ranked:
        table.add_row(
            f.setting,
            str(len(f.seeds)),
            ci_text(f.summary("mean_vs_pool_best")),
            ci_text(f.summary("above_pool_best")),
            ci_text(f.summary("measured_above_best")),
        )
    console.print(table)
