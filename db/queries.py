"""Queries shared by the controller, the CLI, the report and the replay: the way in to the record.

Each returns plain frozen dataclasses (or lists of them) so that callers get
one stable shape whatever the backend, and ``dataclasses.asdict`` gives JSON.
Each takes a :data:`Reader` (``with database.reader() as s:``), so that one
read sees one state of the database. Nothing outside ``db`` builds a query
of its own or holds an ORM object.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from db.base import RecordNotFoundError, ResponseMethod, RunKind, Status, VolumeStatus
from db.models import (
    EncodingModelVersion,
    Event,
    MeasuredResponse,
    Prediction,
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
    "ModelVersionRow",
    "PredictionRow",
    "Reader",
    "ResponseRow",
    "RoiRow",
    "RoiTimeseries",
    "RoundSummary",
    "RunRow",
    "RunSummary",
    "ScoreRow",
    "SessionDetail",
    "SessionInfo",
    "SessionSummary",
    "StimulusRow",
    "TrialRow",
    "VolumeRow",
    "list_sessions",
    "measured_responses",
    "model_version",
    "model_versions",
    "predictions",
    "roi_timeseries",
    "run_series",
    "run_trials",
    "run_volumes",
    "session_detail",
    "session_events",
    "session_id",
    "session_info",
    "session_rounds",
    "session_runs",
    "session_scores",
    "session_stimuli",
    "stimulus_ids",
    "stimulus_path",
]

Reader = OrmSession  # what every query reads through: ``with database.reader() as s``


@dataclass(frozen=True, kw_only=True)
class _SessionName:
    """What names a session and says where it stands."""

    id: int
    subject: str
    label: str
    kind: str
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None

    @property
    def ref(self) -> str:
        return f"sub-{self.subject}/ses-{self.label}"


@dataclass(frozen=True, kw_only=True)
class SessionSummary(_SessionName):
    n_runs: int
    n_rounds: int
    n_volumes: int


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
    model_version_id: int | None  # the model the round synthesized with
    refit_model_version_id: int | None  # the model refitted after it


@dataclass(frozen=True, kw_only=True)
class ScoreRow:
    metric: str
    value: float
    round_index: int | None
    run_index: int | None
    roi: str | None
    details: dict[str, Any] | None = None


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
    """One presentation, as a BIDS events row (and the replay's design) needs it."""

    presentation_id: int
    stimulus_id: int
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
    id: int
    sha256: str
    path: str
    kind: str
    target_roi: str | None
    seed: int | None
    n_presentations: int
    synthesis: dict[str, Any] | None = None  # how a synthesized image was made (its strategy, its start)


@dataclass(frozen=True, kw_only=True)
class EventRow:
    at: dt.datetime
    level: str
    source: str
    code: str
    message: str
    run_index: int | None
    volume_index: int | None
    details: dict[str, Any] | None = None


def find_session(s: Reader, ref: str) -> Session:
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


def _summaries(s: Reader, session_ids: list[int] | None = None) -> list[SessionSummary]:
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


def list_sessions(s: Reader, *, subject: str | None = None) -> list[SessionSummary]:
    """Every session, oldest first; only one subject's when ``subject`` is given."""
    rows = _summaries(s)
    if subject is not None:
        label = subject.removeprefix("sub-")
        rows = [r for r in rows if r.subject == label]
    return rows


def session_detail(s: Reader, ref: str) -> SessionDetail:
    """Everything ``cortexloop db show`` prints about one session."""
    sess = find_session(s, ref)
    (summary,) = _summaries(s, [sess.id])
    round_index = {r.id: r.index for r in sess.rounds}

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
    rounds = session_rounds(s, sess.id)
    scores = session_scores(s, sess.id)
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


def run_trials(s: Reader, run_id: int) -> list[TrialRow]:
    """A run's presentations in trial order, with their stimuli."""
    rows = s.execute(
        select(Presentation, Stimulus)
        .join(Stimulus)
        .where(Presentation.run_id == run_id)
        .order_by(Presentation.trial_index)
    )
    return [
        TrialRow(
            presentation_id=p.id,
            stimulus_id=p.stimulus_id,
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


def roi_timeseries(s: Reader, run_id: int) -> RoiTimeseries:
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


def session_stimuli(s: Reader, session_id: int) -> list[StimulusRow]:
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
            id=st.id,
            sha256=st.sha256,
            path=st.path,
            kind=st.kind.value,
            target_roi=st.target_roi,
            seed=st.seed,
            n_presentations=n,
            synthesis=st.synthesis_params,
        )
        for st, n in rows
    ]


def session_events(s: Reader, session_id: int) -> list[EventRow]:
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
            details=e.details,
        )
        for e, run_index in rows
    ]


# --- what the controller, the report and the replay read --------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RoiRow:
    id: int
    name: str
    label_value: int | None  # its value in the atlas label image
    n_voxels: int | None


