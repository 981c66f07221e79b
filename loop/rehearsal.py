"""A synthetic rehearsal recording: one block-design run through the real write path, in a second.

ROI signals that follow a block design convolved with the canonical HRF
(:func:`loop.analysis.hrf.hrf`, sampled at the TR) with drift and noise,
written volume by volume with :class:`db.SessionRecorder` as the controller
writes them: a small recorded session for the database's
commands and their tests, without a virtual subject or an encoding model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from db import (
    Database,
    EventLevel,
    RoiSpec,
    RunKind,
    SessionKind,
    SessionRecorder,
    StimulusKind,
    VolumeStatus,
)
from loop.analysis.hrf import hrf

__all__ = ["RehearsalResult", "record_rehearsal"]

ROIS = ("V1", "V2", "V4", "LO", "animal", "place")
CATEGORIES = ("gratings", "objects", "animals", "scenes")
# How strongly each ROI responds to each category (rows: ROIS, columns: CATEGORIES).
SELECTIVITY = np.array(
    [
        [1.0, 0.6, 0.6, 0.6],
        [0.9, 0.7, 0.7, 0.7],
        [0.5, 0.9, 0.8, 0.7],
        [0.2, 1.0, 0.8, 0.5],
        [0.1, 0.4, 1.2, 0.2],
        [0.1, 0.3, 0.2, 1.2],
    ]
)


@dataclass(frozen=True, kw_only=True)
class RehearsalResult:
    session_id: int
    run_id: int
    n_volumes: int
    missing: tuple[int, ...]


def _write_stimulus(folder: Path, category: str, rng: np.random.Generator) -> tuple[Path, str]:
    size = 64
    y, x = np.mgrid[0:size, 0:size] / size
    base = {
        "gratings": np.sin(2 * np.pi * 6 * x),
        "objects": np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.05),
        "animals": np.sin(2 * np.pi * 3 * (x + y)),
        "scenes": y,
    }[category]
    noise = rng.normal(0, 0.1, (size, size))
    pixels = np.clip((base + noise - base.min()) / (np.ptp(base) + 0.2) * 255, 0, 255).astype(np.uint8)
    path = folder / f"{category}.png"
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def record_rehearsal(
    database: Database,
    stimulus_dir: Path,
    *,
    subject: str = "rehearsal",
    session: str = "01",
    tr_s: float = 2.0,
    n_blocks: int = 8,
    block_s: float = 12.0,
    seed: int = 0,
) -> RehearsalResult:
    """Record a rehearsal session of one block-design run; return what was written.

    One volume (index 3) is recorded as missing, with an event, as the bridge
    would report a gap.
    """
    rng = np.random.default_rng(seed)
    stimulus_dir.mkdir(parents=True, exist_ok=True)
    recorder = SessionRecorder.start(
        database,
        subject=subject,
        session=session,
        kind=SessionKind.SIMULATION,
        rois=[RoiSpec(name=name, label_value=i + 1) for i, name in enumerate(ROIS)],
        notes="synthetic rehearsal recorded by `cortexloop demo`",
    )
    stimuli = {}
    for category in CATEGORIES:
        path, sha = _write_stimulus(stimulus_dir, category, rng)
        stimuli[category] = recorder.record_stimulus(sha256=sha, path=str(path), kind=StimulusKind.NATURAL)

    # Blocks alternate with rest of the same length.
    order = [CATEGORIES[i % len(CATEGORIES)] for i in rng.permutation(n_blocks)]
    n_volumes = round(2 * n_blocks * block_s / tr_s) + round(16 / tr_s)
    run_id = recorder.start_run(kind=RunKind.TRAINING, tr_s=tr_s, n_volumes_planned=n_volumes)
    trials = []
    drive = np.zeros((n_volumes, len(CATEGORIES)))
    for trial, category in enumerate(order):
        onset = trial * 2 * block_s
        first, last = int(onset / tr_s), int((onset + block_s) / tr_s)
        drive[first:last, CATEGORIES.index(category)] = 1.0
        trials.append(
            {
                "stimulus_id": stimuli[category],
                "trial_index": trial,
                "condition": category,
                "planned_onset_s": onset,
                "planned_duration_s": block_s,
            }
        )
    recorder.record_presentations(run_id, trials)

    hrf_samples = hrf(np.arange(0.0, 32.0, tr_s))
    neural = drive @ SELECTIVITY.T  # (n_volumes, n_rois)
    bold = np.apply_along_axis(lambda c: np.convolve(c, hrf_samples)[:n_volumes], 0, neural)
    drift = np.linspace(0, 1, n_volumes)[:, None] * rng.normal(0, 0.5, len(ROIS))
    signal = 1000 + 20 * bold + drift + rng.normal(0, 2.0, bold.shape)

    start = dt.datetime.now(dt.UTC)
    recorder.mark_first_trigger(run_id, start)
    missing = (3,)
    for trial in range(len(order)):
        jitter = float(rng.normal(0.004, 0.002))  # a flip lands a few ms after its plan
        recorder.record_onset(
            run_id,
            trial,
            actual_onset_s=trial * 2 * block_s + jitter,
            actual_duration_s=block_s,
            dropped_frames=0,
        )
    for index in range(n_volumes):
        acquired = start + dt.timedelta(seconds=index * tr_s)
        if index in missing:
            recorder.record_volume(run_id, index, roi_signals={}, status=VolumeStatus.MISSING)
            recorder.record_event(
                EventLevel.WARNING, "bridge", "volume.missing",
                f"volume {index} did not arrive within 2 TRs; moved on",
                run_id=run_id, volume_index=index,
            )  # fmt: skip
            continue
        recorder.record_volume(
            run_id,
            index,
            roi_signals=dict(zip(ROIS, signal[index].tolist(), strict=True)),
            acquired_at=acquired,
            arrived_at=acquired + dt.timedelta(milliseconds=150),
            processed_at=acquired + dt.timedelta(milliseconds=170),
        )
    recorder.end_run(run_id)
    recorder.end_session()
    return RehearsalResult(
        session_id=recorder.session_id, run_id=run_id, n_volumes=n_volumes, missing=missing
    )
