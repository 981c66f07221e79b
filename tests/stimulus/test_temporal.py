"""Per-TR averaging and lags for block and movie designs."""

from __future__ import annotations

import numpy as np
import pytest

from stimulus import EncodingInputError
from stimulus.temporal import features_per_tr, lag_features, repeated_run_ceiling


def test_frames_are_averaged_within_each_tr() -> None:
    features = np.array([[1.0], [3.0], [10.0], [20.0], [5.0]])
    onsets = np.array([0.0, 1.0, 2.0, 3.5, 7.9])
    per_tr = features_per_tr(features, onsets, n_trs=5, tr_s=2.0)
    np.testing.assert_allclose(per_tr[:, 0], [2.0, 15.0, 0.0, 5.0, 0.0])


def test_lags_shift_within_runs_only() -> None:
    features = np.arange(1.0, 7.0)[:, None]  # two runs of three TRs: 1 2 3 | 4 5 6
    lagged = lag_features(features, tr_s=2.0, lags_s=(0.0, 2.0, 4.0), runs=[0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(lagged[:, 0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(lagged[:, 1], [0, 1, 2, 0, 4, 5])
    np.testing.assert_array_equal(lagged[:, 2], [0, 0, 1, 0, 0, 4])


def test_a_lag_that_is_not_whole_trs_is_refused() -> None:
    with pytest.raises(EncodingInputError, match=r"lag 5.0 s is not .* whole number of TRs of 2.0 s"):
        lag_features(np.ones((4, 2)), tr_s=2.0, lags_s=(4.0, 5.0))


def test_the_noise_ceiling_of_a_repeated_movie_matches_its_signal_and_noise() -> None:
    rng = np.random.default_rng(3)
    signal = rng.standard_normal((400, 3)) * np.array([1.0, 1.0, 0.0])  # the third voxel answers nothing
    runs = [signal + rng.standard_normal(signal.shape) for _ in range(3)]  # SNR 1, shown three times
    ceiling = repeated_run_ceiling(runs, ["test"] * 3)
    # Three showings averaged: 100 * 1 / (1 + 1/3) = 75 % where there is signal.
    np.testing.assert_allclose(ceiling.percent[:2], 75.0, atol=3.0)
    assert ceiling.percent[2] < 5.0
    assert ceiling.n_repeated_stimuli == 400
    # Beside a movie seen once, the ceiling is that of both scored together: averages of 3 and of 1 run.
    once = rng.standard_normal((100, 3))
    both = repeated_run_ceiling([*runs, once], ["test"] * 3 + ["train"])
    assert both.n_averaged == pytest.approx(1 / (0.8 / 3 + 0.2))
    with pytest.raises(EncodingInputError, match="no stimulus was shown in two runs"):
        repeated_run_ceiling(runs[:2], ["a", "b"])
    with pytest.raises(EncodingInputError, match="must be equally long"):
        repeated_run_ceiling([runs[0], runs[1][:300]], ["a", "a"])
