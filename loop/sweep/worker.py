"""What a sweep's worker does: one simulated session on its own local disk, handed back whole.

A session runs in one process (:func:`loop.simulation.simulate_in_process`)
in a fresh folder on the worker's local disk, since SQLite in WAL mode is
not for network file systems. What comes back to the sweep is small: the
session's database (every record, as one SQLite file's bytes) and its
report. The folder is removed afterwards; one left by a worker killed
mid-session is never reused (the session runs again from the start, in a
folder of its own).
"""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import tempfile
import time
import tomllib
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.base import ConfigError
from loop.config import parse_config
from loop.sweep.plan import SessionTask

__all__ = ["SessionResult", "run_session", "scratch_folder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionResult:
    """A session's outcome as a worker hands it back."""

    task: SessionTask
    worker: str
    seconds: float
    database: bytes | None = None  # the session's SQLite database, serialized
    report: bytes | None = None  # its HTML report
    error: str | None = None  # why it failed
    config_error: bool = False  # failed because its session file is wrong: the setting's fault, not the run's


def scratch_folder() -> Path:
    """Where sessions run here: the Dask worker's local directory, or the system's temporary folder."""
    worker = _worker()
    return Path(worker.local_directory) if worker is not None else Path(tempfile.gettempdir())


def _where() -> str:
    worker = _worker()
    return (
        f"{worker.address} ({socket.gethostname()})"
        if worker is not None
        else f"{socket.gethostname()} (in process)"
    )


def _worker() -> Any:
    """The Dask worker this runs on, or None."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # no Dask here, or not on one of its workers
        return None


def run_session(task: SessionTask) -> SessionResult:
    """Run one session of a sweep from start to end and hand back its records and report."""
    import torch

    from db import open_database
    from loop.report import write_report
    from loop.simulation.inprocess import simulate_in_process

    torch.set_num_threads(task.threads)
    folder = Path(tempfile.mkdtemp(prefix=f"cortexloop-{task.sweep}-seed{task.seed}-", dir=scratch_folder()))
    started = time.perf_counter()
    where = _where()
    try:
        config = parse_config(tomllib.loads(task.session_toml), source=str(folder / "session.toml"))
        config = simulate_in_process(config, folder)
        with open_database(config.database_target) as database:
            write_report(database, task.ref, folder / "report.html", folder=folder)
        seconds = time.perf_counter() - started
        with closing(sqlite3.connect(config.database_target)) as connection:
            serialized = connection.serialize()  # one consistent image, whatever the write-ahead log holds
        return SessionResult(task, where, seconds, serialized, (folder / "report.html").read_bytes())
    except ConfigError as exc:
        return SessionResult(task, where, time.perf_counter() - started, error=str(exc), config_error=True)
    except Exception as exc:  # a failed session is reported with its setting and seed, and the sweep goes on
        log.exception("sweep %s, setting %s, seed %d failed", task.sweep, task.setting, task.seed)
        return SessionResult(task, where, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
