"""Run plans for the training run and the rounds, and a round's scores."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from loop.plans import BLOCK_REST_S, PlannedStimulus, plan_run, save_png, training_order
from loop.scoring import drive, prediction_accuracy, target_vs_nontarget


def test_the_training_order_repeats_the_chosen_images_never_back_to_back() -> None:
    order = training_order(100, 20, 3, seed=4)
    counts = Counter(order)
    assert len(order) == 140
    assert all(counts[k] == 3 for k in range(20))
    assert all(counts[k] == 1 for k in range(20, 100))
    assert all(a != b for a, b in pairwise(order))
    assert order == training_order(100, 20, 3, seed=4)  # a resumed session plans the same run
    assert order != training_order(100, 20, 3, seed=5)


def test_a_planned_run_shows_every_stimulus_once_and_ends_after_the_last_response(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).random((6, 3, 16, 16))
    stimuli = [
        PlannedStimulus(
            *save_png(p, tmp_path, f"s{k}.png"), condition="synthesized", target_roi="FFA" if k % 2 else "PPA"
        )
        for k, p in enumerate(pixels)
    ]
    plan = plan_run(
        "r1", stimuli, tr_s=2.0, trial_s=1.0, isi_s=4.0, lead_in_s=6.0, lead_out_s=16.0, shuffle_seed=1
    )
    assert sorted(t.stimulus for t in plan.trials) == [f"s{k}.png" for k in range(6)]
    assert [t.onset_s for t in plan.trials] == [6.0 + 4.0 * k for k in range(6)]
    assert plan.duration_s >= 6.0 + 4.0 * 5 + 1.0 + 16.0
    assert [t.stimulus for t in plan.trials] != [f"s{k}.png" for k in range(6)]  # shuffled
    images = plan.load_images(tmp_path)  # the files are there with the planned hashes
    assert len(images) == 6
    block = plan_run("b", stimuli * 3, tr_s=2.0, trial_s=1.0, isi_s=4.0, lead_in_s=6.0, lead_out_s=16.0,
                     design="block")  # fmt: skip
    onsets = [t.onset_s for t in block.trials]
    assert onsets[8] - onsets[7] == pytest.approx(1.0 + BLOCK_REST_S)
    assert onsets[1] - onsets[0] == pytest.approx(1.0)


def test_target_vs_nontarget_is_welchs_t_with_cohens_d() -> None:
    rng = np.random.default_rng(1)
    made_for = ["FFA"] * 8 + ["PPA"] * 8 + [None] * 4
    measured = {
        "FFA": np.concatenate([rng.normal(2.0, 0.3, 8), rng.normal(1.0, 0.3, 8), rng.normal(1.5, 0.3, 4)]),
        "PPA": np.concatenate([rng.normal(1.0, 0.3, 8), rng.normal(1.1, 0.3, 8), rng.normal(1.5, 0.3, 4)]),
    }
    contrasts = {c.roi: c for c in target_vs_nontarget(measured, made_for)}
    expected = stats.ttest_ind(measured["FFA"][:8], measured["FFA"][8:16], equal_var=False)
    assert contrasts["FFA"].t == pytest.approx(expected.statistic)
    assert contrasts["FFA"].p == pytest.approx(expected.pvalue)
    assert contrasts["FFA"].drives_target
    assert contrasts["FFA"].cohens_d > 2
    assert (contrasts["PPA"].n_target, contrasts["PPA"].n_nontarget) == (8, 8)  # controls left out


def test_drive_compares_synthesized_images_with_the_natural_controls_of_their_target() -> None:
    made_for = ["V1", "V1", "V1", "V1"]
    control = [None, None, "best_natural", "median_natural"]
    result = drive({"V1": np.array([3.0, 5.0, 2.0, 1.0])}, made_for, control)
    assert len(result) == 1
    assert (result[0].vs_best, result[0].natural_range) == (2.0, 3.0)  # 4 against best 2 and median 1
    accuracy = prediction_accuracy({"V1": [1.0, 2.0, 3.0]}, {"V1": [2.0, 4.0, 6.5]})
    assert accuracy["V1"] > 0.99
