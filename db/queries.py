"""Queries shared by the controller, the CLI and reports.

Each returns plain frozen dataclasses (or lists of them) so that callers get
one stable shape whatever the backend, and ``dataclasses.asdict`` gives JSON.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from db.base import RecordNotFoundError, VolumeStatus
from db.models import (
    Event,
    Presentation,
    Roi,
    RoiSignal,
    Round,
    Run,
    Score,
    Session,
    Stimulus,
    Subject,
    Volume,
)

__all__ = [
    "EventRow",
    "RoiTimeseries",
    "RoundSummary",
    "RunSummary",
    "ScoreRow",
    "SessionDetail",
    "SessionSummary",
    "StimulusRow",
    "TrialRow",
    "find_session",
    "list_sessions",
    "roi_timeseries",
    "run_trials",
    "session_detail",
    "session_events",
    "session_stimuli",
]


@dataclass(frozen=True, kw_only=True)
class SessionSummary:
    id: int
    subject: str
    label: str
    kind: str
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    n_runs: int
    n_rounds: int
    n_volumes: int

    @property
    def ref(self) -> str:
        return f"sub-{self.subject}/ses-{self.label}"


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    id: int
    index: int
    kind: str
    status: str
    round_index: int | None
    tr_s: float
    n_volumes_planned: int | None
    n_volumes: int
    n_missing: int
    n_late: int
    n_presentations: int
    n_shown: int
    started_at: dt.datetime
    ended_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class RoundSummary:
    id: int
    index: int
    status: str
    policy: str | None
    targets: list[str]
    started_at: dt.datetime
    ended_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class ScoreRow:
    metric: str
    value: float
    round_index: int | None
    run_index: int | None
    roi: str | None


@dataclass(frozen=True, kw_only=True)
class SessionDetail:
    session: SessionSummary
    rois: list[str]
    runs: list[RunSummary]
    rounds: list[RoundSummary]
    scores: list[ScoreRow]
    events_by_level: dict[str, int]
    n_stimuli: int


@dataclass(frozen=True, kw_only=True)
class TrialRow:
    """One presentation, as a BIDS events row needs it."""

    trial_index: int
    planned_onset_s: float
    planned_duration_s: float
    actual_onset_s: float | None
    actual_duration_s: float | None
    condition: str | None
    target_roi: str | None
    stimulus_kind: str
    stimulus_path: str
    stimulus_sha256: str
    dropped_frames: int | None


@dataclass(frozen=True, kw_only=True)
class RoiTimeseries:
    """ROI mean signals of one run, one row per volume index, None where missing."""

    roi_names: list[str]
    volume_index: list[int]
    status: list[str]
    values: list[list[float | None]]  # (n_volumes, n_rois)


@dataclass(frozen=True, kw_only=True)
class StimulusRow:
    sha256: str
    path: str
    kind: str
    target_roi: str | None
    seed: int | None
    n_presentations: int


@dataclass(frozen=True, kw_only=True)
class EventRow:
    at: dt.datetime
    level: str
    source: str
    code: str
    message: str
    run_index: int | None
    volume_index: int | None


def find_session(s: OrmSession, ref: str) -> Session:
    """A session by numeric id or by ``sub-X/ses-Y`` (prefixes optional).

    Raises
    ------
    RecordNotFoundError
        No such session; the message says how to list the ones there are.
    """
    ref = ref.strip()
    stmt = select(Session)
    if ref.isdigit():
        stmt = stmt.where(Session.id == int(ref))
    elif "/" in ref:
        subject, _, label = ref.partition("/")
        stmt = stmt.join(Subject).where(
            Subject.label == subject.removeprefix("sub-"), Session.label == label.removeprefix("ses-")
        )
    else:
        raise RecordNotFoundError(
            f"session {ref!r} is neither an id nor a sub-X/ses-Y label; "
            "list sessions with `cortexloop db sessions`"
        )
    found = s.scalar(stmt)
    if found is None:
        raise RecordNotFoundError(
            f"no session {ref!r} in this database; list sessions with `cortexloop db sessions`"
        )
    return found


def _summaries(s: OrmSession, session_ids: list[int] | None = None) -> list[SessionSummary]:
    n_runs = select(Run.session_id, func.count().label("n")).group_by(Run.session_id).subquery()
    n_rounds = select(Round.session_id, func.count().label("n")).group_by(Round.session_id).subquery()
    n_volumes = (
        select(Run.session_id, func.count(Volume.id).label("n"))
        .join(Volume, Volume.run_id == Run.id)
        .where(Volume.status != VolumeStatus.MISSING)
        .group_by(Run.session_id)
        .subquery()
    )
    stmt = (
        select(
            Session,
            Subject.label,
            func.coalesce(n_runs.c.n, 0),
            func.coalesce(n_rounds.c.n, 0),
            func.coalesce(n_volumes.c.n, 0),
        )
        .join(Subject)
        .outerjoin(n_runs, n_runs.c.session_id == Session.id)
        .outerjoin(n_rounds, n_rounds.c.session_id == Session.id)
        .outerjoin(n_volumes, n_volumes.c.session_id == Session.id)
        .order_by(Session.started_at, Session.id)
    )
    if session_ids is not None:
        stmt = stmt.where(Session.id.in_(session_ids))
    return [
        SessionSummary(
            id=sess.id,
            subject=subject,
            label=sess.label,
            kind=sess.kind.value,
            status=sess.status.value,
            started_at=sess.started_at,
            ended_at=sess.ended_at,
            n_runs=runs,
            n_rounds=rounds,
            n_volumes=volumes,
        )
        for sess, subject, runs, rounds, volumes in s.execute(stmt)
    ]


def list_sessions(s: OrmSession, *, subject: str | None = None) -> list[SessionSummary]:
    """Every session, oldest first; only one subject's when ``subject`` is given."""
    rows = _summaries(s)
    if subject is not None:
        label = subject.removeprefix("sub-")
        rows = [r for r in rows if r.subject == label]
    return rows


