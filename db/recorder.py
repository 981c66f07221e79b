"""Recording a session as it happens: the controller's write path.

Every method is one transaction. When it returns, the record is on disk;
if the process is killed before it returns, none of it is. A session whose
controller died is picked up again with :meth:`SessionRecorder.resume`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select

from db._types import utcnow
from db.base import (
    ConfigError,
    EventLevel,
    RecordNotFoundError,
    ResponseMethod,
    RunKind,
    SessionKind,
    Status,
    StimulusKind,
    VolumeStatus,
    bids_label,
)
from db.database import Database
from db.models import (
    Base,
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
from db.queries import find_session
from db.schema import cortexloop_version

__all__ = ["RoiSpec", "SessionRecorder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RoiSpec:
    """An ROI of the session's atlas, as recorded at the start of a session."""

    name: str
    label_value: int | None = None
    n_voxels: int | None = None


# The hot path's statements, built once: a volume a second for an hour compiles nothing after the first.
_INSERT_VOLUME = insert(Base.metadata.tables[Volume.__tablename__]).returning(Volume.id)
_INSERT_SIGNALS = insert(Base.metadata.tables[RoiSignal.__tablename__])


class SessionRecorder:
    """Writes one session's records, each call in its own transaction.

    Create one with :meth:`start` (a new session) or :meth:`resume` (after a
    restart). ROI signals are addressed by ROI name; the names are fixed when
    the session starts.
    """

    def __init__(self, database: Database, session_id: int) -> None:
        self.database = database
        self.session_id = session_id
        with database.reader() as s:
            rows = s.execute(select(Roi.name, Roi.id).where(Roi.session_id == session_id)).all()
        self._roi_ids: dict[str, int] = {name: roi_id for name, roi_id in rows}

    @property
    def roi_names(self) -> list[str]:
        return list(self._roi_ids)

    @classmethod
    def start(
        cls,
        database: Database,
        *,
        subject: str,
        session: str,
        kind: SessionKind,
        rois: Sequence[RoiSpec],
        config_toml: str | None = None,
        config_sha256: str | None = None,
        atlas_path: str | None = None,
        atlas_sha256: str | None = None,
        notes: str | None = None,
    ) -> SessionRecorder:
        """Record a new session (and its subject, if new); return its recorder."""
        subject_label = bids_label(subject, "sub")
        session_label = bids_label(session, "ses")
        names = [roi.name for roi in rois]
        if len(set(names)) != len(names):
            raise ValueError(f"ROI names must be unique; got {names}")
        with database.transaction() as s:
            subj = s.scalar(select(Subject).where(Subject.label == subject_label))
            if subj is None:
                subj = Subject(label=subject_label)
                s.add(subj)
            elif s.scalar(
                select(Session.id).where(Session.subject_id == subj.id, Session.label == session_label)
            ):
                raise ConfigError(  # a ValueError too
                    f"session sub-{subject_label}/ses-{session_label} already exists in "
                    f"{database.name}; resume it, or choose another session label"
                )
            record = Session(
                subject=subj,
                label=session_label,
                kind=kind,
                cortexloop_version=cortexloop_version(),
                config_toml=config_toml,
                config_sha256=config_sha256,
                atlas_path=atlas_path,
                atlas_sha256=atlas_sha256,
                notes=notes,
            )
            s.add(record)
            s.add_all(
                Roi(session=record, name=r.name, label_value=r.label_value, n_voxels=r.n_voxels) for r in rois
            )
            s.flush()
            session_id = record.id
        logger.info("started session sub-%s/ses-%s (id %d)", subject_label, session_label, session_id)
        return cls(database, session_id)

    @classmethod
    def resume(cls, database: Database, ref: str | int) -> SessionRecorder:
        """Pick up a recorded session by id or ``sub-X/ses-Y`` label."""
        with database.reader() as s:
            session_id = find_session(s, str(ref)).id
        return cls(database, session_id)

    def _roi_id(self, name: str) -> int:
        try:
            return self._roi_ids[name]
        except KeyError:
            raise RecordNotFoundError(
                f"ROI {name!r} is not in this session's atlas; known ROIs: "
                f"{', '.join(self._roi_ids) or '(none)'}"
            ) from None

    # -- runs and rounds --------------------------------------------------------------

    def start_round(
        self,
        *,
        policy: str | None = None,
        targets: Sequence[str] = (),
        model_version_id: int | None = None,
    ) -> int:
        """Record a new round, numbered after the session's last; return its id."""
        with self.database.transaction() as s:
            last = s.scalar(
                select(Round.index)
                .where(Round.session_id == self.session_id)
                .order_by(Round.index.desc())
                .limit(1)
            )
            record = Round(
                session_id=self.session_id,
                index=(last or 0) + 1,
                policy=policy,
                targets={"rois": list(targets)},
                model_version_id=model_version_id,
            )
            s.add(record)
            s.flush()
            return record.id

    def end_round(
        self,
        round_id: int,
        *,
        status: Status = Status.COMPLETED,
        refit_model_version_id: int | None = None,
        scores: Sequence[Mapping[str, Any]] = (),
        predictions: Sequence[tuple[int, int, Mapping[str, float]]] = (),
    ) -> None:
        """End a round, with its scores (keys of :meth:`record_score`) and the predictions it was
        scored on ((model version id, stimulus id, ROI -> value)) in the same transaction."""
        with self.database.transaction() as s:
            record = s.get_one(Round, round_id)
            record.status = status
            record.ended_at = utcnow()
            record.refit_model_version_id = refit_model_version_id
            s.add_all(self._score(round_id=round_id, **score) for score in scores)
            rows = [
                {"model_version_id": model_id, "stimulus_id": stimulus_id, "roi_id": self._roi_id(name),
                 "value": float(value)}
                for model_id, stimulus_id, values in predictions
                for name, value in values.items()
            ]  # fmt: skip
            if rows:
                s.execute(insert(Prediction), rows)

    def start_run(
        self,
        *,
        kind: RunKind,
        tr_s: float,
        n_volumes_planned: int | None = None,
        round_id: int | None = None,
    ) -> int:
        """Record a new run, numbered after the session's last; return its id."""
        if not (tr_s > 0 and math.isfinite(tr_s)):
            raise ValueError(f"TR must be a positive number of seconds; got {tr_s}")
        with self.database.transaction() as s:
            last = s.scalar(
                select(Run.index).where(Run.session_id == self.session_id).order_by(Run.index.desc()).limit(1)
            )
            record = Run(
                session_id=self.session_id,
                index=(last or 0) + 1,
                kind=kind,
                tr_s=tr_s,
                n_volumes_planned=n_volumes_planned,
                round_id=round_id,
            )
            s.add(record)
            s.flush()
            return record.id

    def mark_first_trigger(self, run_id: int, at: dt.datetime) -> None:
        with self.database.transaction() as s:
            s.get_one(Run, run_id).first_trigger_at = at

    def end_run(
        self,
        run_id: int,
        *,
        status: Status = Status.COMPLETED,
        responses: Mapping[int, Mapping[str, float]] | None = None,
        method: ResponseMethod = ResponseMethod.LSS,
    ) -> None:
        """End a run; with ``responses`` (trial index -> ROI -> value), record them in the same transaction.

        So a run is either completed with all its responses or still running.
        """
        with self.database.transaction() as s:
            record = s.get_one(Run, run_id)
            record.status = status
            record.ended_at = utcnow()
            if responses:
                ids = dict(
                    s.execute(
                        select(Presentation.trial_index, Presentation.id).where(Presentation.run_id == run_id)
                    ).all()
                )
                s.execute(
                    insert(MeasuredResponse),
                    [
                        {"presentation_id": ids[trial], "roi_id": self._roi_id(name), "method": method,
                         "value": float(value)}
                        for trial, values in responses.items()
                        for name, value in values.items()
                    ],
                )  # fmt: skip

    def end_session(self, *, status: Status = Status.COMPLETED) -> None:
        with self.database.transaction() as s:
            record = s.get_one(Session, self.session_id)
            record.status = status
            record.ended_at = utcnow()

    # -- per volume (the hot path: one transaction per TR) -------------------------------

    def record_volume(
        self,
        run_id: int,
        index: int,
        *,
        roi_signals: Mapping[str, float],
        status: VolumeStatus = VolumeStatus.OK,
        acquired_at: dt.datetime | None = None,
        arrived_at: dt.datetime | None = None,
        processed_at: dt.datetime | None = None,
        file_path: str | None = None,
        file_sha256: str | None = None,
        framewise_displacement_mm: float | None = None,
    ) -> int:
        """Record one volume and its ROI signals atomically; return the volume's id.

        Parameters
        ----------
        run_id : int
            The run, as returned by :meth:`start_run`.
        index : int
            The volume's 0-based index in the run.
        roi_signals : mapping of str to float
            One finite value per ROI name (a subset is allowed, e.g. none for
            a missing volume).
        """
        signals = []
        for name, value in roi_signals.items():
            roi_id = self._roi_id(name)
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(
                    f"ROI {name!r} signal of volume {index} is {v}; check the ROI mask "
                    "(an empty mask or one outside the brain gives NaN)"
                )
            signals.append({"roi_id": roi_id, "value": v})
        with self.database.connection() as c:
            volume_id: int = c.execute(_INSERT_VOLUME, {
                "run_id": run_id, "index": index, "status": status, "acquired_at": acquired_at,
                "arrived_at": arrived_at, "processed_at": processed_at, "file_path": file_path,
                "file_sha256": file_sha256, "framewise_displacement_mm": framewise_displacement_mm,
            }).scalar_one()  # fmt: skip
            if signals:
                for row in signals:
                    row["volume_id"] = volume_id
                c.execute(_INSERT_SIGNALS, signals)
        return volume_id

    def fill_missing_volume(
        self,
        run_id: int,
        index: int,
        *,
        roi_signals: Mapping[str, float],
        arrived_at: dt.datetime | None = None,
        processed_at: dt.datetime | None = None,
        file_path: str | None = None,
    ) -> None:
        """A volume recorded as missing has come after all: it becomes ``late``, with its signals.

        One record per volume still: the missing one is completed, not joined by a second.
        """
        with self.database.transaction() as s:
            record = s.scalar(select(Volume).where(Volume.run_id == run_id, Volume.index == index))
            if record is None or record.status is not VolumeStatus.MISSING:
                raise RecordNotFoundError(f"volume {index} of run id {run_id} is not recorded as missing")
            record.status = VolumeStatus.LATE
            record.arrived_at, record.processed_at, record.file_path = arrived_at, processed_at, file_path
            s.execute(
                insert(RoiSignal),
                [
                    {"volume_id": record.id, "roi_id": self._roi_id(n), "value": float(v)}
                    for n, v in roi_signals.items()
                ],
            )

    def record_event(
        self,
        level: EventLevel,
        source: str,
        code: str,
        message: str,
        *,
        run_id: int | None = None,
        volume_index: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Append to the event log (warnings, gaps, errors, milestones)."""
        with self.database.transaction() as s:
            s.add(
                Event(
                    level=level,
                    source=source,
                    code=code,
                    message=message,
                    session_id=self.session_id,
                    run_id=run_id,
                    volume_index=volume_index,
                    details=dict(details) if details is not None else None,
                )
            )

    # -- stimuli, presentations, models and scores ----------------------------------------

    def record_stimulus(
        self,
        *,
        sha256: str,
        path: str,
        kind: StimulusKind,
        target_roi: str | None = None,
        model_version_id: int | None = None,
        synthesis_params: Mapping[str, Any] | None = None,
        seed: int | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> int:
        """Record an image by content hash; an image seen before keeps its first record."""
        with self.database.transaction() as s:
            existing = s.scalar(select(Stimulus.id).where(Stimulus.sha256 == sha256))
            if existing is not None:
                return existing
            record = Stimulus(
                sha256=sha256,
                path=path,
                kind=kind,
                target_roi=target_roi,
                model_version_id=model_version_id,
                synthesis_params=dict(synthesis_params) if synthesis_params is not None else None,
                seed=seed,
                width=width,
                height=height,
            )
            s.add(record)
            s.flush()
            return record.id

    def record_presentations(self, run_id: int, trials: Sequence[Mapping[str, Any]]) -> None:
        """Record a run plan's trials (keys: the :class:`Presentation` columns)."""
        with self.database.transaction() as s:
            s.execute(insert(Presentation), [{"run_id": run_id, **t} for t in trials])

    def record_onset(
        self,
        run_id: int,
        trial_index: int,
        *,
        actual_onset_s: float,
        actual_duration_s: float | None = None,
        dropped_frames: int | None = None,
    ) -> None:
        """Record when a planned trial was really shown."""
        with self.database.transaction() as s:
            record = s.scalar(
                select(Presentation).where(
                    Presentation.run_id == run_id, Presentation.trial_index == trial_index
                )
            )
            if record is None:
                raise RecordNotFoundError(
                    f"trial {trial_index} of run id {run_id} was never planned; "
                    "record the run plan before its onsets"
                )
            record.actual_onset_s = actual_onset_s
            record.actual_duration_s = actual_duration_s
            record.dropped_frames = dropped_frames

    def discard_acquisition(self, run_id: int) -> int:
        """Forget what an open run has recorded so far (volumes, signals, live onsets); return the volumes.

        For a run acquired again from its first volume, because its
        presentation was interrupted and what was measured cannot be matched
        to onsets; the volumes' files stay where they are. A completed run is refused.
        """
        with self.database.transaction() as s:
            run = s.get(Run, run_id)
            if run is None or run.status is not Status.RUNNING:
                raise RecordNotFoundError(f"run id {run_id} is not an open run of this session")
            ids = list(s.scalars(select(Volume.id).where(Volume.run_id == run_id)))
            if ids:
                s.execute(delete(RoiSignal).where(RoiSignal.volume_id.in_(ids)))
                s.execute(delete(Volume).where(Volume.id.in_(ids)))
            for presentation in s.scalars(select(Presentation).where(Presentation.run_id == run_id)):
                presentation.actual_onset_s = presentation.actual_duration_s = None
                presentation.dropped_frames = None
            return len(ids)

    def record_onsets(self, run_id: int, trials: Sequence[Mapping[str, Any]]) -> None:
        """Record a run's onsets as the presenter's final log gives them (keys ``index``,
        ``actual_onset_s``, ``actual_duration_s``, optionally ``dropped_frames``), in one transaction."""
        with self.database.transaction() as s:
            records = {
                p.trial_index: p for p in s.scalars(select(Presentation).where(Presentation.run_id == run_id))
            }
            for trial in trials:
                record = records.get(int(trial["index"]))
                if record is None:
                    raise RecordNotFoundError(f"trial {trial['index']} of run id {run_id} was never planned")
                record.actual_onset_s = trial["actual_onset_s"]
                record.actual_duration_s = trial.get("actual_duration_s")
                record.dropped_frames = trial.get("dropped_frames")

    def record_model_version(
        self,
        *,
        backbone: str,
        artifact_path: str,
        artifact_sha256: str,
        layers: Mapping[str, Any] | None = None,
        parent_id: int | None = None,
        n_training_stimuli: int | None = None,
        description: str | None = None,
    ) -> int:
        with self.database.transaction() as s:
            record = EncodingModelVersion(
                session_id=self.session_id,
                backbone=backbone,
                artifact_path=artifact_path,
                artifact_sha256=artifact_sha256,
                layers=dict(layers) if layers is not None else None,
                parent_id=parent_id,
                n_training_stimuli=n_training_stimuli,
                description=description,
            )
            s.add(record)
            s.flush()
            return record.id

    def record_predictions(
        self, model_version_id: int, stimulus_id: int, values: Mapping[str, float]
    ) -> None:
        with self.database.transaction() as s:
            s.execute(
                insert(Prediction),
                [
                    {
                        "model_version_id": model_version_id,
                        "stimulus_id": stimulus_id,
                        "roi_id": self._roi_id(name),
                        "value": float(v),
                    }
                    for name, v in values.items()
                ],
            )

    def record_responses(
        self,
        presentation_id: int,
        method: ResponseMethod,
        values: Mapping[str, float],
    ) -> None:
        with self.database.transaction() as s:
            s.execute(
                insert(MeasuredResponse),
                [
                    {
                        "presentation_id": presentation_id,
                        "roi_id": self._roi_id(name),
                        "method": method,
                        "value": float(v),
                    }
                    for name, v in values.items()
                ],
            )

    def record_score(
        self,
        metric: str,
        value: float,
        *,
        round_id: int | None = None,
        run_id: int | None = None,
        model_version_id: int | None = None,
        roi: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        with self.database.transaction() as s:
            s.add(
                self._score(
                    metric, value, round_id=round_id, run_id=run_id, model_version_id=model_version_id,
                    roi=roi, details=details,
                )
            )  # fmt: skip

    def _score(
        self,
        metric: str,
        value: float,
        *,
        round_id: int | None = None,
        run_id: int | None = None,
        model_version_id: int | None = None,
        roi: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Score:
        return Score(
            session_id=self.session_id,
            metric=metric,
            value=float(value),
            round_id=round_id,
            run_id=run_id,
            model_version_id=model_version_id,
            roi_id=self._roi_id(roi) if roi is not None else None,
            details=dict(details) if details is not None else None,
        )
