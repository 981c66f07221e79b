"""What did each round's gradient steps do? Every image a session made against its start, by the truth.

``benchmarks/efficacy.py`` leaves whole sessions in its output folder, and
each round keeps the image every made image started from
(``stimuli/roundNN/starts/``). This judges both by the virtual subject's
truth: per ROI and round, the starts' and the made images' true response
over the best image of the unseen natural pool, the mean gain of an image
over its own start, and how many images collapsed (fell below ``--collapse``
of their start's true response). Where a round's steps gain, more steps or
a wider region may pay; where they lose, the measurements must catch it.
Images shown again as they were are not made in a round and are not counted.

    .venv/bin/python benchmarks/refinement_gain.py --sessions efficacy-output/adaptive --seeds 3 4 5 6 7
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from round_probe import TARGETS, pool_bests, sessions_parser

from loop.config import load_config
from loop.software import describe
from loop.sweep.efficacy import true_responses
from stimulus.images import load_images


def _made(folder: Path, seed: int, index: int, pool_best: dict[str, float]) -> list[tuple[str, float, float]]:
    """Round ``index``'s made images: (target, start's truth, image's truth), over the pool's best."""
    made = folder / "stimuli" / f"round{index:02d}"
    names = sorted(path.stem for path in made.glob("*.png"))
    if not names:
        return []
    size = load_config(folder / "session.toml").synthesis.display_size  # as the presenter showed them
    images = load_images([made / f"{name}.png" for name in names], size)
    starts = load_images([made / "starts" / f"{name}.png" for name in names], size)
    image_truth, start_truth = true_responses(seed, images), true_responses(seed, starts)
    rows = []
    for k, name in enumerate(names):
        target = name.rsplit("_", 1)[0]
        best = pool_best[target]
        rows.append((target, float(start_truth[target][k]) / best, float(image_truth[target][k]) / best))
    return rows


def main() -> None:
    parser = sessions_parser(__doc__, [3, 4, 5, 6, 7])
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--collapse", type=float, default=0.8, help="an image's truth over its start's")
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    torch.set_num_threads(1)
    rows: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for seed in args.seeds:
        pool_best = pool_bests(args.sessions, seed, args.pool)
        for index in args.rounds:
            for target, start, image in _made(args.sessions / f"seed{seed}", seed, index, pool_best):
                rows.setdefault((index, target), []).append((start, image))
    print(f"\nthe images each round made, true response over the pool's best, seeds {args.seeds}")
    print(f"round roi   made  start  image  gain over own start  collapsed (< {args.collapse:.2f} of start)")
    for index in args.rounds:
        for target in TARGETS:
            pairs = np.array(rows.get((index, target), []), dtype=np.float64).reshape(-1, 2)
            if not len(pairs):
                print(f"{index:5} {target:5} {0:4}")
                continue
            gain = pairs[:, 1] / pairs[:, 0]
            print(
                f"{index:5} {target:5} {len(pairs):4}  {pairs[:, 0].mean():5.3f}  {pairs[:, 1].mean():5.3f}  "
                f"{gain.mean():19.3f}  {int((gain < args.collapse).sum()):9}"
            )


if __name__ == "__main__":
    main()
