"""Scores against scipy and scikit-learn, and the noise ceiling and FDR on data of known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control, pearsonr
from sklearn.metrics import r2_score as sk_r2

from stimulus.scores import (
    average_repeats,
    fdr_select,
    fingerprint_summary,
    fingerprint_voxels,
    noise_ceiling,
    normalized_accuracy,
    pearson_r,
    permutation_p_values,
    r2_score,
    roi_fingerprints,
)


def test_r_and_r2_match_scipy_and_scikit_learn(rng: np.random.Generator) -> None:
    truth = rng.standard_normal((40, 6))
    pred = truth + rng.standard_normal((40, 6))
    np.testing.assert_allclose(
        pearson_r(truth, pred), [pearsonr(truth[:, v], pred[:, v])[0] for v in range(6)]
    )
    np.testing.assert_allclose(r2_score(truth, pred), sk_r2(truth, pred, multioutput="raw_values"))


def test_fdr_selection_matches_benjamini_hochberg(rng: np.random.Generator) -> None:
    p = np.concatenate([rng.uniform(0, 0.002, 30), rng.uniform(0, 1, 200)])
    adjusted = false_discovery_control(p, method="bh")
    np.testing.assert_array_equal(fdr_select(p, 0.05), adjusted <= 0.05)


def test_noise_ceiling_recovers_the_signal_to_noise_ratio(rng: np.random.Generator) -> None:
    n_stimuli, repeats = 3000, 3
    signal_sd = np.array([0.5, 1.0, 2.0])
    signal = rng.standard_normal((n_stimuli, 3)) * signal_sd
    trials = np.repeat(signal, repeats, axis=0) + rng.standard_normal((n_stimuli * repeats, 3))
    ids = np.repeat(np.arange(n_stimuli), repeats)
    ceiling = noise_ceiling(trials, ids, n_averaged=repeats)
    np.testing.assert_allclose(ceiling.ncsnr, signal_sd, rtol=0.1)
    expected = 100 * signal_sd**2 / (signal_sd**2 + 1 / repeats)
    np.testing.assert_allclose(ceiling.percent, expected, rtol=0.05)
    # A perfect model of the averages reaches about 100 % of what the ceiling allows.
    averages = trials.reshape(n_stimuli, repeats, 3).mean(axis=1)
    accuracy = normalized_accuracy(pearson_r(averages, signal), ceiling)
    np.testing.assert_allclose(accuracy, 100, rtol=0.1)


def test_noise_ceiling_needs_repeats() -> None:
    with pytest.raises(ValueError, match="no stimulus was shown twice"):
        noise_ceiling(np.ones((4, 2)), [1, 2, 3, 4])


def test_permutation_test_with_fdr_keeps_predicted_voxels_only(rng: np.random.Generator) -> None:
    truth = rng.standard_normal((80, 60))
    pred = rng.standard_normal((80, 60))
    pred[:, :20] = truth[:, :20] + rng.standard_normal((80, 20))  # r about 0.7
    p = permutation_p_values(truth, pred, n_permutations=500)
    selected = fdr_select(p, 0.05)
    assert selected[:20].all()
    assert selected[20:].sum() <= 2
    # Under the null, p-values are roughly uniform.
    assert 0.3 < np.median(p[20:]) < 0.7


def test_fingerprints_point_to_the_best_layer() -> None:
    layer_scores = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.6]])
    summary = fingerprint_summary(layer_scores)
    assert summary[0] < 0 < summary[2]
    prints = roi_fingerprints(layer_scores, ["V1", "V1", "LOC"])
    np.testing.assert_allclose(prints["V1"], [1.0, 0.5, 0.1])
    np.testing.assert_allclose(prints["LOC"], [0.0, 1 / 6, 1.0])
    # Paper 001's way: only the best-predicted fraction of each ROI's voxels (at least one).
    accuracy = [0.2, 0.9, 0.5]
    assert {
        k: v.tolist() for k, v in fingerprint_voxels(["V1", "V1", "LOC"], accuracy=accuracy, top=0.5).items()
    } == {
        "V1": [1],
        "LOC": [2],
    }
    best = roi_fingerprints(layer_scores, ["V1", "V1", "LOC"], accuracy=accuracy, top=0.25)
    np.testing.assert_allclose(best["V1"], [1.0, 0.6, 0.2])
    with pytest.raises(ValueError, match="together"):
        roi_fingerprints(layer_scores, ["V1", "V1", "LOC"], top=0.25)


def test_repeats_are_averaged_in_order_of_first_showing() -> None:
    responses = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [5.0, 50.0]])
    repeats = average_repeats(responses, ["b", "a", "b", "c"])
    assert repeats.first.tolist() == [0, 1, 3]
    np.testing.assert_allclose(repeats.averaged, [[2.0, 20.0], [2.0, 20.0], [5.0, 50.0]])
    assert repeats.counts.tolist() == [2, 1, 1]
    assert repeats.n_averaged == pytest.approx(1 / np.mean([0.5, 1, 1]))
