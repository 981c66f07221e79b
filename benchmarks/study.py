"""A study across days and subjects on the virtual subject: day 2 continues day 1, and Experiment 3.

Day 2 (``--seeds``): each seed's day-1 session (the default session; a
finished one in ``--day-one DIR/seedN``, such as the efficacy benchmark's
adaptive arm, is used as it is, else it is run here) is continued by a day 2
of the same subject: its head moved (``--move-mm``) and turned
(``--turn-deg``), no training run (or ``--training N`` images),
``--rounds`` rounds, ``[model] start`` naming day 1. Printed per seed and
target: the true response to its images in each day-2 round against day
1's last round.

Experiment 3 (``--new-subjects``, paper 000): three virtual subjects
(seeds 21-23) fitted offline on 100 natural images each (betas whose noise
is half the signal's spread), averaged by ROI, drive each new subject with
no training run for one round. Printed per subject: the targets driven
above the non-target images, measured (the session's outcome) and in truth.

Every session runs as ``cortexloop simulate --in-process`` with one thread,
``--workers`` at a time. A day 1 made here without a reference volume is
given one: the subject's first volume with the head where day 1 had it.

    .venv/bin/python benchmarks/study.py [--seeds 3 4 5] [--day-one /tmp/eff37/adaptive] \\
        [--new-subjects 24 25 26 27 28] [--out /tmp/study]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from db import open_database
from db.queries import session_id, session_scores
from loop.config import SessionConfig, to_toml
from loop.recording import SessionReference
from loop.scoring import Metric
from loop.simulation.bold import BoldRun
from loop.simulation.subject import ROI_NAMES, SubjectConfig, VirtualSubject
from loop.summary import session_outcome

DONORS = (21, 22, 23)


def simulate(config: Path, seed: int, database: Path, out: Path) -> float:
    """Run one in-process session with one thread; its wall time in seconds."""
    command = [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--in-process",
               "--seed", str(seed), "--config", str(config), "--db", str(database),
               "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{out}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def true_by_round(database: Path, ref: str) -> dict[int, dict[str, float]]:
    with open_database(database) as db, db.reader() as s:
        scores = session_scores(s, session_id(s, ref))
    found: dict[int, dict[str, float]] = {}
    for score in scores:
        if score.metric == Metric.TARGET_TRUE and score.round_index is not None:
            found.setdefault(score.round_index, {})[str(score.roi)] = score.value
    return found


def day_one(seed: int, given: Path | None, root: Path) -> Path:
    """A finished default session of ``seed``, with a reference volume."""
    folder = given / f"seed{seed}" if given else root / f"day1-seed{seed}"
    if not (folder / "cortexloop.sqlite").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        (root / "defaults.toml").write_text(to_toml(SessionConfig()))
        simulate(root / "defaults.toml", seed, folder / "cortexloop.sqlite", folder)
    if not (folder / "reference.npz").exists():  # made before sessions kept one: the head where day 1 had it
        subject = VirtualSubject(SubjectConfig(seed=seed))
        volume = BoldRun(subject, 2.0, 1, seed=1).volume()
        SessionReference(folder / "reference.npz", [subject.config.voxel_mm] * 3).position(
            volume, subject.affine
        )
    return folder


def day_two(seed: int, first: Path, root: Path, args: argparse.Namespace) -> tuple[str, float]:
    folder = root / f"day2-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "study.sqlite"
    database.unlink(missing_ok=True)
    with sqlite3.connect(first / "cortexloop.sqlite") as source, sqlite3.connect(database) as target:
        source.backup(target)
    upgrade = [sys.executable, "-m", "loop.cli", "db", "upgrade", "--db", str(database)]
    subprocess.run(upgrade, check=True, capture_output=True)  # a day 1 recorded by an earlier version
    move, turn = list(args.move_mm), list(args.turn_deg)
    (folder / "subject.toml").write_text(f"head_mm = {move}\nhead_deg = {turn}\n")
    c = SessionConfig()
    config = dataclasses.replace(
        c,
        session=dataclasses.replace(c.session, session="ses-02"),
        atlas=dataclasses.replace(c.atlas, reference=str(first / "reference.npz")),
        training=dataclasses.replace(
            c.training, images=args.training, repeated=min(c.training.repeated, args.training // 5)
        ),
        rounds=dataclasses.replace(c.rounds, count=args.rounds),
        model=dataclasses.replace(c.model, start=("sub-01/ses-01",)),
        simulation=dataclasses.replace(c.simulation, subject=str(folder / "subject.toml")),
    )
    (folder / "day2.toml").write_text(to_toml(config))
    seconds = simulate(folder / "day2.toml", seed, database, folder / "session")
    return str(database), seconds


def experiment_3(
    subject_seed: int, donors: list[Path], root: Path
) -> tuple[list[str], dict[str, float], float]:
    folder = root / f"exp3-subject{subject_seed}"
    folder.mkdir(parents=True, exist_ok=True)
    c = SessionConfig()
    config = dataclasses.replace(
        c,
        training=dataclasses.replace(c.training, images=0, repeated=0),
        rounds=dataclasses.replace(c.rounds, count=1),
        model=dataclasses.replace(c.model, start=tuple(str(p) for p in donors)),
    )
    (folder / "exp3.toml").write_text(to_toml(config))
    database = folder / "cortexloop.sqlite"
    database.unlink(missing_ok=True)
    seconds = simulate(folder / "exp3.toml", subject_seed, database, folder / "session")
    with open_database(database) as db, db.reader() as s:
        outcome = session_outcome(s, "sub-01/ses-01")
        scores = session_scores(s, session_id(s, "sub-01/ses-01"))
    truth_t = {str(v.roi): v.value for v in scores if v.metric == Metric.TRUTH_TARGET_T}
    return outcome.driven, truth_t, seconds


def donor_models(root: Path) -> list[Path]:
    from stimulus.encoding import EncodingModel
    from stimulus.natural import natural_image_set

    images = natural_image_set(100, size=128, seed=31).pixels
    paths = []
    for seed in DONORS:
        path = root / "donors" / f"sub-{seed}.pt"
        if not path.exists():
            donor = VirtualSubject(SubjectConfig(seed=seed))
            truth = donor.voxel_responses(images)
            measured = truth + np.random.default_rng(seed).normal(0, 0.5, truth.shape) * truth.std(0)
            where = np.ravel_multi_index(tuple(donor.tuning.coords.T), donor.labels.shape)
            labels = [ROI_NAMES[r] for r in donor.tuning.roi]
            model = EncodingModel(SessionConfig().model.encoding())
            path.parent.mkdir(parents=True, exist_ok=True)
            model.fit(images, measured, roi_labels=labels, voxel_indices=where).save(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[3, 4, 5])
    parser.add_argument("--day-one", type=Path, default=None, help="finished day-1 sessions, DIR/seedN")
    parser.add_argument("--move-mm", type=float, nargs=3, default=[2.5, -2.5, 2.0])
    parser.add_argument("--turn-deg", type=float, nargs=3, default=[3.0, -3.0, 2.5])
    parser.add_argument("--training", type=int, default=0, help="day 2's training images (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-subjects", type=int, nargs="*", default=[24, 25, 26, 27, 28])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cortexloop-study"))
    args = parser.parse_args()
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
        firsts = dict(
            zip(args.seeds, pool.map(lambda s: day_one(s, args.day_one, root), args.seeds), strict=True)
        )
        seconds = dict(
            zip(args.seeds, pool.map(lambda s: day_two(s, firsts[s], root, args), args.seeds), strict=True)
        )
        donors = donor_models(root)
        exp3 = dict(
            zip(
                args.new_subjects,
                pool.map(lambda s: experiment_3(s, donors, root), args.new_subjects),
                strict=True,
            )
        )
    print(f"day 2: head {args.move_mm} mm, {args.turn_deg} degrees; {args.training} training images; "
          f"{args.rounds} round(s)")  # fmt: skip
    gains = []
    for seed in args.seeds:
        database, wall = seconds[seed]
        before = true_by_round(Path(database), "sub-01/ses-01")
        after = true_by_round(Path(database), "sub-01/ses-02")
        last = before[max(before)]
        print(f"seed {seed} (day 2 took {wall:.0f} s): the true response of each target to its images, "
              "day 1's last round")  # fmt: skip
        print(
            "  "
            + "  ".join(f"{roi} {last[roi]:.3f}" for roi in last)
            + f"  mean {np.mean(list(last.values())):.3f}"
        )
        for index, values in sorted(after.items()):
            above = sum(values[roi] >= last[roi] for roi in last)
            cells = "  ".join(f"{roi} {values[roi]:.3f}" for roi in last)
            mean = np.mean(list(values.values()))
            print(
                f"  day 2 round {index}: {cells}  mean {mean:.3f}; {above} of {len(last)} at or above day 1's"
            )
        final = after[max(after)]
        gains.append(np.mean(list(final.values())) / np.mean(list(last.values())))
    if gains:
        print(f"day 2's last round over day 1's (mean over targets): {', '.join(f'{g:.3f}' for g in gains)}")
    print(
        "Experiment 3: subjects 21-23's models averaged by ROI, a new subject with no training run, one round"
    )
    for subject, (driven, truth_t, wall) in exp3.items():
        true_driven = sum(t > 0 for t in truth_t.values())
        t_values = ", ".join(f"{k} {v:.1f}" for k, v in truth_t.items())
        measured = ", ".join(driven)
        print(f"  subject {subject}: {len(driven)} of 5 driven above non-targets (measured: {measured}); "
              f"in truth t > 0 in {true_driven} of 5 ({t_values}); {wall:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