@dataclass(frozen=True, kw_only=True)
class SessionInfo(_SessionName):
    """One session's own record: who, what, with which configuration and atlas."""

    cortexloop_version: str
    config_toml: str | None
    atlas_path: str | None
    atlas_sha256: str | None
    rois: list[RoiRow]


@dataclass(frozen=True, kw_only=True)
class RunRow:
    id: int
    index: int  # the BIDS run number, 1-based in the session
    kind: str
    status: str
    tr_s: float
    n_volumes_planned: int | None
    round_index: int | None


@dataclass(frozen=True, kw_only=True)
class VolumeRow:
    index: int
    status: VolumeStatus
    file_path: str | None
    file_sha256: str | None
    arrived_at: dt.datetime | None
    processed_at: dt.datetime | None
    framewise_displacement_mm: float | None


@dataclass(frozen=True, kw_only=True)
class ModelVersionRow:
    id: int
    parent_id: int | None
    backbone: str
    artifact_path: str
    artifact_sha256: str
    n_training_stimuli: int | None
    description: str | None
    layers: dict[str, Any] | None
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class ResponseRow:
    """One measured response: one ROI's to one presentation, with what was shown."""

    run_index: int
    round_index: int | None
    presentation_id: int
    trial_index: int
    stimulus_id: int
    stimulus_path: str
    condition: str | None
    target_roi: str | None
    roi: str
    value: float


@dataclass(frozen=True, kw_only=True)
class PredictionRow:
    model_version_id: int
    stimulus_id: int
    roi: str
    value: float


def session_id(s: Reader, ref: str) -> int:
    """The id of session ``ref`` (a numeric id or ``sub-X/ses-Y``); :class:`RecordNotFoundError` if none."""
    return find_session(s, ref).id


def session_info(s: Reader, ref: str) -> SessionInfo:
    """The session's own record and its ROIs, in atlas order."""
    sess = find_session(s, ref)
    return SessionInfo(
        id=sess.id,
        subject=sess.subject.label,
        label=sess.label,
        kind=sess.kind.value,
        status=sess.status.value,
        started_at=sess.started_at,
        ended_at=sess.ended_at,
        cortexloop_version=sess.cortexloop_version,
        config_toml=sess.config_toml,
        atlas_path=sess.atlas_path,
        atlas_sha256=sess.atlas_sha256,
        rois=[
            RoiRow(id=r.id, name=r.name, label_value=r.label_value, n_voxels=r.n_voxels) for r in sess.rois
        ],
    )


def session_runs(s: Reader, session_id: int, *, status: Status | None = None) -> list[RunRow]:
    """The session's runs in order (only those of ``status`` when given)."""
    stmt = (
        select(Run, Round.index)
        .outerjoin(Round, Round.id == Run.round_id)
        .where(Run.session_id == session_id)
        .order_by(Run.index)
    )
    if status is not None:
        stmt = stmt.where(Run.status == status)
    return [
        RunRow(
            id=run.id,
            index=run.index,
            kind=run.kind.value,
            status=run.status.value,
            tr_s=run.tr_s,
            n_volumes_planned=run.n_volumes_planned,
            round_index=round_index,
        )
        for run, round_index in s.execute(stmt)
    ]


def session_rounds(s: Reader, session_id: int) -> list[RoundSummary]:
    """The session's rounds in order."""
    rounds = s.scalars(select(Round).where(Round.session_id == session_id).order_by(Round.index))
    return [
        RoundSummary(
            id=r.id,
            index=r.index,
            status=r.status.value,
            policy=r.policy,
            targets=list((r.targets or {}).get("rois", [])),
            started_at=r.started_at,
            ended_at=r.ended_at,
            model_version_id=r.model_version_id,
            refit_model_version_id=r.refit_model_version_id,
        )
        for r in rounds
    ]


def session_scores(s: Reader, session_id: int) -> list[ScoreRow]:
    """Every score of the session, in the order recorded, with its round, run and ROI."""
    rows = s.execute(
        select(Score, Round.index, Run.index, Roi.name)
        .outerjoin(Round, Round.id == Score.round_id)
        .outerjoin(Run, Run.id == Score.run_id)
        .outerjoin(Roi, Roi.id == Score.roi_id)
        .where(Score.session_id == session_id)
        .order_by(Score.id)
    )
    return [
        ScoreRow(
            metric=sc.metric,
            value=sc.value,
            round_index=round_index,
            run_index=run_index,
            roi=roi,
            details=sc.details,
        )
        for sc, round_index, run_index, roi in rows
    ]


def run_volumes(s: Reader, run_id: int) -> list[VolumeRow]:
    """A run's volume records in index order, missing ones included."""
    volumes = s.scalars(select(Volume).where(Volume.run_id == run_id).order_by(Volume.index))
    return [
        VolumeRow(
            index=v.index,
            status=v.status,
            file_path=v.file_path,
            file_sha256=v.file_sha256,
            arrived_at=v.arrived_at,
            processed_at=v.processed_at,
            framewise_displacement_mm=v.framewise_displacement_mm,
        )
        for v in volumes
    ]


