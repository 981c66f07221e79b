"""Speed of the controller's real-time path: per-volume processing of a recorded 300-volume run.

A 300-volume run (TR 2 s, 100 natural images shown for 1 s every 6 s, a
little head motion) is made by the simulated scanner and read back from its
NIfTI files. It is then re-analysed volume by volume through
:class:`loop.analysis.realtime.RunAnalyzer`, as the controller analyses a
live run: rigid registration to the first volume, framewise displacement,
the means of 6 ROIs and the values of 20 000 model voxels, percent signal
change, and the incremental least-squares fit with motion confounds, each
trial added as its onset passes. Synthesis is not included.

Prints the median, p99 and maximum processing time per volume (target:
p99 under 5 ms) and the real-time factor of the whole replay (target: over
100). The reference, run in the same process on the same data: nilearn's
design matrix and OLS GLM fitted once on the whole run (no motion, no
per-volume work), and the ratio of the two totals.

    .venv/bin/python benchmarks/loop_speed.py [--volumes 300] [--voxels 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from loop.analysis.design import Trial
from loop.analysis.realtime import RunAnalyzer
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.plans import save_png
from loop.simulation.scanner import SimulatedScanner
from loop.simulation.subject import SubjectConfig, VirtualSubject
from scanner_bridge import RecordedRun
from stimulus.natural import natural_image_set
from stimulus.present import PlannedTrial, RunPlan, VirtualClock


def _record(root: Path, n_volumes: int, tr: float) -> tuple[VirtualSubject, Path, list[Trial]]:
    subject = VirtualSubject(SubjectConfig(motion_mm=0.05))
    n_images = min(100, int((n_volumes * tr - 10) / 6))
    images = natural_image_set(n_images, size=128, seed=1)
    planned = []
    for k in range(n_images):
        name, sha = save_png(images.pixels[k], root / "stim", f"img{k:03d}.png")
        planned.append(PlannedTrial(stimulus=name, sha256=sha, onset_s=4.0 + 6.0 * k, duration_s=1.0))
    plan = RunPlan(run_id="bench", tr_s=tr, n_volumes=n_volumes, trials=tuple(planned))
    scanner = SimulatedScanner(
        subject, root / "export", tr_s=tr, clock=VirtualClock(), stimulus_dir=root / "stim"
    )
    record = scanner.run(plan=plan)
    truth = json.loads(record.truth.read_text())  # type: ignore[union-attr]
    trials = [Trial(p["onset_s"], p["duration_s"], p["stimulus"]) for p in truth["presentations"]]
    return subject, root / "export", trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--voxels", type=int, default=20000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tr = 2.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subject, export, trials = _record(root, args.volumes, tr)
        run = RecordedRun.load(export)
        volumes = [np.asarray(run.values(k)) for k in range(run.n_volumes)]
        labels, names = subject.write_atlas(root / "atlas")
        atlas = RoiAtlas.load(labels, names)
    rng = np.random.default_rng(0)
    brain = np.argwhere(subject.brain)
    extra = brain[rng.choice(len(brain), args.voxels - len(subject.tuning.coords), replace=False)]
    voxels = np.concatenate([subject.tuning.coords, extra])
    signals = RoiSignals(atlas, voxels=voxels)
    signals.check(volumes[0].shape, run.affine)

    analyzer = RunAnalyzer(signals, tr, len(volumes), max_trials=len(trials), voxel_mm=[3.0, 3.0, 3.0])
    pending = list(trials)
    started = time.perf_counter()
    for k, volume in enumerate(volumes):
        while pending and pending[0].onset_s < k * tr:  # the presenter reported it by now
            analyzer.add_trial(pending.pop(0))
        analyzer.process(k, volume)
    solve_started = time.perf_counter()
    ours = analyzer.voxel_responses()
    solve = time.perf_counter() - solve_started
    total = time.perf_counter() - started
    per_volume = np.array([r.seconds for r in analyzer.results]) * 1e3

    from nilearn.glm.first_level import make_first_level_design_matrix, run_glm

    started = time.perf_counter()
    percent = np.stack([signals.extract(v)[1] for v in volumes])
    percent = 100 * (percent / percent.mean(0) - 1)
    events = pd.DataFrame({"onset": [t.onset_s for t in trials], "duration": [t.duration_s for t in trials],
                           "trial_type": [f"t{k:03d}" for k in range(len(trials))]})  # fmt: skip
    design = make_first_level_design_matrix(np.arange(len(volumes)) * tr, events, hrf_model="spm")
    labels_, results = run_glm(percent, design.to_numpy(), noise_model="ols")
    theirs = results[labels_[0]].theta[: len(trials)]
    reference = time.perf_counter() - started

    agreement = np.median(
        [
            np.corrcoef(ours[:, v], theirs[:, v])[0, 1]
            for v in range(0, ours.shape[1], max(1, ours.shape[1] // 500))
        ]
    )
    print(f"real-time path: {len(volumes)} volumes {volumes[0].shape}, {len(signals.roi_names)} ROIs, "
          f"{len(voxels)} model voxels, {len(trials)} trials; CPU, 2 threads")  # fmt: skip
    print(f"per volume: median {np.median(per_volume):.2f} ms, p99 {np.percentile(per_volume, 99):.2f} ms, "
          f"max {per_volume.max():.2f} ms (target: p99 under 5 ms)")  # fmt: skip
    print(f"final solve of all responses: {1e3 * solve:.1f} ms")
    print(f"whole replay: {total:.2f} s for {len(volumes) * tr:.0f} s of scanning: "
          f"{len(volumes) * tr / total:.0f} times real time (target: over 100)")  # fmt: skip
    print(f"reference, nilearn design + OLS GLM on the whole run at once: {reference:.2f} s")
    print(f"ratio real-time path / nilearn batch: {total / reference:.2f}")
    print(
        f"median correlation of per-voxel responses with nilearn's: {agreement:.3f} "
        "(ours: motion confounds, first-volume baseline; nilearn: run-mean baseline)"
    )
    print(f"median framewise displacement {np.median([r.fd_mm for r in analyzer.results]):.3f} mm")


if __name__ == "__main__":
    main()
