"""Run plans the controller sends the presenter: the training run and each round's run.

Stimuli are written once into the presenter's stimulus folder as PNG files
and referred to by path and SHA-256. A run's trials come in a random order
drawn from the session's seed and the run's number, so a resumed session
plans the same run again. In an event-related design every image is one
trial, ``isi_s`` apart; in a block design images come in blocks of
:data:`BLOCK_TRIALS` back to back, with :data:`BLOCK_REST_S` of fixation
between blocks. Every run starts with ``lead_in_s`` and ends with
``lead_out_s`` of fixation, so the last response is measured.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from db.base import write_atomic
from stimulus.present import PlannedTrial, RunPlan
from stimulus.present.plan import FixationSettings

__all__ = [
    "BLOCK_REST_S",
    "BLOCK_TRIALS",
    "Design",
    "PlannedStimulus",
    "Timing",
    "plan_run",
    "save_png",
    "training_order",
]

BLOCK_TRIALS = 8
BLOCK_REST_S = 12.0

Design = Literal["event", "block"]


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How a run lays its trials out in time: a session file's ``[training]`` or ``[rounds]``."""

    trial_s: float  # how long each image is shown
    isi_s: float  # onset to onset, in an event design
    lead_in_s: float  # fixation before the first trial
    lead_out_s: float  # fixation after the last, so that its response is measured
    design: Design = "event"


@dataclass(frozen=True)
class PlannedStimulus:
    """An image file in the stimulus folder and what it is for."""

    path: str  # relative to the stimulus folder
    sha256: str
    condition: str  # natural, synthesized, best_natural, median_natural
    target_roi: str | None = None


def png_bytes(pixels: npt.NDArray[np.floating[Any]]) -> bytes:
    """(3, H, W) pixels on 0..1 as a PNG file's bytes."""
    import io

    image = Image.fromarray((np.clip(pixels, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(pixels: npt.NDArray[np.floating[Any]], folder: Path, name: str) -> tuple[str, str]:
    """Write (3, H, W) pixels on 0..1 as ``folder/name`` atomically; return (name, SHA-256)."""
    data = png_bytes(pixels)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / name, data)
    return name, hashlib.sha256(data).hexdigest()


def training_order(n_images: int, repeated: int, repeats: int, seed: int) -> list[int]:
    """Image indices of a training run: each image once, the first ``repeated`` ``repeats`` times, shuffled.

    Repeats of one image are never back to back.
    """
    rng = np.random.default_rng(seed)
    items = list(range(n_images)) + [k for k in range(repeated) for _ in range(repeats - 1)]
    for _ in range(100):
        order = [items[i] for i in rng.permutation(len(items))]
        if all(a != b for a, b in pairwise(order)):
            return order
    return order


def planned_volumes(n_trials: int, *, tr_s: float, timing: Timing) -> int:
    """How many volumes a run of ``n_trials`` acquires (what :func:`plan_run` will plan)."""
    placeholder = PlannedStimulus("placeholder.png", "0" * 64, "natural")
    return plan_run("count", [placeholder] * n_trials, tr_s=tr_s, timing=timing).n_volumes


def plan_run(
    run_id: str,
    stimuli: Sequence[PlannedStimulus],
    *,
    tr_s: float,
    timing: Timing,
    shuffle_seed: int | None = None,
    fixation: FixationSettings | None = None,
) -> RunPlan:
    """A plan showing ``stimuli`` (in their order, or shuffled with ``shuffle_seed``), with ``fixation``."""
    order = list(range(len(stimuli)))
    if shuffle_seed is not None:
        order = [int(i) for i in np.random.default_rng(shuffle_seed).permutation(len(stimuli))]
    onsets = []
    t = timing.lead_in_s
    block = timing.design == "block"
    for k in range(len(order)):
        if block and k and k % BLOCK_TRIALS == 0:
            t += BLOCK_REST_S
        onsets.append(t)
        t += timing.trial_s if block else timing.isi_s
    end = (onsets[-1] + timing.trial_s if onsets else timing.lead_in_s) + timing.lead_out_s
    trials = tuple(
        PlannedTrial(
            stimulus=stimuli[i].path,
            sha256=stimuli[i].sha256,
            onset_s=round(onset, 6),
            duration_s=timing.trial_s,
            condition=stimuli[i].condition,
            target_roi=stimuli[i].target_roi,
        )
        for i, onset in zip(order, onsets, strict=True)
    )
    return RunPlan(
        run_id=run_id,
        tr_s=tr_s,
        n_volumes=math.ceil(end / tr_s),
        trials=trials,
        fixation=fixation or FixationSettings(),
    )
