"""A session's outcome, read back from its database: the numbers a report and a reviewer look at.

:func:`session_outcome` pools every closed-loop round of a session: for each
ROI that images were synthesized for, its measured response to them
(averaged over an image's showings in its round)
against its response to the images synthesized for the other ROIs (paper
000's Experiment 2, over the whole session), and each round's mean
measured drive. Everything comes from the recorded responses
(least-squares-separate), so a session is judged the same way whether it
has just ended or was recorded long ago.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from db.base import RunKind
from db.queries import Reader, measured_responses, session_info, session_scores
from loop.scoring import Metric, TargetContrast, target_vs_nontarget

__all__ = ["SessionOutcome", "session_outcome"]


@dataclass(frozen=True)
class SessionOutcome:
    session: str
    contrasts: list[TargetContrast]  # per target ROI, pooled over rounds
    round_drive: dict[int, float]  # round index -> mean measured response of targets to their images

    @property
    def driven(self) -> list[str]:
        """The target ROIs its images drove above the other targets' images (t > 0, p < 0.05)."""
        return [c.roi for c in self.contrasts if c.drives_target]


def session_outcome(s: Reader, ref: str) -> SessionOutcome:
    info = session_info(s, ref)
    rows = measured_responses(s, info.id, run_kind=RunKind.CLOSED_LOOP, condition="synthesized")
    # One value per image and round: an image shown twice in a run is averaged (images are the samples).
    targets: dict[tuple[int, int], str | None] = {}
    values: dict[str, dict[tuple[int, int], list[float]]] = {}
    for row in rows:
        key = (row.run_index, row.stimulus_id)
        targets[key] = row.target_roi
        values.setdefault(row.roi, {}).setdefault(key, []).append(row.value)
    keys = list(targets)
    measured = {roi: np.array([np.mean(by_image[k]) for k in keys]) for roi, by_image in values.items()}
    contrasts = target_vs_nontarget(measured, [targets[k] for k in keys]) if keys else []
    drive: dict[int, float] = {}
    for score in session_scores(s, info.id):
        if score.metric == Metric.DRIVE and score.roi is None and score.round_index is not None:
            drive[score.round_index] = score.value
    return SessionOutcome(session=info.ref, contrasts=contrasts, round_drive=dict(sorted(drive.items())))
