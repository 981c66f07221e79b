"""Replay: the analysis of a recorded session run again from its files, and compared with the record.

For every run of a session, each volume is read back from the file it was
recorded from and goes through the same real-time path as in the session
(:class:`RunAnalyzer`: registration, ROI means, model voxels); after the
run, single-trial responses are estimated from the recorded onsets, as the
controller did. Each is compared with what the database holds: the ROI
signal of every volume, its framewise displacement, every trial's measured
response. A file that is gone, or differs from its recorded SHA-256, is
reported and its volume left out, as a missing volume was then.

Differences at the level of floating-point rounding are what a faithful
record gives; anything larger means the files, the atlas or the code
changed since the session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from db import Database
from db.base import ConfigError, Status, VolumeStatus
from db.queries import (
    Reader,
    ResponseRow,
    RunRow,
    SessionInfo,
    measured_responses,
    roi_timeseries,
    run_trials,
    run_volumes,
    session_info,
    session_runs,
)
from loop.analysis.design import Trial
from loop.analysis.realtime import RunAnalyzer
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.dataset import single_trial_responses
from loop.folder import Relocation
from scanner_bridge.readers import read_part

__all__ = ["RunReplay", "replay_session", "session_atlas"]

Array = npt.NDArray[np.float64]


@dataclass
class RunReplay:
    """One run replayed: what could be read, and how far the replay is from the record."""

    index: int
    kind: str
    volumes: int = 0  # replayed from their files
    recorded: int = 0  # recorded with a file
    unreadable: list[str] = field(default_factory=list)  # files gone or changed since
    max_signal_diff: float = float("nan")  # largest |replayed - recorded| ROI signal
    max_fd_diff_mm: float = float("nan")
    max_response_diff: float = float("nan")  # percent signal change
    response_r: float = float("nan")  # replayed against recorded responses, all trials and ROIs

    @property
    def faithful(self) -> bool:
        """Every volume read back, and the replay equals the record to rounding."""
        close = all(
            not np.isfinite(d) or d < 1e-6
            for d in (self.max_signal_diff, self.max_fd_diff_mm, self.max_response_diff)
        )
        return not self.unreadable and self.volumes == self.recorded and close


def session_atlas(session: SessionInfo, located: Relocation | None = None) -> RoiAtlas:
    """The session's ROI atlas: the recorded label image with the recorded ROI names."""
    if not session.atlas_path:
        raise ConfigError(f"session {session.ref} recorded no atlas; it cannot be replayed")
    path = (located or Relocation()).path(session.atlas_path)
    if not path.is_file():
        raise ConfigError(f"the session's atlas {path} is gone; replay needs the files the session used")
    if session.atlas_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != session.atlas_sha256:
        raise ConfigError(f"the atlas {path} has changed since the session (its SHA-256 differs)")
    image: Any = nib.load(path)
    return RoiAtlas(
        labels=np.asarray(image.dataobj).astype(np.int16),
        affine=np.asarray(image.affine, dtype=np.float64),
        names={r.label_value: r.name for r in session.rois if r.label_value is not None},
    )


def replay_session(
    database: Database,
    ref: str,
    *,
    runs: Sequence[int] | None = None,
    database_file: Path | None = None,
    folder: Path | None = None,
) -> list[RunReplay]:
    """Replay every completed run of session ``ref`` (or those numbered in ``runs``).

    A session whose folder moved is read from ``folder``, or from beside
    ``database_file`` (:class:`~loop.folder.Relocation`); each volume file is
    checked against its recorded SHA-256.
    """
    with database.reader() as s:
        session = session_info(s, ref)
        located = Relocation.find(session.config_toml, database_file=database_file, folder=folder)
        atlas = session_atlas(session, located)
        signals = RoiSignals(atlas, atlas.labelled_voxels())  # the controller's voxels
        completed = session_runs(s, session.id, status=Status.COMPLETED)
        chosen = [run for run in completed if runs is None or run.index in runs]
        return [_replay_run(s, session.id, run, signals, located) for run in chosen]


def _replay_run(
    s: Reader, session_id: int, run: RunRow, signals: RoiSignals, located: Relocation
) -> RunReplay:
    n_volumes = run.n_volumes_planned or 0
    trials = run_trials(s, run.id)
    analyzer = RunAnalyzer(
        signals, run.tr_s, n_volumes, max_trials=max(len(trials), 1), voxel_mm=signals.atlas.voxel_mm
    )
    result = RunReplay(run.index, run.kind)
    indices: list[int] = []
    values: list[Array] = []
    motion: list[Array] = []
    fd_diff: list[float] = []
    replayed: dict[int, Array] = {}
    for volume in run_volumes(s, run.id):
        if volume.status is VolumeStatus.MISSING or not volume.file_path:
            continue
        path = str(located.path(volume.file_path))
        result.recorded += 1
        try:
            raw = Path(path).read_bytes()
        except OSError:
            result.unreadable.append(path)
            continue
        if volume.file_sha256 and hashlib.sha256(raw).hexdigest() != volume.file_sha256:
            result.unreadable.append(path)
            continue
        part = read_part(path, raw)
        if part.is_slice:
            raise ConfigError(
                f"{path} is one slice of a volume: replay reads whole-volume files (NIfTI, mosaic or "
                "enhanced DICOM), and this session recorded only each volume's first slice file"
            )
        if not indices:
            signals.check(part.data.shape, part.affine)  # as the controller did with the run's first volume
        analysed = analyzer.process(volume.index, part.data)
        indices.append(volume.index)
        values.append(analysed.values)
        motion.append(analysed.motion)
        replayed[volume.index] = analysed.values[: len(signals.roi_names)]
        if volume.framewise_displacement_mm is not None:
            fd_diff.append(abs(analysed.fd_mm - volume.framewise_displacement_mm))
    result.volumes = len(indices)
    recorded = roi_timeseries(s, run.id)
    order = [recorded.roi_names.index(name) for name in signals.roi_names]
    diffs = [
        abs(np.asarray(row, dtype=np.float64)[order] - replayed[index]).max()
        for index, row in zip(recorded.volume_index, recorded.values, strict=True)
        if index in replayed and None not in row
    ]
    result.max_signal_diff = float(max(diffs)) if diffs else float("nan")
    result.max_fd_diff_mm = float(max(fd_diff)) if fd_diff else float("nan")
    if indices and trials and all(t.actual_onset_s is not None for t in trials):
        design = [
            Trial(t.actual_onset_s or 0.0, t.actual_duration_s or t.planned_duration_s, str(t.trial_index))
            for t in trials
        ]
        responses = single_trial_responses(
            np.stack(values), indices, design, run.tr_s, n_volumes, motion=np.stack(motion)
        )[:, : len(signals.roi_names)]
        recorded_responses = measured_responses(s, session_id, run_id=run.id)
        if recorded_responses:
            stored = _by_trial(recorded_responses, len(trials), signals.roi_names)
            result.max_response_diff = float(np.abs(responses - stored).max())
            result.response_r = float(np.corrcoef(responses.ravel(), stored.ravel())[0, 1])
    return result


def _by_trial(rows: list[ResponseRow], n_trials: int, roi_names: list[str]) -> Array:
    """(n_trials, n_rois) responses from the database's rows (NaN where one is not recorded)."""
    out = np.full((n_trials, len(roi_names)), np.nan)
    for row in rows:
        out[row.trial_index, roi_names.index(row.roi)] = row.value
    return out
