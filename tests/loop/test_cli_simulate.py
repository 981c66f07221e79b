"""``cortexloop bridge simulate``: a virtual subject's runs written as a scanner's files, and replayed."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from stimulus.present import PlannedTrial, RunPlan

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _plan(folder: Path) -> Path:
    folder.mkdir()
    trials = []
    for k, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = folder / f"s{k}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        trials.append(PlannedTrial(stimulus=path.name, sha256=sha, onset_s=2.0 + 4.0 * k, duration_s=2.0))
    plan = folder.parent / "plan.json"
    plan.write_text(RunPlan(run_id="cli", tr_s=2.0, n_volumes=8, trials=tuple(trials)).to_json())
    return plan


def test_simulate_writes_runs_as_series_and_a_chosen_one_replays(cortexloop: Cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "stim")
    export = tmp_path / "export"
    common = ("--tr", "2", "--plan", plan, "--stimulus-dir", tmp_path / "stim", "--speed", "0")
    for run in ("1", "2"):
        result = cortexloop("bridge", "simulate", export, *common, "--first-run", run)
        assert result.returncode == 0, result.stderr
        assert f"run {run} (cli): 8 volumes" in result.stdout
        assert "3 presentations" in result.stdout
    names = sorted(p.name for p in export.iterdir())
    assert names == [f"run{r:02d}_vol_{k:05d}.nii" for r in (1, 2) for k in range(8)]
    truth = tmp_path / "export-truth"
    assert {p.name for p in truth.iterdir()} == {
        "rois.nii.gz",
        "rois.tsv",
        "run01_truth.json",
        "run02_truth.json",
    }
    presented = json.loads((truth / "run02_truth.json").read_text())["presentations"]
    assert [p["onset_s"] for p in presented] == pytest.approx([2.0, 6.0, 10.0])
    # The two runs share the subject but not the noise.
    first, second = (np.asarray(nib.load(export / f"run0{r}_vol_00003.nii").dataobj) for r in (1, 2))
    assert not np.array_equal(first, second)

    replayed = tmp_path / "replayed"
    result = cortexloop("bridge", "replay", export, replayed, "--tr", "2", "--speed", "100")
    assert result.returncode == 1
    assert (
        "holds 2 runs (run01_vol_#####.nii, run02_vol_#####.nii); choose one with --series" in result.stderr
    )
    result = cortexloop("bridge", "replay", export, replayed, "--tr", "2", "--speed", "100",
                        "--series", "run02_vol_#####.nii")  # fmt: skip
    assert result.returncode == 0, result.stderr
    again = np.asarray(nib.load(replayed / "vol_00003.nii").dataobj)
    assert np.array_equal(again, second)


def test_simulate_refuses_what_it_cannot_run(cortexloop: Cli, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "stim")
    result = cortexloop(
        "bridge", "simulate", tmp_path / "e", "--tr", "2", "--plan", plan, "--subject", "nope.toml"
    )
    assert result.returncode == 1
    assert "subject spec 'nope.toml': no such file; give `default` or a TOML file" in result.stderr
    result = cortexloop("bridge", "simulate", tmp_path / "e", "--tr", "3", "--plan", plan)
    assert result.returncode != 0
    assert "the plan's TR is 2.0 s, not --tr 3.0" in result.stderr
