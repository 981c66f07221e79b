"""One round made again under other settings, judged by the truth: a quick look before a whole benchmark.

``benchmarks/efficacy.py`` leaves whole sessions in its output folder. For
each seed, this rebuilds one round's context as the controller had it
(every showing measured before the round, the model the round synthesized
with, the session's settings), makes the round's images twice, side by side
in this process (with the session's own settings and strategy, and with the
changes given), and judges both against the virtual subject's truth: each
target's images over the best image of the unseen natural pool that
efficacy.py cached. A change to how images are refined shows here in a
minute or two per seed; what it does to the rounds after is efficacy.py's to
measure (a round's images become the next round's starts).

    .venv/bin/python benchmarks/round_probe.py --sessions efficacy-output/adaptive --seeds 0 1 \\
        --round 1 --set learning_rate=0.2 strategy=screened
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import tomllib
from pathlib import Path

import numpy as np
import torch

from db import open_database
from db.queries import session_info, session_stimuli
from loop.config import SynthesisSettings, load_config, parse_config
from loop.evidence import Showing
from loop.folder import SessionFolder
from loop.software import describe
from loop.strategies import STRATEGIES, MadeImage, RoundContext
from loop.sweep.efficacy import true_responses

TARGETS = ("V1", "V4", "LO", "FFA", "PPA")


def _context(folder: Path, index: int, settings: SynthesisSettings) -> RoundContext:
    """Round ``index`` of the session in ``folder``, as its controller saw it before making its images."""
    from stimulus.encoding import EncodingModel

    config = load_config(folder / "session.toml")
    files = SessionFolder.of(config)
    names = [str(n) for n in np.load(files.responses_path(files.run(1)))["roi_names"]]
    showings = []
    for number in range(1, index + 1):  # the training run and the rounds before this one
        run = files.load_responses(files.run(number), names)
        showings += [Showing(s, number, r) for s, r in zip(run.stimuli, run.roi, strict=True)]
    with open_database(folder / "cortexloop.sqlite") as database, database.reader() as s:
        rows = session_stimuli(s, session_info(s, "sub-01/ses-01").id)
    origins = {
        r.path: r.synthesis["origin_file"] for r in rows if r.synthesis and r.synthesis.get("origin_file")
    }
    return RoundContext(
        index=index, targets=list(config.rounds.targets), showings=showings, roi_names=names,
        model=EncodingModel.load(folder / "models" / f"model-{index:02d}.pt"), stimuli=files.stimuli,
        origins=origins, settings=settings, images_per_target=config.rounds.images_per_target,
        seed=config.session.seed * 1000 + index,
    )  # fmt: skip


def _true_over_best(
    made: list[MadeImage], seed: int, pool_best: dict[str, float], size: int
) -> dict[str, float]:
    """Each target's images' mean true response over the pool's best, seen as the scanner shows them."""
    from stimulus.images import resize_pixels

    shown = np.stack([np.round(resize_pixels(m.pixels, size) * 255) / 255 for m in made])  # as the PNG holds
    truth = true_responses(seed, shown)
    return {
        roi: float(np.mean([truth[roi][k] for k, m in enumerate(made) if m.target == roi]) / pool_best[roi])
        for roi in {m.target for m in made}
    }


def pool_bests(sessions: Path, seed: int, n: int) -> dict[str, float]:
    """Each ROI's true response to the best image of the unseen pool that efficacy.py cached for ``seed``."""
    pool_file = sessions.parent / f"pool-seed{seed}-{n}.npz"
    if not pool_file.exists():
        raise SystemExit(f"{pool_file} is missing: run benchmarks/efficacy.py with --out {sessions.parent}")
    with np.load(pool_file) as pool:
        return {roi: float(pool[roi].max()) for roi in TARGETS}


def _changed(own: SynthesisSettings, items: list[str]) -> SynthesisSettings:
    """``own`` with each ``KEY=VALUE`` (a TOML value, or else a string), checked as a session file's."""
    table = dataclasses.asdict(own)
    for item in items:
        key, _, text = item.partition("=")
        try:
            table[key] = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            table[key] = text
    return parse_config({"synthesis": table}, source="--set").synthesis


def sessions_parser(doc: str, seeds: list[int]) -> argparse.ArgumentParser:
    """What every script that reads efficacy.py's sessions takes: ``--sessions``, ``--seeds``, ``--pool``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        "--sessions", type=Path, required=True, help="an arm's folder of efficacy.py's output"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--pool", type=int, default=2000, help="the unseen pool's size, as efficacy.py's")
    return parser


def main() -> None:
    parser = sessions_parser(__doc__, [0, 1])
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="[synthesis] settings")
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    torch.set_num_threads(1)
    results: dict[str, list[dict[str, float]]] = {"session's": [], "changed": []}
    for seed in args.seeds:
        folder = args.sessions / f"seed{seed}"
        pool_best = pool_bests(args.sessions, seed, args.pool)
        own = load_config(folder / "session.toml").synthesis
        for label, settings in (("session's", own), ("changed", _changed(own, args.set))):
            started = time.perf_counter()
            made = STRATEGIES[settings.strategy].make(_context(folder, args.round, settings))
            ratios = _true_over_best(made, seed, pool_best, settings.display_size)
            results[label].append(ratios)
            seconds = time.perf_counter() - started
            print(f"seed {seed} {label:9} ({seconds:4.0f} s): " + _row(ratios), flush=True)
    print(f"\nround {args.round}, each target's images' true response over the pool's best, mean over "
          f"seeds {args.seeds}; changed: {' '.join(args.set)}")  # fmt: skip
    for label, rows in results.items():
        means = {roi: float(np.mean([r[roi] for r in rows])) for roi in TARGETS}
        above = np.mean([sum(r[roi] > 1 for roi in TARGETS) for r in rows])
        print(
            f"{label:9}  {_row(means)}  mean {np.mean(list(means.values())):.3f}, above the best {above:.1f}"
        )
    gain = [np.mean(list(c.values())) / np.mean(list(o.values()))
            for c, o in zip(results["changed"], results["session's"], strict=True)]  # fmt: skip
    print(f"changed / session's: {np.mean(gain):.3f}")


def _row(ratios: dict[str, float]) -> str:
    return "  ".join(f"{roi} {ratios[roi]:.3f}" for roi in TARGETS if roi in ratios)


if __name__ == "__main__":
    main()
