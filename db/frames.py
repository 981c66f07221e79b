"""The session database as pandas DataFrames: what a lab's analysis code reads.

    import db

    with db.open("cortexloop.sqlite") as study:
        session = study.session("sub-01/ses-01")
        responses = session.responses()          # one row per trial and ROI
        by_image = responses.groupby(["stimulus", "roi"])["value"].mean()
        everyone = study.responses()             # every session, with subject and session columns

Every table is tidy (one observation per row) and carries ``subject`` and
``session`` (BIDS labels without their prefixes), so the tables of several
sessions and subjects concatenate as they are. The database is opened read-only
(:func:`db.open_database` with ``read_only=True``); nothing here writes.

The tables:

- :meth:`SessionFrames.runs`: a row per run (kind, status, round, TR, volumes planned and recorded);
- :meth:`SessionFrames.trials`: a row per trial (the image, its kind, condition, planned and actual onsets);
- :meth:`SessionFrames.responses`: a row per trial and ROI (the measured response, by method);
- :meth:`SessionFrames.predictions`: a row per model version, image and ROI;
- :meth:`SessionFrames.scores`: a row per score (metric, round, run, ROI);
- :meth:`SessionFrames.volumes`: a row per volume (status, times, file, framewise displacement).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, func, select
from sqlalchemy.orm import aliased

from db.database import Database, open_database
from db.models import (
    MeasuredResponse,
    Prediction,
    Presentation,
    Roi,
    Round,
    Run,
    Score,
    Session,
    Stimulus,
    Subject,
    Volume,
)
from db.queries import find_session

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SessionFrames", "Study", "open", "open_study"]

_WHO = ("subject", "session")


def open_study(target: str | Path) -> Study:
    """A session database (a SQLite path or an SQLAlchemy URL), read-only, as DataFrames."""
    return Study(open_database(target, read_only=True))


open = open_study  # db.open, as a lab writes it (this module opens no files)


class Study:
    """Every session of one database; the cross-session tables are the sessions' ones, concatenated."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def sessions(self) -> pd.DataFrame:
        """A row per session: subject, session, kind, status, started and ended (UTC)."""
        stmt = (
            select(
                Subject.label,
                Session.label,
                Session.kind,
                Session.status,
                Session.started_at,
                Session.ended_at,
                Session.id,
            )
            .join(Subject, Subject.id == Session.subject_id)
            .order_by(Session.id)
        )
        columns = [*_WHO, "kind", "status", "started_at", "ended_at", "session_id"]
        return self._frame(stmt, columns)

    def session(self, ref: str | int) -> SessionFrames:
        """One session, by ``sub-X/ses-Y`` or id (:class:`~db.base.RecordNotFoundError` if there is none)."""
        with self.database.reader() as s:
            found = find_session(s, str(ref))
            return SessionFrames(self, found.id, found.subject.label, found.label)

    def runs(self) -> pd.DataFrame:
        return self._across(SessionFrames.runs)

    def trials(self) -> pd.DataFrame:
        return self._across(SessionFrames.trials)

    def responses(self, method: str | None = None) -> pd.DataFrame:
        return self._across(lambda frames: frames.responses(method))

    def predictions(self) -> pd.DataFrame:
        return self._across(SessionFrames.predictions)

    def scores(self) -> pd.DataFrame:
        return self._across(SessionFrames.scores)

    def volumes(self) -> pd.DataFrame:
        return self._across(SessionFrames.volumes)

    def _across(self, table: Callable[[SessionFrames], pd.DataFrame]) -> pd.DataFrame:
        import pandas as pd

        ids = self.sessions()["session_id"].tolist()
        frames = [table(self.session(int(i))) for i in ids]
        return (
            pd.concat(frames, ignore_index=True) if frames else table(SessionFrames(self, -1, "", ""))
        )  # no session: the columns, no rows

    def _frame(self, stmt: Executable, columns: Sequence[str]) -> pd.DataFrame:
        import pandas as pd

        with self.database.reader() as s:
            rows = [tuple(_plain(v) for v in row) for row in s.execute(stmt)]
        frame = pd.DataFrame(rows, columns=list(columns))
        for column in frame.columns:  # integers with gaps stay integers (pandas' nullable Int64)
            values = [v for v in frame[column] if v is not None and v == v]
            if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                frame[column] = frame[column].astype("Int64")
        return frame

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SessionFrames:
    """One session's tables; each row names its subject and session."""

    def __init__(self, study: Study, session_id: int, subject: str, session: str) -> None:
        self.study, self.id, self.subject, self.label = study, session_id, subject, session

    def runs(self) -> pd.DataFrame:
        """A row per run: number, kind, status, round, TR, volumes planned and recorded, times (UTC)."""
        recorded = select(Volume.run_id, func.count(Volume.id).label("n")).group_by(Volume.run_id).subquery()
        stmt = (
            select(
                Run.index,
                Run.kind,
                Run.status,
                Round.index,
                Run.tr_s,
                Run.n_volumes_planned,
                func.coalesce(recorded.c.n, 0),
                Run.started_at,
                Run.first_trigger_at,
                Run.ended_at,
            )
            .outerjoin(Round, Round.id == Run.round_id)
            .outerjoin(recorded, recorded.c.run_id == Run.id)
            .where(Run.session_id == self.id)
            .order_by(Run.index)
        )
        columns = [
            "run",
            "kind",
            "status",
            "round",
            "tr_s",
            "n_volumes_planned",
            "n_volumes",
            "started_at",
            "first_trigger_at",
            "ended_at",
        ]
        return self._frame(stmt, columns)

    def trials(self) -> pd.DataFrame:
        """A row per trial: run, trial, the image (path, SHA-256, kind), condition, target, onsets (s)."""
        stmt = (
            select(
                Run.index,
                Presentation.trial_index,
                Stimulus.path,
                Stimulus.sha256,
                Stimulus.kind,
                Presentation.condition,
                Presentation.target_roi,
                Presentation.planned_onset_s,
                Presentation.planned_duration_s,
                Presentation.actual_onset_s,
                Presentation.actual_duration_s,
                Presentation.dropped_frames,
            )
            .join(Run, Run.id == Presentation.run_id)
            .join(Stimulus, Stimulus.id == Presentation.stimulus_id)
            .where(Run.session_id == self.id)
            .order_by(Run.index, Presentation.trial_index)
        )
        columns = [
            "run",
            "trial",
            "stimulus",
            "stimulus_sha256",
            "stimulus_kind",
            "condition",
            "target_roi",
            "planned_onset_s",
            "planned_duration_s",
            "actual_onset_s",
            "actual_duration_s",
            "dropped_frames",
        ]
        return self._frame(stmt, columns)

    def responses(self, method: str | None = None) -> pd.DataFrame:
        """A row per trial and ROI: the measured response (% signal change) by ``method`` (all if None).

        Columns: run, trial, stimulus, stimulus_kind, condition, target_roi, roi, method, value, stderr.
        """
        stmt = (
            select(
                Run.index,
                Presentation.trial_index,
                Stimulus.path,
                Stimulus.kind,
                Presentation.condition,
                Presentation.target_roi,
                Roi.name,
                MeasuredResponse.method,
                MeasuredResponse.value,
                MeasuredResponse.stderr,
            )
            .join(Presentation, Presentation.id == MeasuredResponse.presentation_id)
            .join(Run, Run.id == Presentation.run_id)
            .join(Stimulus, Stimulus.id == Presentation.stimulus_id)
            .join(Roi, Roi.id == MeasuredResponse.roi_id)
            .where(Run.session_id == self.id)
            .order_by(Run.index, Presentation.trial_index, Roi.id, MeasuredResponse.method)
        )
        if method is not None:
            stmt = stmt.where(MeasuredResponse.method == method)
        columns = [
            "run",
            "trial",
            "stimulus",
            "stimulus_kind",
            "condition",
            "target_roi",
            "roi",
            "method",
            "value",
            "stderr",
        ]
        return self._frame(stmt, columns)

    def predictions(self) -> pd.DataFrame:
        """A row per model version, image and ROI: the model's predicted response."""
        stmt = (
            select(Prediction.model_version_id, Stimulus.path, Stimulus.kind, Roi.name, Prediction.value)
            .join(Stimulus, Stimulus.id == Prediction.stimulus_id)
            .join(Roi, Roi.id == Prediction.roi_id)
            .where(Roi.session_id == self.id)
            .order_by(Prediction.model_version_id, Stimulus.path, Roi.id)
        )
        return self._frame(stmt, ["model_version", "stimulus", "stimulus_kind", "roi", "value"])

    def scores(self) -> pd.DataFrame:
        """A row per score: metric, round, run, ROI (empty for a session-wide score), value."""
        scored_run = aliased(Run)
        stmt = (
            select(Score.metric, Round.index, scored_run.index, Roi.name, Score.model_version_id, Score.value)
            .outerjoin(Round, Round.id == Score.round_id)
            .outerjoin(scored_run, scored_run.id == Score.run_id)
            .outerjoin(Roi, Roi.id == Score.roi_id)
            .where(Score.session_id == self.id)
            .order_by(Score.id)
        )
        return self._frame(stmt, ["metric", "round", "run", "roi", "model_version", "value"])

    def volumes(self) -> pd.DataFrame:
        """A row per volume: run, index, status, times (UTC), file and its SHA-256, framewise displacement."""
        stmt = (
            select(
                Run.index,
                Volume.index,
                Volume.status,
                Volume.acquired_at,
                Volume.arrived_at,
                Volume.processed_at,
                Volume.file_path,
                Volume.file_sha256,
                Volume.framewise_displacement_mm,
            )
            .join(Run, Run.id == Volume.run_id)
            .where(Run.session_id == self.id)
            .order_by(Run.index, Volume.index)
        )
        columns = [
            "run",
            "volume",
            "status",
            "acquired_at",
            "arrived_at",
            "processed_at",
            "file_path",
            "file_sha256",
            "framewise_displacement_mm",
        ]
        return self._frame(stmt, columns)

    def _frame(self, stmt: Executable, columns: Sequence[str]) -> pd.DataFrame:
        frame = self.study._frame(stmt, columns)
        frame.insert(0, "session", self.label)
        frame.insert(0, "subject", self.subject)
        return frame


def _plain(value: Any) -> Any:
    """Enums as their values, so that a column compares with plain strings."""
    return getattr(value, "value", value)
