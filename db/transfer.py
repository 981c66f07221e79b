"""Copying a whole session from one database into another, in the writer's transaction.

A sweep's sessions run on workers, each into a SQLite file on its own disk;
the sweep database (a lab's PostgreSQL, or a file) receives each session's
records when it is done. :func:`copy_session` copies every row of one
session (its subject, ROIs, model versions, rounds, runs, presentations,
volumes, ROI signals, predictions, measured responses, scores and events,
and the stimuli it showed) with new ids, inside the caller's transaction:
a copy that fails or is killed leaves nothing behind. Stimuli are
identified by content: one the target holds already (another session
showed the same image) is shared, not copied twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session as OrmSession

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
from db.queries import find_session

__all__ = ["SessionExistsError", "copy_session"]

Ids = dict[int, int]


class SessionExistsError(ValueError):
    """The target database holds a session with the same subject and label."""


def copy_session(reader: OrmSession, writer: OrmSession, ref: str) -> int:
    """Copy session ``ref`` (an id or ``sub-X/ses-Y``) read by ``reader`` into ``writer``'s database.

    Returns the session's id in the target. Raises :class:`SessionExistsError`
    when the target has a session of that subject and label already.
    """
    source = find_session(reader, ref)
    subject = reader.get_one(Subject, source.subject_id)
    target_subject = writer.scalar(select(Subject.id).where(Subject.label == subject.label))
    if target_subject is None:
        target_subject = _insert(writer, Subject, [_row(subject)], {})[0]
    elif writer.scalar(
        select(Session.id).where(Session.subject_id == target_subject, Session.label == source.label)
    ):
        raise SessionExistsError(
            f"session sub-{subject.label}/ses-{source.label} is in the target database already"
        )
    sid = source.id
    session = _insert(writer, Session, [_row(source)], {"subject_id": {source.subject_id: target_subject}})[0]
    ids: dict[str, Ids] = {"session_id": {sid: session}}
    ids["roi_id"] = _copy(reader, writer, Roi, Roi.session_id == sid, ids)
    models = reader.scalars(
        select(EncodingModelVersion)
        .where(EncodingModelVersion.session_id == sid)
        .order_by(EncodingModelVersion.id)
    ).all()
    ids["model_version_id"] = {}
    for model in models:  # one at a time: a refit names its parent, copied before it
        ids["model_version_id"][model.id] = _insert(
            writer,
            EncodingModelVersion,
            [_row(model)],
            {"session_id": ids["session_id"], "parent_id": ids["model_version_id"]},
        )[0]
    ids["refit_model_version_id"] = ids["parent_id"] = ids["model_version_id"]
    ids["round_id"] = _copy(reader, writer, Round, Round.session_id == sid, ids)
    ids["run_id"] = _copy(reader, writer, Run, Run.session_id == sid, ids)
    runs = list(ids["run_id"])
    ids["stimulus_id"] = _stimuli(reader, writer, runs, list(ids["model_version_id"]), ids)
    ids["presentation_id"] = _copy(reader, writer, Presentation, Presentation.run_id.in_(runs), ids)
    ids["volume_id"] = _copy(reader, writer, Volume, Volume.run_id.in_(runs), ids)
    _copy(reader, writer, RoiSignal, RoiSignal.volume_id.in_(list(ids["volume_id"])), ids, keys=False)
    models_ = list(ids["model_version_id"])
    _copy(reader, writer, Prediction, Prediction.model_version_id.in_(models_), ids, keys=False)
    presentations = list(ids["presentation_id"])
    _copy(
        reader, writer, MeasuredResponse, MeasuredResponse.presentation_id.in_(presentations), ids, keys=False
    )
    _copy(reader, writer, Score, Score.session_id == sid, ids, keys=False)
    _copy(reader, writer, Event, Event.session_id == sid, ids, keys=False)
    return session


def _stimuli(
    reader: OrmSession, writer: OrmSession, runs: list[int], models: list[int], ids: dict[str, Ids]
) -> Ids:
    """The session's stimuli (shown in its runs or made by its models), shared by content."""
    shown = select(Presentation.stimulus_id).where(Presentation.run_id.in_(runs))
    rows = reader.scalars(
        select(Stimulus)
        .where(Stimulus.id.in_(shown) | Stimulus.model_version_id.in_(models))
        .order_by(Stimulus.id)
    ).all()
    there = dict(
        writer.execute(
            select(Stimulus.sha256, Stimulus.id).where(Stimulus.sha256.in_([r.sha256 for r in rows]))
        ).all()
    )
    mapping = {r.id: there[r.sha256] for r in rows if r.sha256 in there}
    new = [r for r in rows if r.sha256 not in there]
    mapping.update(
        zip((r.id for r in new), _insert(writer, Stimulus, [_row(r) for r in new], ids), strict=True)
    )
    return mapping


def _copy(
    reader: OrmSession,
    writer: OrmSession,
    kind: type[Any],
    where: Any,
    ids: Mapping[str, Ids],
    *,
    keys: bool = True,
) -> Ids:
    """Copy the rows of ``kind`` that ``where`` selects, their references mapped by ``ids``.

    Returns old id -> new id (empty with ``keys=False``, for rows nothing refers to).
    """
    table: Table = kind.__table__
    order = [c for c in table.primary_key.columns]
    rows = [dict(r) for r in reader.execute(select(table).where(where).order_by(*order)).mappings()]
    if not keys:
        if rows:
            writer.execute(insert(table), [_mapped(r, ids, drop_id="id" in table.c) for r in rows])
        return {}
    return dict(zip((r["id"] for r in rows), _insert(writer, kind, rows, ids), strict=True))


def _insert(
    writer: OrmSession, kind: type[Any], rows: Sequence[Mapping[str, Any]], ids: Mapping[str, Ids]
) -> list[int]:
    """Insert ``rows`` (without their ids, references mapped); their new ids, in order."""
    if not rows:
        return []
    table: Table = kind.__table__
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(writer.execute(statement, [_mapped(r, ids, drop_id=True) for r in rows]).scalars())


def _mapped(row: Mapping[str, Any], ids: Mapping[str, Ids], *, drop_id: bool) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not (drop_id and k == "id")}
    for column, mapping in ids.items():
        if out.get(column) is not None:
            out[column] = mapping.get(out[column])  # a reference outside the session: dropped
    return out


def _row(record: Any) -> dict[str, Any]:
    """An ORM record's column values, by column name."""
    return {c.name: getattr(record, c.key) for c in record.__table__.columns}
