"""A sweep's record: its definition, and each setting and seed with the session it ran or why it failed.

A finished session is stored in one transaction: its every record (copied
from the SQLite file its worker handed back, :func:`db.transfer.copy_session`)
and its row in ``sweep_sessions``. So a setting and seed is in the database
once or not at all, whatever is killed when; the unique key (sweep,
setting, seed) holds it to once.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as OrmSession

from db.base import RecordNotFoundError, Status
from db.database import Database, open_database
from db.models import Session, Subject, Sweep, SweepSession
from db.schema import cortexloop_version
from db.transfer import copy_session

__all__ = [
    "SweepRow",
    "SweepSessionRow",
    "list_sweeps",
    "record_failure",
    "record_sweep",
    "store_session",
    "sweep_sessions",
]


@dataclass(frozen=True)
class SweepRow:
    id: int
    name: str
    created_at: dt.datetime
    definition: str
    completed: int  # sessions stored
    failed: int  # settings and seeds whose last try failed


@dataclass(frozen=True)
class SweepSessionRow:
    setting: str
    seed: int
    status: Status
    overrides: dict[str, Any]
    session: str | None  # sub-X/ses-Y in this database, when it completed
    worker: str | None
    seconds: float | None
    figures: dict[str, Any] | None
    error: str | None
    finished_at: dt.datetime


def record_sweep(database: Database, name: str, definition: str, base_toml: str | None) -> int:
    """The sweep's id, its row created, or its definition brought up to the file run now."""
    with database.transaction() as s:
        sweep = s.scalar(select(Sweep).where(Sweep.name == name))
        if sweep is None:
            sweep = Sweep(
                name=name, definition=definition, base_toml=base_toml, cortexloop_version=cortexloop_version()
            )
            s.add(sweep)
        else:
            sweep.definition, sweep.base_toml = definition, base_toml
        s.flush()
        return sweep.id


def sweep_sessions(s: OrmSession, name: str) -> list[SweepSessionRow]:
    """Each setting and seed of sweep ``name`` that finished or failed, by setting and seed."""
    sweep = s.scalar(select(Sweep).where(Sweep.name == name))
    if sweep is None:
        raise RecordNotFoundError(
            f"no sweep {name!r} in this database; list sweeps with `cortexloop db sweeps`"
        )
    rows = s.execute(
        select(SweepSession, Subject.label, Session.label)
        .outerjoin(Session, SweepSession.session_id == Session.id)
        .outerjoin(Subject, Session.subject_id == Subject.id)
        .where(SweepSession.sweep_id == sweep.id)
        .order_by(SweepSession.setting, SweepSession.seed)
    ).all()
    return [
        SweepSessionRow(
            setting=r.setting,
            seed=r.seed,
            status=r.status,
            overrides=r.overrides,
            session=f"sub-{subject}/ses-{label}" if label is not None else None,
            worker=r.worker,
            seconds=r.seconds,
            figures=r.figures,
            error=r.error,
            finished_at=r.finished_at,
        )
        for r, subject, label in rows
    ]


def list_sweeps(s: OrmSession) -> list[SweepRow]:
    """Every sweep, oldest first, with how many of its sessions completed and failed."""
    counts = dict(
        s.execute(
            select(SweepSession.sweep_id, func.count())
            .where(SweepSession.status == Status.COMPLETED)
            .group_by(SweepSession.sweep_id)
        ).all()
    )
    failed = dict(
        s.execute(
            select(SweepSession.sweep_id, func.count())
            .where(SweepSession.status != Status.COMPLETED)
            .group_by(SweepSession.sweep_id)
        ).all()
    )
    return [
        SweepRow(w.id, w.name, w.created_at, w.definition, counts.get(w.id, 0), failed.get(w.id, 0))
        for w in s.scalars(select(Sweep).order_by(Sweep.id))
    ]


def store_session(
    database: Database,
    sweep_id: int,
    *,
    setting: str,
    seed: int,
    overrides: dict[str, Any],
    source: str | os.PathLike[str],
    ref: str,
    worker: str,
    seconds: float,
    figures: dict[str, Any] | None,
) -> int:
    """Copy session ``ref`` from the database at ``source`` and record it as the sweep's; its new id.

    A failed try of the same setting and seed recorded before is replaced.
    """
    with open_database(Path(source)) as origin, origin.reader() as reader, database.transaction() as s:
        _forget_failure(s, sweep_id, setting, seed)
        session_id = copy_session(reader, s, ref)
        s.add(SweepSession(
            sweep_id=sweep_id, setting=setting, seed=seed, overrides=overrides, status=Status.COMPLETED,
            session_id=session_id, worker=worker, seconds=seconds, figures=figures,
        ))  # fmt: skip
    return session_id


def record_failure(
    database: Database,
    sweep_id: int,
    *,
    setting: str,
    seed: int,
    overrides: dict[str, Any],
    error: str,
    worker: str | None,
    seconds: float | None,
) -> None:
    """Record that a setting and seed failed (the last failure is kept; a later success replaces it)."""
    with database.transaction() as s:
        _forget_failure(s, sweep_id, setting, seed)
        s.add(SweepSession(
            sweep_id=sweep_id, setting=setting, seed=seed, overrides=overrides, status=Status.ABORTED,
            worker=worker, seconds=seconds, error=error,
        ))  # fmt: skip


def _forget_failure(s: OrmSession, sweep_id: int, setting: str, seed: int) -> None:
    s.execute(
        delete(SweepSession).where(
            SweepSession.sweep_id == sweep_id,
            SweepSession.setting == setting,
            SweepSession.seed == seed,
            SweepSession.status != Status.COMPLETED,
        )
    )
