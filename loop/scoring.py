"""A round's scores: is the model right, and do the images drive what they were made for?

Pure functions of a round's items (what each image was), the model's
predictions and the measurements: no controller, model file or database
needed. :func:`score_round` gives everything a round records, each figure
under a :class:`Metric`; it is built from these:

- :func:`prediction_accuracy`: per ROI, Pearson r between predicted and
  measured responses across the round's images.
- :func:`target_vs_nontarget`: paper 000's Experiment 2. For each target
  ROI, its response to the images synthesized for it against its response
  to the images synthesized for the other targets: Welch's t, the
  two-sided p value, and Cohen's d (pooled standard deviation).
- :func:`drive`: each target ROI's mean response to its synthesized images
  relative to its response to the best and to the median natural image
  shown as controls in the same round: the ratio to the best (1.0 means as
  strong) and the place in the natural range (0 at the median, 1 at the best).
- :func:`versus_best`: do a target's images beat the best natural control?
  Welch's t, one-sided, of the images' responses (each averaged over its
  showings) against the single-trial responses to the best control.

In a simulation the virtual subject's true responses are scored the same
way (``truth``), so measurement error and model error can be told apart.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from loop.plans import PlannedStimulus

__all__ = [
    "BestContrast",
    "Drive",
    "Metric",
    "MetricValue",
    "RoundScores",
    "TargetContrast",
    "TargetRow",
    "average_by_item",
    "drive",
    "prediction_accuracy",
    "score_round",
    "showings_by_item",
    "target_vs_nontarget",
    "versus_best",
]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TargetContrast:
    roi: str
    target_mean: float
    nontarget_mean: float
    t: float
    p: float
    cohens_d: float
    n_target: int
    n_nontarget: int

    @property
    def drives_target(self) -> bool:
        """The target's images drive it more, at p < 0.05 (one image set against the other)."""
        return self.t > 0 and self.p < 0.05


@dataclass(frozen=True)
class Drive:
    roi: str
    synthesized: float
    best_natural: float
    median_natural: float

    @property
    def vs_best(self) -> float:
        return self.synthesized / self.best_natural if self.best_natural else float("nan")

    @property
    def natural_range(self) -> float:
        """Where the synthesized response lies among the natural controls: 0 at the median, 1 at the best.

        (A ratio to the median would blow up when the median response is near zero.)
        """
        span = self.best_natural - self.median_natural
        return (self.synthesized - self.median_natural) / span if span > 0 else float("nan")


@dataclass(frozen=True)
class BestContrast:
    """A target's images against its best natural control: Welch's t, one-sided (they are stronger)."""

    roi: str
    synthesized: float
    best_natural: float
    t: float
    p: float
    n_images: int
    n_showings: int  # of the best natural control

    @property
    def beats_best(self) -> bool:
        return self.t > 0 and self.p < 0.05


def prediction_accuracy(
    predicted: Mapping[str, npt.ArrayLike], measured: Mapping[str, npt.ArrayLike]
) -> dict[str, float]:
    """Pearson r per ROI across images (NaN where either side does not vary)."""
    out = {}
    for roi, values in measured.items():
        m, p = np.asarray(values, dtype=np.float64), np.asarray(predicted[roi], dtype=np.float64)
        if m.shape != p.shape:
            raise ValueError(f"{roi}: {p.shape} predictions for {m.shape} measurements")
        out[roi] = float(np.corrcoef(m, p)[0, 1]) if m.std() > 0 and p.std() > 0 else float("nan")
    return out


def target_vs_nontarget(
    measured: Mapping[str, npt.ArrayLike], made_for: Sequence[str | None]
) -> list[TargetContrast]:
    """For every ROI that images were made for: its response to them against the others' images.

    ``made_for[k]`` is the target ROI image ``k`` was synthesized for (None
    for controls, which are left out).
    """
    targets = sorted({t for t in made_for if t is not None})
    labels = np.array([t if t is not None else "" for t in made_for])
    out = []
    for roi in targets:
        response = np.asarray(measured[roi], dtype=np.float64)
        own = response[labels == roi]
        other = response[(labels != roi) & (labels != "")]
        if len(own) < 2 or len(other) < 2:
            continue
        t, p = stats.ttest_ind(own, other, equal_var=False)
        pooled = np.sqrt(
            ((len(own) - 1) * own.var(ddof=1) + (len(other) - 1) * other.var(ddof=1))
            / (len(own) + len(other) - 2)
        )
        d = (own.mean() - other.mean()) / pooled if pooled > 0 else float("nan")
        out.append(
            TargetContrast(
                roi,
                float(own.mean()),
                float(other.mean()),
                float(t),
                float(p),
                float(d),
                len(own),
                len(other),
            )
        )
    return out


