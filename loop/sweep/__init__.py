"""Protocol sweeps: many simulated sessions, settings x seeds, on a Dask cluster (``cortexloop sweep``).

Before a lab spends scanner time it rehearses its protocol in simulation.
A sweep file (:mod:`~loop.sweep.plan`) names a base session file, the
settings to vary and the seeds; each setting and seed is one simulated
session, run on a worker in one process on the worker's own disk
(:mod:`~loop.sweep.worker`), handed back whole and stored in the sweep
database as it ends (:mod:`~loop.sweep.runner`), judged against the virtual
subject's truth as the control benchmark judges it (:mod:`~loop.sweep.efficacy`),
and reported, settings ranked, with intervals over seeds (:mod:`~loop.sweep.report`).

Dask distributed is the engine: a LocalCluster on one machine, a lab's
scheduler by its address, or SLURM through dask-jobqueue (docs/sweep.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.base.lazy import lazy_exports

if TYPE_CHECKING:
    from loop.sweep.efficacy import PoolTruth, RoundFigures, pool_truth, session_figures
    from loop.sweep.plan import SessionTask, Setting, SweepPlan, load_sweep
    from loop.sweep.report import write_sweep_report
    from loop.sweep.runner import SweepOutcome, SweepProgress, run_sweep
    from loop.sweep.worker import SessionResult, run_session

_EXPORTS = {
    "PoolTruth": "loop.sweep.efficacy",
    "RoundFigures": "loop.sweep.efficacy",
    "SessionResult": "loop.sweep.worker",
    "SessionTask": "loop.sweep.plan",
    "Setting": "loop.sweep.plan",
    "SweepOutcome": "loop.sweep.runner",
    "SweepPlan": "loop.sweep.plan",
    "SweepProgress": "loop.sweep.runner",
    "load_sweep": "loop.sweep.plan",
    "pool_truth": "loop.sweep.efficacy",
    "run_session": "loop.sweep.worker",
    "run_sweep": "loop.sweep.runner",
    "session_figures": "loop.sweep.efficacy",
    "write_sweep_report": "loop.sweep.report",
}

__all__ = [
    "PoolTruth",
    "RoundFigures",
    "SessionResult",
    "SessionTask",
    "Setting",
    "SweepOutcome",
    "SweepPlan",
    "SweepProgress",
    "load_sweep",
    "pool_truth",
    "run_session",
    "run_sweep",
    "session_figures",
    "write_sweep_report",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
