"""Weighing the model against the measurements, and the trust region the measurements steer."""

from __future__ import annotations

import numpy as np
import pytest

from loop.evidence import (
    Showing,
    noise_variance,
    posterior_means,
    refinement_outcomes,
    trust_radius,
)
from loop.plans import PlannedStimulus

ROIS = ["V1", "PPA"]


def test_noise_is_pooled_over_the_images_shown_more_than_once() -> None:
    assert noise_variance([[1.0, 3.0], [5.0], [0.0, 2.0, 4.0]]) == pytest.approx((2 + 8) / (1 + 2))
    assert np.isnan(noise_variance([[1.0], [2.0]]))


def test_an_image_never_shown_keeps_its_prediction_and_one_shown_often_moves_to_its_measurement() -> None:
    rng = np.random.default_rng(0)
    predicted = rng.normal(1.0, 0.5, 40)
    truth = predicted + rng.normal(0, 0.5, 40)  # the model is off by 0.5 sd
    showings = [list(t + rng.normal(0, 0.3, 2)) for t in truth]  # measured twice, noise sd 0.3
    showings[0] = []  # never shown
    showings[1] = list(truth[1] + rng.normal(0, 0.3, 200))  # shown very often
    posterior = posterior_means(predicted, showings)
    assert posterior.means[0] == predicted[0]
    assert posterior.means[1] == pytest.approx(truth[1], abs=0.1)
    assert posterior.noise_var == pytest.approx(0.09, rel=0.5)
    assert posterior.model_var == pytest.approx(0.25, rel=0.5)


def test_the_weighed_response_is_closer_to_the_truth_than_the_model_or_the_measurement_alone() -> None:
    rng = np.random.default_rng(1)
    errors: dict[str, list[float]] = {"model": [], "measured": [], "posterior": []}
    for _ in range(50):
        truth = rng.normal(1.0, 1.0, 60)
        predicted = truth + rng.normal(0, 0.6, 60)
        showings = [list(t + rng.normal(0, 0.8, 2)) for t in truth]
        posterior = posterior_means(predicted, showings)
        errors["model"].append(float(np.mean((predicted - truth) ** 2)))
        errors["measured"].append(float(np.mean((np.mean(showings, axis=1) - truth) ** 2)))
        errors["posterior"].append(float(np.mean((posterior.means - truth) ** 2)))
    mean = {k: np.mean(v) for k, v in errors.items()}
    assert mean["posterior"] < 0.8 * min(mean["model"], mean["measured"]), mean


def test_a_model_blind_to_an_roi_leaves_the_ranking_to_the_measurements() -> None:
    # A place area the model cannot predict (flat predictions), with one image measured far above the rest:
    # the measured image must rank first, even against images the model likes a little more.
    predicted = np.array([1.07, 1.06, 1.29, 1.31, 1.30])
    showings = [[4.49, 4.37, 4.22], [3.3, 3.46], [0.94, 0.44], [1.62, 3.11], [1.7, 0.96]]
    order = np.argsort(-posterior_means(predicted, showings).means)
    assert list(order[:2]) == [0, 1]


def test_the_prediction_of_an_unshown_image_is_refused_in_a_list_of_another_length() -> None:
    with pytest.raises(ValueError, match="3 predictions for 2 images"):
        posterior_means([1.0, 2.0, 3.0], [[1.0], [2.0]])


def _showing(path: str, condition: str, target: str, run: int, v1: float, ppa: float) -> Showing:
    return Showing(PlannedStimulus(path, "0" * 64, condition, target), run, np.array([v1, ppa]))


def test_each_round_is_judged_by_its_images_against_the_best_natural_control_of_the_same_run() -> None:
    showings = [
        _showing("natural/nat_001.png", "natural", None, 1, 9.0, 9.0),  # type: ignore[arg-type]
        # round 1 (run 2): V1's images beat its control, PPA's lost to its control
        _showing("round01/V1_00.png", "synthesized", "V1", 2, 3.0, 0.0),
        _showing("round01/V1_00.png", "synthesized", "V1", 2, 2.0, 0.0),
        _showing("round01/V1_01.png", "synthesized", "V1", 2, 2.5, 0.0),
        _showing("natural/nat_002.png", "best_natural", "V1", 2, 2.0, 0.0),
        _showing("round01/PPA_00.png", "synthesized", "PPA", 2, 0.0, 1.0),
        _showing("natural/nat_090.png", "best_natural", "PPA", 2, 0.0, 4.5),
        _showing("natural/nat_090.png", "best_natural", "PPA", 2, 0.0, 4.1),
        # round 2 (run 3): PPA's images lost again
        _showing("round02/PPA_00.png", "synthesized", "PPA", 3, 0.0, 2.0),
        _showing("natural/nat_090.png", "best_natural", "PPA", 3, 0.0, 4.0),
    ]
    outcomes = refinement_outcomes(showings, ROIS)
    assert [(o.run, o.target, o.success) for o in outcomes] == [
        (2, "PPA", False),
        (2, "V1", True),
        (3, "PPA", False),
    ]
    assert outcomes[1].synthesized == pytest.approx(2.5)  # each image averaged over its showings first
    assert outcomes[0].best_natural == pytest.approx(4.3)
    assert trust_radius(outcomes, "V1", 0.3) == pytest.approx(0.45)
    assert trust_radius(outcomes, "PPA", 0.3) == pytest.approx(0.075)  # halved twice, at its floor
    assert trust_radius(outcomes, "LO", 0.3) == 0.3  # no evidence yet: the configured radius


def test_the_radius_stays_within_its_bounds() -> None:
    wins = refinement_outcomes(
        [
            s
            for run in range(2, 8)
            for s in (
                _showing(f"r{run}.png", "synthesized", "V1", run, 3.0, 0.0),
                _showing("nat.png", "best_natural", "V1", run, 1.0, 0.0),
            )
        ],
        ROIS,
    )
    assert len(wins) == 6
    assert trust_radius(wins, "V1", 0.3) == pytest.approx(0.6)