def drive(
    measured: Mapping[str, npt.ArrayLike], made_for: Sequence[str | None], control: Sequence[str | None]
) -> list[Drive]:
    """Each target's mean response to its images against the best and median natural controls made for it.

    ``control[k]`` is ``"best_natural"``/``"median_natural"`` for a natural
    control image chosen for target ``made_for[k]``, else None.
    """
    labels, kinds = np.array([t or "" for t in made_for]), np.array([c or "" for c in control])
    out = []
    for roi in sorted({t for t, c in zip(made_for, control, strict=True) if t is not None and c is None}):
        response = np.asarray(measured[roi], dtype=np.float64)
        synthesized = response[(labels == roi) & (kinds == "")]
        best = response[(labels == roi) & (kinds == "best_natural")]
        median = response[(labels == roi) & (kinds == "median_natural")]
        if len(best) and len(median):
            out.append(Drive(roi, float(synthesized.mean()), float(best.mean()), float(median.mean())))
    return out


# --- a whole round ----------------------------------------------------------------------------------


class Metric(enum.StrEnum):
    """The names a round's figures are recorded under (the ``scores`` table's ``metric``)."""

    PREDICTION_R = "prediction_r"  # per ROI: predicted against measured, across the round's images
    TARGET_PREDICTED = "target_predicted"  # per target: mean predicted response to its images
    TARGET_MEASURED = "target_measured"  # per target: mean measured response to its images
    TARGET_TRUE = "target_true"  # per target: mean true response (simulation)
    TARGET_T = "target_t"  # per target: Welch's t, its images against the other targets'
    TARGET_P = "target_p"
    TARGET_D = "target_d"  # Cohen's d of the same
    DRIVE_VS_BEST = "drive_vs_best"  # per target: its images' response over the best natural control's
    DRIVE_NATURAL_RANGE = "drive_natural_range"  # 0 at the median natural control, 1 at the best
    VS_BEST_T = "vs_best_t"  # per target: Welch's t of its images against the best control's showings
    VS_BEST_P = "vs_best_p"  # its one-sided p
    DRIVE = "drive"  # the round: mean measured response of the targets to their images
    TRUTH_PREDICTION_R = "truth_prediction_r"  # per ROI: predicted against true (simulation)
    TRUTH_MEASUREMENT_R = "truth_measurement_r"  # per ROI: measured against true (simulation)
    TRUTH_TARGET_T = "truth_target_t"  # per target: Welch's t on the true responses (simulation)


@dataclass(frozen=True)
class MetricValue:
    """One figure of a round: a metric, its value, the ROI it is about (None: the round) and details."""

    metric: Metric
    value: float
    roi: str | None = None
    details: dict[str, float] | None = None


@dataclass(frozen=True)
class TargetRow:
    """One target ROI of a round, as the round's table shows it."""

    roi: str
    predicted: float  # mean predicted response to its images (percent signal change)
    measured: float  # mean measured response to its images
    vs_best: float  # measured, relative to the best natural image's (1.0 = as strong)
    natural_range: float  # 0 at the median natural image's response, 1 at the best's
    t: float  # target vs non-target images
    p: float
    true: float | None = None  # the virtual subject's true response (simulation only)
    best_t: float = float("nan")  # its images against the best natural control (one-sided)
    best_p: float = float("nan")


@dataclass(frozen=True)
class RoundScores:
    """Everything a round is scored on: its table, and every figure under its metric (finite ones only)."""

    targets: list[TargetRow]
    accuracy: dict[str, float]  # predicted against measured, Pearson r per ROI
    drive: float  # mean measured response of the targets to their images
    values: list[MetricValue]


def average_by_item(
    stimuli: Sequence[PlannedStimulus], rows: npt.ArrayLike
) -> tuple[list[PlannedStimulus], Array]:
    """One row per distinct item (image and role), averaged over its showings: images are the samples.

    ``rows[k]`` is the response to the ``k``-th trial, which showed ``stimuli[k]``.
    """
    values = np.asarray(rows, dtype=np.float64)
    if len(values) != len(stimuli):
        raise ValueError(f"{len(values)} responses for {len(stimuli)} trials")
    showings: dict[PlannedStimulus, list[int]] = {}
    for k, stimulus in enumerate(stimuli):
        showings.setdefault(stimulus, []).append(k)
    return list(showings), np.stack([values[trials].mean(0) for trials in showings.values()])