RUN_SERIES_CODE = "run.series"  # the event the controller records when a run's first volume names its series


def run_series(s: Reader, session_id: int) -> dict[int, str]:
    """The scanner series of each run of the session (run id -> series), as recorded at its first volume."""
    rows = s.execute(
        select(Event.run_id, Event.details).where(
            Event.session_id == session_id, Event.code == RUN_SERIES_CODE, Event.run_id.is_not(None)
        )
    )
    return {int(run_id): str(d["series"]) for run_id, d in rows if d and "series" in d}


def stimulus_ids(s: Reader, sha256s: Iterable[str]) -> dict[str, int]:
    """The ids of the recorded stimuli among ``sha256s`` (content hash -> id)."""
    rows = s.execute(select(Stimulus.sha256, Stimulus.id).where(Stimulus.sha256.in_(set(sha256s))))
    return {sha: stimulus_id for sha, stimulus_id in rows}


def stimulus_path(s: Reader, sha256: str) -> str | None:
    """The path an image was first recorded under (in its session's stimulus folder); None if it is new."""
    return s.scalar(select(Stimulus.path).where(Stimulus.sha256 == sha256))


def _model_row(m: EncodingModelVersion) -> ModelVersionRow:
    return ModelVersionRow(
        id=m.id,
        parent_id=m.parent_id,
        backbone=m.backbone,
        artifact_path=m.artifact_path,
        artifact_sha256=m.artifact_sha256,
        n_training_stimuli=m.n_training_stimuli,
        description=m.description,
        layers=m.layers,
        created_at=m.created_at,
    )


def model_versions(s: Reader, session_id: int) -> list[ModelVersionRow]:
    """The session's encoding-model versions, oldest first."""
    stmt = select(EncodingModelVersion).where(EncodingModelVersion.session_id == session_id)
    return [_model_row(m) for m in s.scalars(stmt.order_by(EncodingModelVersion.id))]


def model_version(s: Reader, model_version_id: int) -> ModelVersionRow:
    """One encoding-model version; :class:`RecordNotFoundError` if there is none of that id."""
    found = s.get(EncodingModelVersion, model_version_id)
    if found is None:
        raise RecordNotFoundError(f"no encoding-model version {model_version_id} in this database")
    return _model_row(found)


def measured_responses(
    s: Reader,
    session_id: int,
    *,
    method: ResponseMethod = ResponseMethod.LSS,
    run_kind: RunKind | None = None,
    run_id: int | None = None,
    condition: str | None = None,
) -> list[ResponseRow]:
    """The session's measured responses (trial x ROI), in run and trial order, ROIs in atlas order.

    Narrowed to one run, one kind of run, or one condition of presentation when given.
    """
    stmt = (
        select(Run.index, Round.index, Presentation, Stimulus.path, Roi.name, MeasuredResponse.value)
        .join(Presentation, Presentation.run_id == Run.id)
        .join(Stimulus, Stimulus.id == Presentation.stimulus_id)
        .join(MeasuredResponse, MeasuredResponse.presentation_id == Presentation.id)
        .join(Roi, Roi.id == MeasuredResponse.roi_id)
        .outerjoin(Round, Round.id == Run.round_id)
        .where(Run.session_id == session_id, MeasuredResponse.method == method)
        .order_by(Run.index, Presentation.trial_index, Roi.id)
    )
    if run_kind is not None:
        stmt = stmt.where(Run.kind == run_kind)
    if run_id is not None:
        stmt = stmt.where(Run.id == run_id)
    if condition is not None:
        stmt = stmt.where(Presentation.condition == condition)
    return [
        ResponseRow(
            run_index=run_index,
            round_index=round_index,
            presentation_id=p.id,
            trial_index=p.trial_index,
            stimulus_id=p.stimulus_id,
            stimulus_path=path,
            condition=p.condition,
            target_roi=p.target_roi,
            roi=roi,
            value=value,
        )
        for run_index, round_index, p, path, roi, value in s.execute(stmt)
    ]


def predictions(s: Reader, model_version_id: int) -> list[PredictionRow]:
    """What one model version predicted, per stimulus and ROI."""
    rows = s.execute(
        select(Prediction.stimulus_id, Roi.name, Prediction.value)
        .join(Roi, Roi.id == Prediction.roi_id)
        .where(Prediction.model_version_id == model_version_id)
        .order_by(Prediction.stimulus_id, Roi.id)
    )
    return [
        PredictionRow(model_version_id=model_version_id, stimulus_id=stimulus_id, roi=roi, value=value)
        for stimulus_id, roi, value in rows
    ]
