"""After a run: single-trial responses from the volumes received; a session's training data."""

from __future__ import annotations

import numpy as np
import pytest

from loop.analysis.design import Trial, frame_times, trial_regressors
from loop.dataset import TrainingData, single_trial_responses

TR = 2.0


def _run(n_trials: int = 20, n_voxels: int = 30, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    trials = [Trial(4.0 + 8.0 * k, 1.0) for k in range(n_trials)]
    n = int((trials[-1].onset_s + 30) / TR)
    truth = rng.uniform(0.5, 2.0, (n_trials, n_voxels))
    percent = trial_regressors(frame_times(n, TR), trials) @ truth + 0.2 * rng.standard_normal((n, n_voxels))
    raw = 1000.0 * (1 + percent / 100)  # what the scanner writes: a baseline of 1000
    return trials, n, truth, raw


def test_responses_from_a_run_with_a_missing_volume_equal_those_without_it() -> None:
    trials, n, truth, raw = _run()
    everything = single_trial_responses(raw, range(n), trials, TR, n, method="lsa")
    assert np.corrcoef(everything.ravel(), truth.ravel())[0, 1] > 0.85
    kept = [k for k in range(n) if k != 30]
    without = single_trial_responses(raw[kept], kept, trials, TR, n, method="lsa")
    # The same fit with row 30 removed, computed directly.
    from loop.analysis.glm import least_squares_all

    percent = 100 * (raw[kept] / raw[kept].mean(0) - 1)
    full = np.zeros((n, raw.shape[1]))
    full[kept] = percent
    indicator = np.zeros((n, 1))
    indicator[30] = 1
    assert np.allclose(without, least_squares_all(full, trials, TR, confounds=indicator))
    assert np.abs(without - everything).max() < 0.5
    with pytest.raises(ValueError, match="method 'glm'; use lss or lsa"):
        single_trial_responses(raw, range(n), trials, TR, n, method="glm")


def test_training_data_averages_repeats_and_keeps_each_stimulus_in_its_first_run() -> None:
    data = TrainingData()
    data.add_run(1, ["a", "b", "a", "c"], np.array([[1.0, 2.0], [3.0, 4.0], [3.0, 6.0], [5.0, 5.0]]))
    data.add_run(2, ["d", "b"], np.array([[0.0, 1.0], [5.0, 6.0]]))
    names, means, groups, counts = data.averaged()
    assert names == ["a", "b", "c", "d"]
    assert means.tolist() == [[2.0, 4.0], [4.0, 5.0], [5.0, 5.0], [0.0, 1.0]]
    assert groups.tolist() == [1, 1, 1, 2]
    assert counts.tolist() == [2, 2, 1, 1]
    assert data.noise_ceiling().n_repeated_stimuli == 2
    with pytest.raises(ValueError, match="responses have 3 columns; earlier runs had 2"):
        data.add_run(3, ["e"], np.ones((1, 3)))