def session_detail(s: OrmSession, ref: str) -> SessionDetail:
    """Everything ``cortexloop db show`` prints about one session."""
    sess = find_session(s, ref)
    (summary,) = _summaries(s, [sess.id])
    round_index = {r.id: r.index for r in sess.rounds}
    run_index = {r.id: r.index for r in sess.runs}
    roi_name = {r.id: r.name for r in sess.rois}

    runs = []
    for run in sess.runs:
        statuses = Counter(s.scalars(select(Volume.status).where(Volume.run_id == run.id)).all())
        onsets = s.scalars(select(Presentation.actual_onset_s).where(Presentation.run_id == run.id)).all()
        runs.append(
            RunSummary(
                id=run.id,
                index=run.index,
                kind=run.kind.value,
                status=run.status.value,
                round_index=round_index.get(run.round_id) if run.round_id else None,
                tr_s=run.tr_s,
                n_volumes_planned=run.n_volumes_planned,
                n_volumes=statuses[VolumeStatus.OK] + statuses[VolumeStatus.LATE],
                n_missing=statuses[VolumeStatus.MISSING],
                n_late=statuses[VolumeStatus.LATE],
                n_presentations=len(onsets),
                n_shown=sum(o is not None for o in onsets),
                started_at=run.started_at,
                ended_at=run.ended_at,
            )
        )
    rounds = [
        RoundSummary(
            id=r.id,
            index=r.index,
            status=r.status.value,
            policy=r.policy,
            targets=list((r.targets or {}).get("rois", [])),
            started_at=r.started_at,
            ended_at=r.ended_at,
        )
        for r in sess.rounds
    ]
    scores = [
        ScoreRow(
            metric=sc.metric,
            value=sc.value,
            round_index=round_index.get(sc.round_id) if sc.round_id else None,
            run_index=run_index.get(sc.run_id) if sc.run_id else None,
            roi=roi_name.get(sc.roi_id) if sc.roi_id else None,
        )
        for sc in s.scalars(select(Score).where(Score.session_id == sess.id).order_by(Score.id))
    ]
    levels = s.execute(
        select(Event.level, func.count()).where(Event.session_id == sess.id).group_by(Event.level)
    ).all()
    n_stimuli = s.scalar(
        select(func.count(func.distinct(Presentation.stimulus_id))).join(Run).where(Run.session_id == sess.id)
    )
    return SessionDetail(
        session=summary,
        rois=[r.name for r in sess.rois],
        runs=runs,
        rounds=rounds,
        scores=scores,
        events_by_level={level.value: n for level, n in levels},
        n_stimuli=n_stimuli or 0,
    )


