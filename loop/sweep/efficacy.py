"""Does a simulated session control? Its rounds judged against the virtual subject's truth.

The control benchmark (``benchmarks/efficacy.py``) and the sweep report use
these measures, per target ROI and round:

- measured: the target's images over the round's best natural control (the
  ratio, and the one-sided p of the test the round table shows);
- true: the virtual subject's true response to the target's images over the
  best and the mean image of a natural pool that no session showed (drawn
  with a seed no session uses), and target against non-target images
  (Welch's t on the true responses).

The truth is the scorer's alone: sessions never see it. This module reads
a finished session's scores (a simulation records the truth beside what it
measured) and computes the pool's truth once per seed.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from db import Database
from db.queries import session_info, session_scores
from loop.scoring import Metric

__all__ = [
    "POOL_SEED",
    "PoolTruth",
    "RoundFigures",
    "pool_responses",
    "pool_truth",
    "session_figures",
    "summary",
    "true_responses",
]

POOL_SEED = 900_000  # no session draws natural images with seeds this high


@dataclass(frozen=True)
class PoolTruth:
    """The true response of each ROI to an unseen natural pool: its best and its mean."""

    seed: int
    size: int
    best: dict[str, float]
    mean: dict[str, float]

    @classmethod
    def of(cls, seed: int, responses: dict[str, npt.NDArray[np.float64]]) -> PoolTruth:
        """From each ROI's true responses to the pool's images."""
        sizes = {len(v) for v in responses.values()}
        return cls(
            seed, sizes.pop() if len(sizes) == 1 else 0,
            {roi: float(np.max(v)) for roi, v in responses.items()},
            {roi: float(np.mean(v)) for roi, v in responses.items()},
        )  # fmt: skip


@dataclass(frozen=True)
class RoundFigures:
    """One target ROI in one round."""

    roi: str
    round: int
    measured_vs_best: float  # measured response to the target's images / the best natural control's
    vs_best_p: float  # one-sided p that they beat it
    true: float  # true response to the target's images
    true_vs_pool_best: float
    true_vs_pool_mean: float
    true_t: float  # target against non-target images, true responses

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_responses(
    seed: int, n: int, *, subject: str = "default", display_size: int = 256
) -> dict[str, npt.NDArray[np.float64]]:
    """The virtual subject's true ROI responses to ``n`` unseen natural images, seen as a session's are.

    The images are drawn at the display size and seen by the subject as it
    sees a shown image (resized, bilinear), as ``benchmarks/efficacy.py``
    always judged them.
    """
    from stimulus.natural import natural_image_set

    pool = natural_image_set(n, size=display_size, seed=POOL_SEED + seed).pixels
    return true_responses(seed, pool, subject=subject)


def true_responses(
    seed: int, pixels: npt.NDArray[np.floating[Any]], *, subject: str = "default"
) -> dict[str, npt.NDArray[np.float64]]:
    """The virtual subject's true ROI responses to images as the presenter shows them, for scoring only.

    ``pixels`` (n, 3, H, W) on 0..1 at display size; the subject sees each
    resized (bilinear), as it sees a shown image.
    """
    from PIL import Image

    from loop.simulation.subject import SubjectConfig, VirtualSubject
    from stimulus.images import resize_pixels

    virtual = VirtualSubject(SubjectConfig.from_spec(subject, seed=seed))
    bilinear = Image.Resampling.BILINEAR
    seen = np.stack([
        resize_pixels(np.asarray(p, dtype=np.float32), virtual.config.image_size, resample=bilinear)
        for p in pixels
    ])  # fmt: skip
    return {roi: np.asarray(v, dtype=np.float64) for roi, v in virtual.roi_responses(seen).items()}


def pool_truth(seed: int, n: int, *, subject: str = "default", display_size: int = 256) -> PoolTruth:
    """The best and the mean of :func:`pool_responses`, ROI by ROI."""
    return PoolTruth.of(seed, pool_responses(seed, n, subject=subject, display_size=display_size))


def session_figures(database: Database, ref: str, pool: PoolTruth) -> list[RoundFigures]:
    """Every target ROI and round of a finished simulated session, judged against ``pool``."""
    with database.reader() as s:
        scores = session_scores(s, session_info(s, ref).id)
    table: dict[tuple[str, int], dict[str, float]] = {}
    for score in scores:
        if score.roi is not None and score.round_index is not None:
            row = table.setdefault((score.roi, score.round_index), {})
            row[score.metric] = score.value
            if score.metric == Metric.VS_BEST_T and score.details:
                row["vs_best_p"] = float(score.details.get("p", np.nan))
    return [
        RoundFigures(
            roi=roi,
            round=index,
            measured_vs_best=row.get(Metric.DRIVE_VS_BEST, np.nan),
            vs_best_p=row.get("vs_best_p", np.nan),
            true=row[Metric.TARGET_TRUE],
            true_vs_pool_best=row[Metric.TARGET_TRUE] / pool.best[roi],
            true_vs_pool_mean=row[Metric.TARGET_TRUE] / pool.mean[roi],
            true_t=row.get(Metric.TRUTH_TARGET_T, np.nan),
        )
        for (roi, index), row in sorted(table.items(), key=lambda item: (item[0][1], item[0][0]))
        if Metric.TARGET_TRUE in row and roi in pool.best
    ]


def summary(figures: list[RoundFigures]) -> dict[str, float]:
    """A session's last round in a few numbers.

    ``above_pool_best``: target ROIs whose images beat the pool's best in
    truth; ``measured_above_best``: whose images beat the best natural
    control as measured; ``mean_vs_pool_best``: the mean over targets of the
    true response over the pool's best; ``rising`` (with two rounds or more):
    1 when the mean true response rose round over round.
    """
    if not figures:
        return {}
    last = max(f.round for f in figures)
    final = [f for f in figures if f.round == last]
    by_round = [
        np.mean([f.true for f in figures if f.round == k]) for k in sorted({f.round for f in figures})
    ]
    out = {
        "rounds": float(last),
        "above_pool_best": float(sum(f.true_vs_pool_best > 1 for f in final)),
        "measured_above_best": float(sum(f.measured_vs_best > 1 for f in final)),
        "mean_vs_pool_best": float(np.mean([f.true_vs_pool_best for f in final])),
    }
    if len(by_round) > 1:  # one round neither rises nor falls
        out["rising"] = float(all(b > a for a, b in itertools.pairwise(by_round)))
    return out
