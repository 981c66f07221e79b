"""Running a sweep on a Dask cluster: each session a task, each result stored as it comes.

The client (this process) plans the sweep, submits one task per setting and
seed that the sweep database does not hold complete, and stores each
session as its worker hands it back (:func:`db.sweeps.store_session`: all
its records and its row, in one transaction). Dask runs a task again
elsewhere when its worker dies (up to ``distributed.scheduler.allowed-failures``
times); a session that fails is recorded as failed, with why, and runs
again the next time the sweep is run. A setting whose session file is
wrong is reported once, by name, and none of its sessions runs (or, when
a worker finds the problem, the rest of them are cancelled).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db import Database, Status, open_database
from db.base import ConfigError, write_atomic
from db.sweeps import record_failure, record_sweep, store_session, sweep_sessions
from loop.config import to_toml
from loop.sweep.efficacy import PoolTruth, pool_truth, session_figures, summary
from loop.sweep.plan import SessionTask, Setting, SweepPlan
from loop.sweep.worker import SessionResult, run_session

__all__ = ["SweepOutcome", "SweepProgress", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepProgress:
    """Where a running sweep stands: sessions in all, stored, running on a worker now, failed."""

    total: int
    done: int
    running: int
    failed: int


@dataclass
class SweepOutcome:
    """What a run of a sweep did."""

    name: str
    total: int  # sessions the sweep file asks for (settings with a problem included)
    complete_before: int  # already in the database when this run began
    stored: int = 0  # stored by this run
    failed: dict[tuple[str, int], str] = field(default_factory=dict)  # (setting, seed): why
    problems: dict[str, str] = field(default_factory=dict)  # setting: what is wrong with its session file
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.complete_before + self.stored == self.total


def run_sweep(
    plan: SweepPlan,
    database: Database,
    connect: Callable[[], AbstractContextManager[Any]],
    *,
    out: Path,
    progress: Callable[[SweepProgress], None] | None = None,
) -> SweepOutcome:
    """Run what the sweep database lacks of ``plan`` on a cluster; store each session as it ends.

    ``connect()`` gives a Dask client (as a context manager), called only
    when there is something to run. ``out`` receives each setting's session
    file (``settings/``), each session's report
    (``sessions/SETTING/seedN/report.html``) and the files in transit; the
    records go into ``database``.
    """
    started = time.perf_counter()
    sweep_id = record_sweep(database, plan.name, plan.text, plan.base_toml)
    with database.reader() as s:
        before = {(r.setting, r.seed): r for r in sweep_sessions(s, plan.name)}
    _refuse_changed(plan, before)
    outcome = SweepOutcome(plan.name, len(plan.settings) * len(plan.seeds), 0, problems=plan.problems)
    outcome.complete_before = sum(
        1
        for s in plan.settings
        for seed in plan.seeds
        if (row := before.get((s.name, seed))) is not None and row.status == Status.COMPLETED
    )
    for setting in plan.settings:
        _write_setting(setting, out)
    todo = [
        t
        for t in plan.tasks()
        if (row := before.get((t.setting, t.seed))) is None or row.status != Status.COMPLETED
    ]
    if not todo:
        outcome.seconds = time.perf_counter() - started
        return outcome
    with connect() as client:
        _run(plan, database, client, sweep_id, todo, out, outcome, progress)
    outcome.seconds = time.perf_counter() - started
    return outcome


def _run(
    plan: SweepPlan,
    database: Database,
    client: Any,
    sweep_id: int,
    todo: list[SessionTask],
    out: Path,
    outcome: SweepOutcome,
    progress: Callable[[SweepProgress], None] | None,
) -> None:
    """Submit ``todo`` (and each seed's pool) to ``client`` and handle each result as it comes."""
    from distributed import wait

    settings = {s.name: s for s in plan.settings}
    pools = _submit_pools(client, plan, todo, settings)
    futures = {
        client.submit(
            run_session,
            task,
            key=f"sweep-{plan.name}-{settings[task.setting].slug}-seed{task.seed}-{uuid.uuid4().hex[:8]}",
            pure=False,
        ): task
        for task in todo
    }
    state = _Running(plan, database, sweep_id, out, settings, pools, outcome)
    pending = set(futures)
    while pending:
        try:
            finished, pending = wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:
            finished = set()
        for future in finished:
            task = futures[future]
            if future.cancelled():
                continue
            try:
                result = future.result()
            except Exception as exc:  # the worker died too often (KilledWorker), or the task never came back
                result = SessionResult(
                    task, worker="?", seconds=math.nan, error=f"{type(exc).__name__}: {exc}"
                )
            cancel = state.handle(result)
            if cancel:
                doomed = [f for f, t in futures.items() if t.setting == cancel and f in pending]
                client.cancel(doomed)
                pending -= set(doomed)
        if progress is not None:
            processing = {key for keys in client.processing().values() for key in keys}
            running = sum(1 for f in pending if f.key in processing)
            progress(
                SweepProgress(
                    total=len(todo),
                    done=outcome.stored,
                    running=running,
                    failed=len(outcome.failed),
                )
            )


def _refuse_changed(plan: SweepPlan, before: dict[tuple[str, int], Any]) -> None:
    """A setting run before under the same name with other changes would mix two settings: refuse."""
    for setting in plan.settings:
        for seed in plan.seeds:
            row = before.get((setting.name, seed))
            if row is not None and row.status == Status.COMPLETED and row.overrides != setting.overrides:
                raise ConfigError(
                    f"setting {setting.name!r} of sweep {plan.name!r} ran before with other changes "
                    f"({row.overrides}, now {setting.overrides}); give the setting or the sweep another name"
                )


def _write_setting(setting: Setting, out: Path) -> None:
    """The setting's session file, to run one of its sessions by hand (``simulate --config F --seed S``)."""
    if setting.config is not None:
        path = out / "settings" / f"{setting.slug}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, to_toml(setting.config).encode())


def _submit_pools(
    client: Any, plan: SweepPlan, todo: list[SessionTask], settings: dict[str, Setting]
) -> dict[tuple[int, str, int], Any]:
    """One task per seed (and virtual subject and display size): the unseen pool's truth, judged once."""
    pools = {}
    for task in todo:
        config = settings[task.setting].config
        assert config is not None  # a setting with a problem has no tasks
        key = (task.seed, config.simulation.subject, config.synthesis.display_size)
        if key not in pools:
            pools[key] = client.submit(
                pool_truth,
                task.seed,
                plan.pool,
                subject=key[1],
                display_size=key[2],
                priority=10,
                key=f"pool-{plan.name}-seed{task.seed}-{key[1]}-{key[2]}-{plan.pool}-{uuid.uuid4().hex[:8]}",
            )
    return pools


@dataclass
class _Running:
    """What the client does with each result."""

    plan: SweepPlan
    database: Database
    sweep_id: int
    out: Path
    settings: dict[str, Setting]
    pools: dict[tuple[int, str, int], Any]
    outcome: SweepOutcome

    def handle(self, result: SessionResult) -> str | None:
        """Store or record ``result``; the setting whose other sessions to cancel, if any."""
        task, setting = result.task, self.settings[result.task.setting]
        if result.error is not None or result.database is None:
            error = result.error or "the worker handed back no database"
            record_failure(
                self.database,
                self.sweep_id,
                setting=task.setting,
                seed=task.seed,
                overrides=setting.overrides,
                error=error,
                worker=result.worker,
                seconds=None if math.isnan(result.seconds) else result.seconds,
            )
            if result.config_error:
                if task.setting not in self.outcome.problems:
                    self.outcome.problems[task.setting] = error
                    return task.setting
                return None
            self.outcome.failed[task.setting, task.seed] = error
            log.warning(
                "sweep %s: setting %s, seed %d failed: %s", task.sweep, task.setting, task.seed, error
            )
            return None
        self._store(result, setting)
        return None

    def _store(self, result: SessionResult, setting: Setting) -> None:
        task = result.task
        assert result.database is not None
        assert setting.config is not None
        transit = self.out / ".incoming"
        transit.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=transit) as folder:
            path = Path(folder) / "session.sqlite"
            path.write_bytes(result.database)
            figures = None
            pool = self._pool(task, setting)
            if pool is not None:
                with open_database(path) as session:
                    rounds = session_figures(session, task.ref, pool)
                figures = {"rounds": [_finite(f.to_dict()) for f in rounds], "summary": summary(rounds)}
            store_session(
                self.database,
                self.sweep_id,
                setting=task.setting,
                seed=task.seed,
                overrides=setting.overrides,
                source=path,
                ref=task.ref,
                worker=result.worker,
                seconds=result.seconds,
                figures=figures,
            )
        if result.report is not None:
            report = self.out / "sessions" / setting.slug / f"seed{task.seed}" / "report.html"
            report.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(report, result.report)
        self.outcome.stored += 1

    def _pool(self, task: SessionTask, setting: Setting) -> PoolTruth | None:
        config = setting.config
        assert config is not None
        future = self.pools[task.seed, config.simulation.subject, config.synthesis.display_size]
        try:
            pool: PoolTruth = future.result()
        except Exception as exc:  # the figures are lost, the session is not
            log.warning(
                "sweep %s: the unseen pool of seed %d failed (%s): no figures", task.sweep, task.seed, exc
            )
            return None
        return pool


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """NaN as null: JSON columns (PostgreSQL's) take no NaN."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