def run_trials(s: OrmSession, run_id: int) -> list[TrialRow]:
    """A run's presentations in trial order, with their stimuli."""
    rows = s.execute(
        select(Presentation, Stimulus)
        .join(Stimulus)
        .where(Presentation.run_id == run_id)
        .order_by(Presentation.trial_index)
    )
    return [
        TrialRow(
            trial_index=p.trial_index,
            planned_onset_s=p.planned_onset_s,
            planned_duration_s=p.planned_duration_s,
            actual_onset_s=p.actual_onset_s,
            actual_duration_s=p.actual_duration_s,
            condition=p.condition,
            target_roi=p.target_roi,
            stimulus_kind=st.kind.value,
            stimulus_path=st.path,
            stimulus_sha256=st.sha256,
            dropped_frames=p.dropped_frames,
        )
        for p, st in rows
    ]


def roi_timeseries(s: OrmSession, run_id: int) -> RoiTimeseries:
    """ROI signals of a run as a volume-by-ROI table (ROIs in atlas order)."""
    run = s.get(Run, run_id)
    if run is None:
        raise RecordNotFoundError(f"no run with id {run_id}")
    rois = s.execute(select(Roi.id, Roi.name).where(Roi.session_id == run.session_id).order_by(Roi.id)).all()
    column = {roi_id: j for j, (roi_id, _) in enumerate(rois)}
    volumes = s.execute(
        select(Volume.id, Volume.index, Volume.status).where(Volume.run_id == run_id).order_by(Volume.index)
    ).all()
    row = {vid: i for i, (vid, _, _) in enumerate(volumes)}
    values: list[list[float | None]] = [[None] * len(rois) for _ in volumes]
    signals = s.execute(
        select(RoiSignal.volume_id, RoiSignal.roi_id, RoiSignal.value)
        .join(Volume)
        .where(Volume.run_id == run_id)
    )
    for volume_id, roi_id, value in signals:
        values[row[volume_id]][column[roi_id]] = value
    return RoiTimeseries(
        roi_names=[name for _, name in rois],
        volume_index=[index for _, index, _ in volumes],
        status=[status.value for _, _, status in volumes],
        values=values,
    )


def session_stimuli(s: OrmSession, session_id: int) -> list[StimulusRow]:
    """The stimuli presented in a session, with how often each was shown."""
    rows = s.execute(
        select(Stimulus, func.count(Presentation.id))
        .join(Presentation, Presentation.stimulus_id == Stimulus.id)
        .join(Run, Run.id == Presentation.run_id)
        .where(Run.session_id == session_id)
        .group_by(Stimulus.id)
        .order_by(Stimulus.id)
    )
    return [
        StimulusRow(
            sha256=st.sha256,
            path=st.path,
            kind=st.kind.value,
            target_roi=st.target_roi,
            seed=st.seed,
            n_presentations=n,
        )
        for st, n in rows
    ]


def session_events(s: OrmSession, session_id: int) -> list[EventRow]:
    """The session's event log, in order."""
    rows = s.execute(
        select(Event, Run.index)
        .outerjoin(Run, Run.id == Event.run_id)
        .where(Event.session_id == session_id)
        .order_by(Event.at, Event.id)
    )
    return [
        EventRow(
            at=e.at,
            level=e.level.value,
            source=e.source,
            code=e.code,
            message=e.message,
            run_index=run_index,
            volume_index=e.volume_index,
        )
        for e, run_index in rows
    ]
