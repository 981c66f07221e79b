"""Speed of the simulated scanner: volumes per second for the default virtual subject, at full speed.

A 300-volume event-related run (TR 2 s, 100 natural images shown for 1 s
every 6 s) is acquired by :class:`SimulatedScanner` on a clock that never
waits: the subject's BOLD (HRF per voxel, AR(1), physiological noise,
drift) is generated for every voxel of the 64 x 64 x 36 volume and written
as NIfTI files, renamed into place. The reference, run in the same process
on the same volumes: ``replay_to_directory`` writing the recorded run back
out (NIfTI encoding and file writes only, no BOLD model). Prints:

- the time to build the subject (backbone, calibration set) and for it to
  look at the run's images (once per image; later runs reuse them),
- volumes per second and the time of the whole run, for the simulation and
  for the bare replay, and their ratio.

    .venv/bin/python benchmarks/simulate_speed.py [--volumes 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from loop.plans import save_png
from loop.simulation.scanner import SimulatedScanner
from loop.simulation.subject import SubjectConfig, VirtualSubject
from scanner_bridge import RecordedRun, replay_to_directory
from stimulus.natural import natural_image_set
from stimulus.present import PlannedTrial, RunPlan, VirtualClock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tr = 2.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        subject = VirtualSubject(SubjectConfig())
        built = time.perf_counter() - started
        n_images = min(100, int((args.volumes * tr - 10) / 6))
        images = natural_image_set(n_images, size=128, seed=1)
        trials = []
        for k in range(n_images):
            name, sha = save_png(images.pixels[k], root / "stim", f"img{k:03d}.png")
            trials.append(PlannedTrial(stimulus=name, sha256=sha, onset_s=4.0 + 6.0 * k, duration_s=1.0))
        plan = RunPlan(run_id="bench", tr_s=tr, n_volumes=args.volumes, trials=tuple(trials))
        scanner = SimulatedScanner(
            subject, root / "export", tr_s=tr, clock=VirtualClock(), stimulus_dir=root / "stim"
        )
        started = time.perf_counter()
        scanner.responses_to([t.stimulus for t in trials])
        looked = time.perf_counter() - started

        simulate, replay = [], []
        for repeat in range(args.repeats):  # alternate, so drift in the machine hits both alike
            started = time.perf_counter()
            scanner.run(plan=plan, run=repeat + 1)
            simulate.append(time.perf_counter() - started)
            recorded = RecordedRun.load(root / "export", series=f"run{repeat + 1:02d}_vol_#####.nii")
            started = time.perf_counter()
            replay_to_directory(
                recorded, root / f"replay{repeat}", tr_s=tr, clock=VirtualClock(), atomic=True
            )
            replay.append(time.perf_counter() - started)

    sim_s, rep_s = statistics.median(simulate), statistics.median(replay)
    config = subject.config
    voxels = f"{int(subject.brain.sum())} brain voxels, {len(subject.tuning.roi)} ROI voxels"
    print(f"simulated scanner speed: default subject {config.shape} at {config.voxel_mm} mm, {voxels}")
    print("CPU, 2 threads")
    print(f"building the subject: {built:.1f} s; looking at {n_images} images: {looked:.1f} s "
          f"({1e3 * looked / n_images:.0f} ms each, once per image)")  # fmt: skip
    print(f"simulation ({args.volumes} volumes, {len(trials)} presentations): {sim_s:.2f} s, "
          f"{args.volumes / sim_s:.0f} volumes/s  (median of {args.repeats})")  # fmt: skip
    print(f"bare replay of the same volumes:  {rep_s:.2f} s, {args.volumes / rep_s:.0f} volumes/s")
    print(f"ratio simulation / bare replay: {sim_s / rep_s:.2f}")
    print(f"a {args.volumes}-volume run at full speed takes {sim_s:.1f} s "
          f"({args.volumes * tr / sim_s:.0f} times real time at TR {tr:g} s)")  # fmt: skip


if __name__ == "__main__":
    main()
