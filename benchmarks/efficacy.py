"""Does the closed loop control? Whole simulated sessions, seeds x strategies, judged against the truth.

Each arm (a strategy with its settings) runs a whole default session per
seed in this machine's processes (``cortexloop simulate --in-process``, one
thread each, ``--workers`` at a time), against the virtual subject of that
seed. Then, per arm, ROI and round:

- measured: the target's images against the round's best natural control
  (the ratio, and the one-sided test the round table shows);
- true: the virtual subject's true response to the target's images against
  the best and the mean image of a natural pool of ``--pool`` images that no
  session showed (drawn with a seed no session uses), and target against
  non-target images (Welch's t on the true responses);
- each arm's true drive over the baseline's, ROI by ROI, averaged over seeds.

A session that an earlier run of the benchmark left unfinished (killed) is
continued where it stopped (``--resume``); a finished one is not run again.

The truth is the scorer's alone: the sessions never see it. Choose settings
on some seeds and judge them on others: the settings were chosen on seeds
0-2 and 8-10 (the suite uses seed 0), so the default report is on seeds 3-7.

    .venv/bin/python benchmarks/efficacy.py [--seeds 3 4 5 6 7] [--arms baseline adaptive] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from db import open_database
from loop.config import SessionConfig, to_toml
from loop.software import describe
from loop.sweep.efficacy import PoolTruth, RoundFigures, pool_responses, session_figures

TARGETS = ("V1", "V4", "LO", "FFA", "PPA")

# Each arm: the session file's [synthesis] (and [rounds]) changes from the defaults. The named sets
# pin every setting they judge, so an arm keeps its meaning when the defaults move on.
TODAY = {  # the default this benchmark first judged (screened, until the adaptive default)
    "strategy": "screened",
    "steps": 128,
    "learning_rate": 0.05,
    "later_steps": 128,
    "later_learning_rate": 0.05,
    "later_candidates": 2000,
}
NEW = {  # round 1 moves further from the natural images; later rounds refine, with no fresh pool
    "steps": 256,
    "learning_rate": 0.1,
    "later_steps": 128,
    "later_learning_rate": 0.05,
    "later_candidates": 0,
}
STRONG_FIRST = {"jitter": 0.1, "zoom": 0.3, "rotate_deg": 20.0,
                "later_jitter": 0.06, "later_zoom": 0.1, "later_rotate_deg": 10.0}  # fmt: skip
PAPER = {"steps": 64, "learning_rate": 0.02, "later_steps": 64, "later_learning_rate": 0.02}
ARMS: dict[str, dict[str, dict[str, object]]] = {
    "adaptive": {"synthesis": {**NEW, "strategy": "adaptive"}},
    # stronger random transforms while refining (README: ahead on seeds 3-7; seed 0 fell in round 2)
    "adaptive-transforms": {
        "synthesis": {**NEW, "strategy": "adaptive", "jitter": 0.1, "zoom": 0.3, "rotate_deg": 20.0}
    },
    # the same in the first round that synthesizes only; later rounds refine at the default's
    "adaptive-transforms-first": {"synthesis": {**NEW, "strategy": "adaptive", **STRONG_FIRST}},
    # the ROI's mean predicted response as the objective, as the screening ranks and the truth scores
    "adaptive-roi-mean": {"synthesis": {**NEW, "strategy": "adaptive", "objective": "roi-mean"}},
    # the same number of steps in all, moved to the first round (384, then 64 and 64): round 3's refinement
    # adds next to nothing (README, "Where the gap is"), round 1's steps pay
    "adaptive-steps-first": {"synthesis": {**NEW, "strategy": "adaptive", "steps": 384, "later_steps": 64}},
    # later rounds refine with half the steps (64), a quarter less time a session: the later rounds' steps
    # added 0-2 % of the pool's best in V1, V4 and LO and lost in FFA and PPA (README: level with the
    # default on seeds 3-7, behind on tuning seeds 0-2; not adopted)
    "adaptive-later-64": {"synthesis": {**NEW, "strategy": "adaptive", "later_steps": 64}},
    "screened-new": {"synthesis": {**NEW, "strategy": "screened"}},
    "baseline": {"synthesis": {**PAPER, "strategy": "best-measured"}},
    "from-noise": {"synthesis": {**PAPER, "strategy": "from-noise"}},
    "screened": {"synthesis": TODAY},  # the default until this arm's successor
    "screened-256": {"synthesis": {**TODAY, "steps": 256}},  # twice the gradient steps (and time)
    "screened-6000": {"synthesis": {**TODAY, "candidates": 6000}},  # three times the candidates screened
    "screened-1000": {"synthesis": {**TODAY, "candidates": 1000}},  # half
    "screened-div0": {"synthesis": {**TODAY, "diversity": 0.0}},  # no push apart of a target's images
    "screened-once": {"synthesis": {**TODAY, "later_candidates": 0}},  # fresh candidates in round 1 only
}


def _session_file(arm: str, folder: Path) -> Path:
    config = SessionConfig()
    for section, changes in ARMS[arm].items():
        config = dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **changes)}
        )
    path = folder / f"{arm}.toml"
    path.write_text(to_toml(config))
    return path


def _run_session(arm: str, seed: int, out: Path, rounds: int) -> tuple[str, int, float, str]:
    folder = out / arm / f"seed{seed}"
    if (folder / "report.html").exists():  # done by an earlier run of the benchmark
        return arm, seed, 0.0, ""
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "loop.cli", "--log-level", "warning", "simulate", "--in-process"]
    if (folder / "session.toml").exists():  # an earlier run of the benchmark was killed during it
        command += ["--resume", "--out", str(folder)]
    else:
        command += [
            "--config", str(_session_file(arm, folder.parent)), "--seed", str(seed), "--rounds", str(rounds),
            "--out", str(folder),
        ]  # fmt: skip
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        return arm, seed, time.perf_counter() - started, result.stdout[-2000:] + result.stderr[-2000:]
    return arm, seed, time.perf_counter() - started, ""


def _pool_truth(seed: int, n: int, out: Path) -> dict[str, np.ndarray]:
    """The true ROI responses to an unseen natural pool (``loop.sweep.efficacy``), cached in ``out``."""
    cache = out / f"pool-seed{seed}-{n}.npz"
    if not cache.exists():
        import torch

        torch.set_num_threads(1)
        size = SessionConfig().synthesis.display_size
        np.savez(cache, **pool_responses(seed, n, display_size=size))
    data = np.load(cache)
    return {k: data[k] for k in data.files}


def _rounds(folder: Path, pool: PoolTruth) -> dict[str, dict[int, RoundFigures]]:
    with open_database(folder / "cortexloop.sqlite") as database:
        figures = session_figures(database, "sub-01/ses-01", pool)
    out: dict[str, dict[int, RoundFigures]] = {}
    for f in figures:
        out.setdefault(f.roi, {})[f.round] = f
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 7])
    parser.add_argument(
        "--arms", nargs="+", default=["baseline", "screened", "adaptive"], choices=sorted(ARMS)
    )
    parser.add_argument("--rounds", type=int, default=SessionConfig().rounds.count)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("efficacy-output"))
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.workers) as pool:
        pools = {seed: pool.submit(_pool_truth, seed, args.pool, args.out) for seed in args.seeds}
        runs = [
            pool.submit(_run_session, arm, seed, args.out, args.rounds)
            for arm in args.arms
            for seed in args.seeds
        ]
        for done in concurrent.futures.as_completed(runs):
            arm, seed, seconds, failure = done.result()
            print(f"{arm} seed {seed}: {'FAILED' if failure else 'done'} in {seconds:.0f} s", flush=True)
            if failure:
                print(failure)
        truth = {seed: f.result() for seed, f in pools.items()}
    print(f"\nall sessions and pools in {time.perf_counter() - started:.0f} s; seeds {args.seeds}\n")
    pools = {seed: PoolTruth.of(seed, truth[seed]) for seed in args.seeds}
    results = {
        arm: {seed: _rounds(args.out / arm / f"seed{seed}", pools[seed]) for seed in args.seeds}
        for arm in args.arms
    }
    last = args.rounds
    for arm in args.arms:
        print(f"== {arm}: per ROI and round, the mean over seeds (each seed's figure in brackets)")
        print("roi  round  measured/best natural [p<.05]  true/pool best [by seed]  true/pool mean  true t")
        for roi in TARGETS:
            for index in range(1, last + 1):
                rows = [results[arm][seed][roi][index] for seed in args.seeds]
                best = [r.true_vs_pool_best for r in rows]
                mean = [r.true_vs_pool_mean for r in rows]
                significant = sum(r.vs_best_p < 0.05 for r in rows)
                print(
                    f"{roi:4} {index:5}  {np.mean([r.measured_vs_best for r in rows]):8.2f}"
                    f"  [{significant}/{len(rows)}]           {np.mean(best):5.2f} "
                    f"[{' '.join(f'{b:.2f}' for b in best)}]  {np.mean(mean):5.2f}  "
                    f"{np.mean([r.true_t for r in rows]):6.1f}"
                )
        final = {seed: results[arm][seed] for seed in args.seeds}
        above = {s: int(sum(final[s][roi][last].true_vs_pool_best > 1 for roi in TARGETS)) for s in final}
        measured = {s: int(sum(final[s][roi][last].measured_vs_best > 1 for roi in TARGETS)) for s in final}
        rising = {
            seed: bool(
                all(
                    np.mean([results[arm][seed][roi][i + 1].true for roi in TARGETS])
                    > np.mean([results[arm][seed][roi][i].true for roi in TARGETS])
                    for i in range(1, last)
                )
            )
            for seed in args.seeds
        }
        print(f"last round, true above the pool's best: {above} of {len(TARGETS)} ROIs by seed "
              f"(mean {np.mean(list(above.values())):.1f})")  # fmt: skip
        print(f"last round, measured above the best natural control: {measured} by seed")
        print(f"true drive rising round over round: {rising}\n")
    if "baseline" in args.arms:
        for arm in args.arms:
            if arm == "baseline":
                continue
            ratios = {
                roi: np.mean([results[arm][s][roi][last].true / results["baseline"][s][roi][last].true
                              for s in args.seeds])
                for roi in TARGETS
            }  # fmt: skip
            print(f"{arm} / baseline, last round's true drive, mean over seeds: "
                  + ", ".join(f"{roi} {r:.2f}" for roi, r in ratios.items()))  # fmt: skip


if __name__ == "__main__":
    main()
