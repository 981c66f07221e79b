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
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from db.base import ResponseMethod, RunKind
from db.models import MeasuredResponse, Presentation, Roi, Round, Run, Score
from db.queries import find_session
from loop.scoring import TargetContrast, target_vs_nontarget

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


def session_outcome(s: OrmSession, ref: str) -> SessionOutcome:
    session = find_session(s, ref)
    rows = s.execute(
        select(Run.id, Presentation.stimulus_id, Presentation.target_roi, Roi.name, MeasuredResponse.value)
        .join(Presentation, Presentation.run_id == Run.id)
        .join(MeasuredResponse, MeasuredResponse.presentation_id == Presentation.id)
        .join(Roi, Roi.id == MeasuredResponse.roi_id)
        .where(
            Run.session_id == session.id,
            Run.kind == RunKind.CLOSED_LOOP,
            Presentation.condition == "synthesized",
            MeasuredResponse.method == ResponseMethod.LSS,
        )
        .order_by(Run.id, Presentation.trial_index)
    ).all()
    # One value per image and round: an image shown twice in a run is averaged (images are the samples).
    targets: dict[tuple[int, int], str | None] = {}
    values: dict[str, dict[tuple[int, int], list[float]]] = {}
    for run_id, stimulus_id, target, roi, value in rows:
        targets[(run_id, stimulus_id)] = target
        values.setdefault(roi, {}).setdefault((run_id, stimulus_id), []).append(value)
    keys = list(targets)
    measured = {roi: np.array([np.mean(by_image[k]) for k in keys]) for roi, by_image in values.items()}
    contrasts = target_vs_nontarget(measured, [targets[k] for k in keys]) if keys else []
    drive = s.execute(
        select(Round.index, Score.value)
        .join(Round, Round.id == Score.round_id)
        .where(Score.session_id == session.id, Score.metric == "drive", Score.roi_id.is_(None))
        .order_by(Round.index)
    ).all()
    return SessionOutcome(
        session=f"sub-{session.subject.label}/ses-{session.label}",
        contrasts=contrasts,
        round_drive={int(index): float(value) for index, value in drive},
    )
