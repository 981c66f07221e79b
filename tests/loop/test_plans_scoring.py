"""Run plans for the training run and the rounds, and a round's scores."""

from __future__ import annotations

import dataclasses
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from loop.plans import BLOCK_REST_S, PlannedStimulus, Timing, plan_run, save_png, training_order
from loop.scoring import Metric, average_by_item, drive, prediction_accuracy, score_round, target_vs_nontarget


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
    timing = Timing(trial_s=1.0, isi_s=4.0, lead_in_s=6.0, lead_out_s=16.0)
    plan = plan_run("r1", stimuli, tr_s=2.0, timing=timing, shuffle_seed=1)
    assert sorted(t.stimulus for t in plan.trials) == [f"s{k}.png" for k in range(6)]
    assert [t.onset_s for t in plan.trials] == [6.0 + 4.0 * k for k in range(6)]
    assert plan.duration_s >= 6.0 + 4.0 * 5 + 1.0 + 16.0
    assert [t.stimulus for t in plan.trials] != [f"s{k}.png" for k in range(6)]  # shuffled
    images = plan.load_images(tmp_path)  # the files are there with the planned hashes
    assert len(images) == 6
    block = plan_run("b", stimuli * 3, tr_s=2.0, timing=dataclasses.replace(timing, design="block"))
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


def test_a_round_is_scored_from_its_items_predictions_and_measurements_alone() -> None:
    def item(name: str, condition: str, roi: str) -> PlannedStimulus:
        return PlannedStimulus(f"{name}.png", name * 8, condition, roi)

    images = [item(f"f{k}", "synthesized", "FFA") for k in range(3)] + [
        item(f"p{k}", "synthesized", "PPA") for k in range(3)
    ]
    controls = [item("nb", "best_natural", "FFA"), item("nm", "median_natural", "FFA")]
    trials = images + controls + images  # every synthesized image shown twice
    ffa_once = [3.0, 3.2, 2.8, 1.0, 1.1, 0.9, 2.0, 1.0]
    measured_trials = np.column_stack([ffa_once + ffa_once[:6], np.ones(14)])  # (trials, ROIs)
    items, rows = average_by_item(trials, measured_trials)
    assert items == images + controls  # one item per image and role, in the order first shown
    measured = {"FFA": rows[:, 0], "PPA": rows[:, 1] + np.arange(8) * 0.01}
    predicted = {"FFA": rows[:, 0] * 0.5, "PPA": np.arange(8.0)}
    scores = score_round(items, predicted, measured)
    by = {(v.metric, v.roi): v for v in scores.values}
    welch = stats.ttest_ind([3.0, 3.2, 2.8], [1.0, 1.1, 0.9], equal_var=False)
    assert by[Metric.TARGET_T, "FFA"].value == pytest.approx(welch.statistic)
    assert by[Metric.TARGET_T, "FFA"].details["p"] == pytest.approx(welch.pvalue)
    assert by[Metric.DRIVE_VS_BEST, "FFA"].value == pytest.approx(3.0 / 2.0)  # against the best control
    assert by[Metric.DRIVE_NATURAL_RANGE, "FFA"].value == pytest.approx((3.0 - 1.0) / (2.0 - 1.0))
    assert (Metric.DRIVE_VS_BEST, "PPA") not in by  # PPA was shown no natural controls
    assert by[Metric.PREDICTION_R, "FFA"].value == pytest.approx(1.0)
    assert scores.drive == pytest.approx(np.mean([3.0, measured["PPA"][3:6].mean()]))
    assert [row.roi for row in scores.targets] == ["FFA", "PPA"]
    assert all(row.true is None for row in scores.targets)
    assert not any(v.metric.value.startswith("truth") for v in scores.values)
    with_truth = score_round(items, predicted, measured, truth=measured)
    assert {v.metric for v in with_truth.values} >= {Metric.TRUTH_TARGET_T, Metric.TARGET_TRUE}
