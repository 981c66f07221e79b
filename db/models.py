"""The session database schema (SQLAlchemy 2.0 declarative).

One session of one subject holds runs; closed-loop runs belong to rounds.
Each run holds the presentations the presenter reported and the volumes the
bridge delivered; each volume holds one signal per ROI. Encoding-model
versions, stimuli, predictions, measured responses and scores tie the
science to those raw records, and the event log keeps every warning, gap
and error with the run and volume it concerns.

Large arrays (volumes, model weights, voxel responses) never go into rows:
they live in files that rows reference by path and SHA-256.

Timestamps are aware UTC datetimes (``UTCDateTime``). Times within a run
(onsets, durations) are float seconds from the run's first trigger, named
with an ``_s`` suffix.

The migrations in ``db/migrations/versions`` must build exactly this schema;
``tests/db/test_schema.py`` compares the two.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Enum,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db._types import UTCDateTime, utcnow
from db.base.enums import (
    EventLevel,
    ResponseMethod,
    RunKind,
    SessionKind,
    Status,
    StimulusKind,
    VolumeStatus,
)

__all__ = [
    "Base",
    "EncodingModelVersion",
    "Event",
    "MeasuredResponse",
    "Prediction",
    "Presentation",
    "Roi",
    "RoiSignal",
    "Round",
    "Run",
    "SchemaHistory",
    "Score",
    "Session",
    "Stimulus",
    "Subject",
    "Sweep",
    "SweepSession",
    "Volume",
]

# Stable constraint names, so later migrations can alter them on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA256_LENGTH = 64


def _enum(cls: type[enum.StrEnum]) -> Enum:
    # VARCHAR + CHECK rather than a native type: identical on SQLite and
    # PostgreSQL, and new members need no ALTER TYPE.
    return Enum(
        cls,
        name=cls.__name__.lower(),
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Subject(Base):
    __tablename__ = "subjects"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(64), unique=True)  # BIDS "sub-" label, e.g. "01"
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    notes: Mapped[str | None] = mapped_column(Text)

    sessions: Mapped[list[Session]] = relationship(back_populates="subject")


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("subject_id", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    label: Mapped[str] = mapped_column(String(64))  # BIDS "ses-" label
    kind: Mapped[SessionKind] = mapped_column(_enum(SessionKind))
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.RUNNING)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    cortexloop_version: Mapped[str] = mapped_column(String(32))
    config_toml: Mapped[str | None] = mapped_column(Text)  # the session file, verbatim
    config_sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    atlas_path: Mapped[str | None] = mapped_column(Text)  # ROI label image
    atlas_sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    notes: Mapped[str | None] = mapped_column(Text)

    subject: Mapped[Subject] = relationship(back_populates="sessions")
    runs: Mapped[list[Run]] = relationship(back_populates="session", order_by="Run.index")
    rounds: Mapped[list[Round]] = relationship(back_populates="session", order_by="Round.index")
    rois: Mapped[list[Roi]] = relationship(back_populates="session", order_by="Roi.id")


class Roi(Base):
    """A region of interest of one session's atlas."""

    __tablename__ = "rois"
    __table_args__ = (UniqueConstraint("session_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    name: Mapped[str] = mapped_column(String(64))
    label_value: Mapped[int | None]  # its value in the atlas label image
    n_voxels: Mapped[int | None]

    session: Mapped[Session] = relationship(back_populates="rois")


class EncodingModelVersion(Base):
    """One fitted encoding model; the weights live in the artifact file."""

    __tablename__ = "encoding_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("encoding_models.id"))  # refit from
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    backbone: Mapped[str] = mapped_column(String(64))
    layers: Mapped[dict[str, Any] | None]  # layer names and reduction settings
    artifact_path: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    n_training_stimuli: Mapped[int | None]
    description: Mapped[str | None] = mapped_column(Text)


class Round(Base):
    """One closed-loop round: choose targets, synthesize, present, score, refit."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("session_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    index: Mapped[int]
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.RUNNING)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("encoding_models.id"))
    refit_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("encoding_models.id"))
    policy: Mapped[str | None] = mapped_column(String(64))
    targets: Mapped[dict[str, Any] | None]  # {"rois": [...], ...} as the policy chose them

    session: Mapped[Session] = relationship(back_populates="rounds")
    runs: Mapped[list[Run]] = relationship(back_populates="round")


class Run(Base):
    """One scanner run: a stream of volumes and the presentations during it."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("session_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"), index=True)
    index: Mapped[int]  # BIDS "run-" number, 1-based within the session
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind))
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.RUNNING)
    tr_s: Mapped[float] = mapped_column(Float)
    n_volumes_planned: Mapped[int | None]
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    first_trigger_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]

    session: Mapped[Session] = relationship(back_populates="runs")
    round: Mapped[Round | None] = relationship(back_populates="runs")
    volumes: Mapped[list[Volume]] = relationship(back_populates="run", order_by="Volume.index")
    presentations: Mapped[list[Presentation]] = relationship(
        back_populates="run", order_by="Presentation.trial_index"
    )