def score_round(
    items: Sequence[PlannedStimulus],
    predicted: Mapping[str, npt.ArrayLike],
    measured: Mapping[str, npt.ArrayLike],
    truth: Mapping[str, npt.ArrayLike] | None = None,
    *,
    showings: Sequence[npt.ArrayLike] | None = None,
    roi_names: Sequence[str] = (),
) -> RoundScores:
    """Score a round: every array holds one value per item, in ``items``' order, keyed by ROI.

    Items made for a target are its images (``condition == "synthesized"``);
    ``best_natural`` and ``median_natural`` items are the natural controls
    chosen for their ``target_roi``. The images made for the other targets
    are a target's non-target images. With ``showings`` (each item's
    single-trial measured responses, columns in ``roi_names``' order), a
    target's images are also tested against the showings of its best
    natural control (:func:`versus_best`).
    """
    made_for = [item.target_roi for item in items]
    control = [item.condition if item.condition != "synthesized" else None for item in items]
    synthesized_for = [t if c is None else None for t, c in zip(made_for, control, strict=True)]
    values: list[MetricValue] = []

    def add(metric: Metric, value: float, roi: str | None = None, **details: float) -> None:
        if math.isfinite(value):
            values.append(MetricValue(metric, float(value), roi, details or None))

    accuracy = prediction_accuracy(predicted, measured)
    for roi, r in accuracy.items():
        add(Metric.PREDICTION_R, r, roi)
    contrasts = {c.roi: c for c in target_vs_nontarget(measured, synthesized_for)}
    drives = {d.roi: d for d in drive(measured, made_for, control)}
    best_showings: dict[str, Array] = {}
    for item, trials in zip(items, showings or (), strict=False):
        aim = item.target_roi
        if item.condition == "best_natural" and aim is not None and aim in roi_names:
            best_showings[aim] = np.asarray(trials, dtype=np.float64)[:, list(roi_names).index(aim)]
    versus = {b.roi: b for b in versus_best(measured, best_showings, made_for, control)}
    if truth is not None:
        for roi, r in prediction_accuracy(predicted, truth).items():
            add(Metric.TRUTH_PREDICTION_R, r, roi)
        for roi, r in prediction_accuracy(measured, truth).items():
            add(Metric.TRUTH_MEASUREMENT_R, r, roi)
        for true in target_vs_nontarget(truth, synthesized_for):
            add(Metric.TRUTH_TARGET_T, true.t, true.roi, p=true.p, cohens_d=true.cohens_d)
    rows = []
    for roi in dict.fromkeys(t for t in synthesized_for if t is not None):
        own = np.array([t == roi for t in synthesized_for])
        c, d, b = contrasts.get(roi), drives.get(roi), versus.get(roi)
        row = TargetRow(
            roi=roi,
            predicted=float(np.asarray(predicted[roi], dtype=np.float64)[own].mean()),
            measured=float(np.asarray(measured[roi], dtype=np.float64)[own].mean()),
            vs_best=d.vs_best if d else float("nan"),
            natural_range=d.natural_range if d else float("nan"),
            t=c.t if c else float("nan"),
            p=c.p if c else float("nan"),
            true=float(np.asarray(truth[roi], dtype=np.float64)[own].mean()) if truth is not None else None,
            best_t=b.t if b else float("nan"),
            best_p=b.p if b else float("nan"),
        )
        rows.append(row)
        add(Metric.TARGET_PREDICTED, row.predicted, roi)
        add(Metric.TARGET_MEASURED, row.measured, roi)
        if c is not None:
            add(Metric.TARGET_T, c.t, roi, p=c.p, cohens_d=c.cohens_d, n_target=c.n_target,
                n_nontarget=c.n_nontarget, target_mean=c.target_mean,
                nontarget_mean=c.nontarget_mean)  # fmt: skip
            add(Metric.TARGET_P, c.p, roi)
            add(Metric.TARGET_D, c.cohens_d, roi)
        if d is not None:
            add(Metric.DRIVE_VS_BEST, d.vs_best, roi, best=d.best_natural, synthesized=d.synthesized)
            add(
                Metric.DRIVE_NATURAL_RANGE, d.natural_range, roi, median=d.median_natural, best=d.best_natural
            )
        if b is not None:
            add(Metric.VS_BEST_T, b.t, roi, p=b.p, synthesized=b.synthesized, best=b.best_natural,
                n_images=b.n_images, n_showings=b.n_showings)  # fmt: skip
            add(Metric.VS_BEST_P, b.p, roi)
        if row.true is not None:
            add(Metric.TARGET_TRUE, row.true, roi)
    mean_drive = float(np.mean([row.measured for row in rows])) if rows else float("nan")
    add(Metric.DRIVE, mean_drive)
    return RoundScores(rows, accuracy, mean_drive, values)


def showings_by_item(stimuli: Sequence[PlannedStimulus], rows: npt.ArrayLike) -> list[Array]:
    """Each distinct item's single-trial responses (n_showings, n_columns), ordered as average_by_item's."""
    values = np.asarray(rows, dtype=np.float64)
    showings: dict[PlannedStimulus, list[int]] = {}
    for k, stimulus in enumerate(stimuli):
        showings.setdefault(stimulus, []).append(k)
    return [values[trials] for trials in showings.values()]


def versus_best(
    measured: Mapping[str, npt.ArrayLike],
    best_showings: Mapping[str, npt.ArrayLike],
    made_for: Sequence[str | None],
    control: Sequence[str | None],
) -> list[BestContrast]:
    """For each target with a best natural control: its images against that control's showings.

    ``measured[roi]`` holds one value per item (an image's mean over its
    showings); ``best_showings[roi]`` the single-trial responses of ``roi``
    to the best natural image chosen for it.
    """
    out = []
    for roi, trials in best_showings.items():
        own = np.asarray(measured[roi], dtype=np.float64)[
            [t == roi and c is None for t, c in zip(made_for, control, strict=True)]
        ]
        best = np.asarray(trials, dtype=np.float64)
        if len(own) < 2 or len(best) < 2:
            continue
        t, p = stats.ttest_ind(own, best, equal_var=False, alternative="greater")
        out.append(
            BestContrast(roi, float(own.mean()), float(best.mean()), float(t), float(p), len(own), len(best))
        )
    return out
