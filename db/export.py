"""Exporting a session as BIDS-style files that analysis tools read directly.

Per run: ``sub-X_ses-Y_task-T_run-N_events.tsv`` with its JSON sidecar, and
``..._desc-roi_timeseries.tsv`` (one row per volume, one column per ROI,
``n/a`` where a volume is missing) with its sidecar. Per session: a stimuli
table and the event log.
"""

from __future__ import annotations

import logging
from pathlib import Path

from db.base import EVENTS_SIDECAR, RunKind, write_json, write_tsv
from db.database import Database
from db.queries import (
    find_session,
    roi_timeseries,
    run_trials,
    session_events,
    session_stimuli,
)

__all__ = ["export_session"]

logger = logging.getLogger(__name__)

_TASK = {RunKind.TRAINING: "training", RunKind.CLOSED_LOOP: "closedloop", RunKind.LOCALIZER: "localizer"}


def export_session(database: Database, ref: str, out_dir: Path) -> list[Path]:
    """Write one session's runs, ROI time series, stimuli and events under ``out_dir``.

    Returns
    -------
    list of Path
        Every file written, in the order written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with database.reader() as s:
        sess = find_session(s, ref)
        prefix = f"sub-{sess.subject.label}_ses-{sess.label}"
        for run in sess.runs:
            stem = f"{prefix}_task-{_TASK[run.kind]}_run-{run.index:02d}"

            events = out_dir / f"{stem}_events.tsv"
            write_tsv(
                events,
                list(EVENTS_SIDECAR),
                (
                    (
                        t.actual_onset_s if t.actual_onset_s is not None else t.planned_onset_s,
                        t.actual_duration_s if t.actual_duration_s is not None else t.planned_duration_s,
                        t.condition,
                        t.planned_onset_s,
                        t.actual_onset_s is not None,
                        t.stimulus_path,
                        t.stimulus_sha256,
                        t.stimulus_kind,
                        t.target_roi,
                        t.dropped_frames,
                    )
                    for t in run_trials(s, run.id)
                ),
            )
            write_json(events.with_suffix(".json"), EVENTS_SIDECAR)
            written += [events, events.with_suffix(".json")]

            ts = roi_timeseries(s, run.id)
            series = out_dir / f"{stem}_desc-roi_timeseries.tsv"
            write_tsv(
                series,
                ["volume", "status", *ts.roi_names],
                ([i, st, *vals] for i, st, vals in zip(ts.volume_index, ts.status, ts.values, strict=True)),
            )
            write_json(
                series.with_suffix(".json"),
                {
                    "RepetitionTime": run.tr_s,
                    "Description": "Mean BOLD signal of each ROI per volume; n/a where the "
                    "volume never arrived",
                    "Columns": ["volume", "status", *ts.roi_names],
                    "RunKind": run.kind.value,
                    "RunStatus": run.status.value,
                },
            )
            written += [series, series.with_suffix(".json")]

        stimuli = out_dir / f"{prefix}_stimuli.tsv"
        write_tsv(
            stimuli,
            ["sha256", "path", "kind", "target_roi", "seed", "n_presentations"],
            (
                (r.sha256, r.path, r.kind, r.target_roi, r.seed, r.n_presentations)
                for r in session_stimuli(s, sess.id)
            ),
        )
        log = out_dir / f"{prefix}_log.tsv"
        write_tsv(
            log,
            ["time", "level", "source", "code", "run", "volume", "message"],
            (
                (e.at.isoformat(), e.level, e.source, e.code, e.run_index, e.volume_index, e.message)
                for e in session_events(s, sess.id)
            ),
        )
        written += [stimuli, log]
    logger.info("exported %d files to %s", len(written), out_dir)
    return written