class Stimulus(Base):
    """An image, identified by the SHA-256 of its file's content."""

    __tablename__ = "stimuli"

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH), unique=True)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[StimulusKind] = mapped_column(_enum(StimulusKind))
    target_roi: Mapped[str | None] = mapped_column(String(64))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("encoding_models.id"))
    synthesis_params: Mapped[dict[str, Any] | None]
    seed: Mapped[int | None]
    width: Mapped[int | None]
    height: Mapped[int | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Presentation(Base):
    """One trial: a stimulus planned at an onset and, once shown, its actual onset."""

    __tablename__ = "presentations"
    __table_args__ = (UniqueConstraint("run_id", "trial_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"), index=True)
    trial_index: Mapped[int]
    condition: Mapped[str | None] = mapped_column(String(64))  # e.g. "target", "best-natural"
    target_roi: Mapped[str | None] = mapped_column(String(64))
    planned_onset_s: Mapped[float] = mapped_column(Float)
    planned_duration_s: Mapped[float] = mapped_column(Float)
    actual_onset_s: Mapped[float | None] = mapped_column(Float)  # flip time; None until shown
    actual_duration_s: Mapped[float | None] = mapped_column(Float)
    dropped_frames: Mapped[int | None]

    run: Mapped[Run] = relationship(back_populates="presentations")
    stimulus: Mapped[Stimulus] = relationship()


class Volume(Base):
    """One volume of a run, by index; a missing volume is a row too."""

    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("run_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    index: Mapped[int]  # 0-based acquisition order within the run
    status: Mapped[VolumeStatus] = mapped_column(_enum(VolumeStatus), default=VolumeStatus.OK)
    acquired_at: Mapped[dt.datetime | None]
    arrived_at: Mapped[dt.datetime | None]
    processed_at: Mapped[dt.datetime | None]
    file_path: Mapped[str | None] = mapped_column(Text)
    file_sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH))
    framewise_displacement_mm: Mapped[float | None] = mapped_column(Float)

    run: Mapped[Run] = relationship(back_populates="volumes")
    roi_signals: Mapped[list[RoiSignal]] = relationship(back_populates="volume")


class RoiSignal(Base):
    """The mean signal of one ROI in one volume."""

    __tablename__ = "roi_signals"

    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id"), primary_key=True)
    roi_id: Mapped[int] = mapped_column(ForeignKey("rois.id"), primary_key=True)
    value: Mapped[float] = mapped_column(Float)

    volume: Mapped[Volume] = relationship(back_populates="roi_signals")
    roi: Mapped[Roi] = relationship()


class Prediction(Base):
    """A model version's predicted response of one ROI to one stimulus."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("model_version_id", "stimulus_id", "roi_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("encoding_models.id"))
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"), index=True)
    roi_id: Mapped[int] = mapped_column(ForeignKey("rois.id"))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class MeasuredResponse(Base):
    """The measured response (beta) of one ROI to one presentation."""

    __tablename__ = "measured_responses"
    __table_args__ = (UniqueConstraint("presentation_id", "roi_id", "method"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    presentation_id: Mapped[int] = mapped_column(ForeignKey("presentations.id"))
    roi_id: Mapped[int] = mapped_column(ForeignKey("rois.id"))
    method: Mapped[ResponseMethod] = mapped_column(_enum(ResponseMethod))
    value: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Score(Base):
    """A named figure of merit: per round, run, model version and/or ROI."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    round_id: Mapped[int | None] = mapped_column(ForeignKey("rounds.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("encoding_models.id"))
    roi_id: Mapped[int | None] = mapped_column(ForeignKey("rois.id"))
    metric: Mapped[str] = mapped_column(String(64))  # e.g. "pearson_r", "target_vs_nontarget_t"
    value: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Event(Base):
    """The event log: warnings, gaps, errors and milestones, in order."""

    __tablename__ = "events"
    __table_args__ = (Index(None, "session_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    level: Mapped[EventLevel] = mapped_column(_enum(EventLevel))
    source: Mapped[str] = mapped_column(String(64))  # the component: "bridge", "controller"...
    code: Mapped[str] = mapped_column(String(64))  # machine-readable, e.g. "volume.missing"
    message: Mapped[str] = mapped_column(Text)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    volume_index: Mapped[int | None]
    details: Mapped[dict[str, Any] | None]


class Sweep(Base):
    """A protocol sweep (``cortexloop sweep``): simulated sessions, settings x seeds, under one name."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    definition: Mapped[str] = mapped_column(Text)  # the sweep file, verbatim, as last run
    base_toml: Mapped[str | None] = mapped_column(Text)  # the base session file it varies
    cortexloop_version: Mapped[str] = mapped_column(String(32))

    sessions: Mapped[list[SweepSession]] = relationship(back_populates="sweep", order_by="SweepSession.id")


class SweepSession(Base):
    """One setting and seed of a sweep: the session it ran (its records copied in), or why it failed."""

    __tablename__ = "sweep_sessions"
    __table_args__ = (UniqueConstraint("sweep_id", "setting", "seed"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id"))
    setting: Mapped[str] = mapped_column(String(128))  # its name in the sweep file
    seed: Mapped[int]
    overrides: Mapped[dict[str, Any]]  # the setting's changes to the base session file, by section
    status: Mapped[Status] = mapped_column(_enum(Status))  # completed, or aborted (see error)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), unique=True)
    worker: Mapped[str | None] = mapped_column(String(256))  # where it ran
    seconds: Mapped[float | None] = mapped_column(Float)  # how long the session took there
    figures: Mapped[dict[str, Any] | None]  # the control benchmark's measures (loop.efficacy)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    sweep: Mapped[Sweep] = relationship(back_populates="sessions")


class SchemaHistory(Base):
    """One row per schema upgrade: which revision, by which cortexloop, when.

    Alembic's own table holds only the current revision; this one lets an
    older cortexloop tell its user which version wrote a newer database.
    """

    __tablename__ = "schema_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[str] = mapped_column(String(32))
    cortexloop_version: Mapped[str] = mapped_column(String(32))
    upgraded_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
