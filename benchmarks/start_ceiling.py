"""How good could a round's starts be? The images shown so far, ranked several ways, judged by the truth.

A later round of ``adaptive`` starts from the images shown so far that rank
best for each target. This rebuilds one round's context from sessions that
``benchmarks/efficacy.py`` left (as ``round_probe.py`` does) and ranks every
image shown before the round four ways: by the strategy's posterior (the
model and the measurements weighed together), by the measurements alone,
by the refitted model alone, and by the virtual subject's truth (an oracle
no strategy may use). Each ranking's top ``images_per_target``, their true
response over the best image of the unseen natural pool, says how much a
better ranking could gain (posterior against oracle) and how high the
images shown so far reach at all (the oracle): what no ranking can pass.

    .venv/bin/python benchmarks/start_ceiling.py --sessions efficacy-output/adaptive --seeds 3 4 5 6 7 \\
        --round 3
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from round_probe import TARGETS, _context, pool_bests, sessions_parser

from loop.config import load_config
from loop.evidence import posterior_means
from loop.software import describe
from loop.sweep.efficacy import true_responses
from stimulus.images import load_images, resize_pixels

RANKINGS = ("posterior", "measured", "model", "oracle")


def _ceilings(
    folder: Path, seed: int, index: int, pool_best: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per target, each ranking's top images' mean true response over the pool's best."""
    context = _context(folder, index, load_config(folder / "session.toml").synthesis)
    images = context.by_image()
    paths = list(images)
    size = context.settings.display_size
    pixels = load_images([context.stimuli / p for p in paths], size)
    model = context.model
    seen_by_model = np.stack([resize_pixels(p, model.config.image_size) for p in pixels])
    predicted = model.predict(seen_by_model)
    labels = np.asarray(model.roi_labels_)
    truth = true_responses(seed, np.round(pixels * 255) / 255)  # as the PNG holds them
    n = context.images_per_target
    out: dict[str, dict[str, float]] = {}
    for roi in context.targets:
        column = context.roi_names.index(roi)
        showings = [[s.responses[column] for s in images[p]] for p in paths]
        model_says = predicted[:, labels == roi].mean(1).astype(np.float64)
        scores: dict[str, npt.NDArray[np.float64]] = {
            "posterior": posterior_means(model_says, showings).means,
            "measured": np.array([np.mean(s) for s in showings]),
            "model": model_says,
            "oracle": np.asarray(truth[roi], dtype=np.float64),
        }
        true_ratio = np.asarray(truth[roi]) / pool_best[roi]
        out[roi] = {
            name: float(true_ratio[np.argsort(-s, kind="stable")[:n]].mean()) for name, s in scores.items()
        }
    return out


def main() -> None:
    parser = sessions_parser(__doc__, [3, 4, 5, 6, 7])
    parser.add_argument("--round", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {describe()}", flush=True)
    torch.set_num_threads(1)
    rows: dict[str, list[dict[str, float]]] = {roi: [] for roi in TARGETS}
    for seed in args.seeds:
        pool_best = pool_bests(args.sessions, seed, args.pool)
        for roi, ceiling in _ceilings(args.sessions / f"seed{seed}", seed, args.round, pool_best).items():
            rows[roi].append(ceiling)
            print(f"seed {seed} {roi:4} " + "  ".join(f"{k} {ceiling[k]:.3f}" for k in RANKINGS), flush=True)
    print(f"\nround {args.round}: the top images shown before it, by each ranking, true response over the "
          f"pool's best, mean over seeds {args.seeds}")  # fmt: skip
    print("roi   " + "  ".join(f"{k:>9}" for k in RANKINGS))
    for roi, per_seed in rows.items():
        if per_seed:
            print(f"{roi:5} " + "  ".join(f"{np.mean([r[k] for r in per_seed]):9.3f}" for k in RANKINGS))
    means = {k: np.mean([np.mean([r[k] for r in v]) for v in rows.values() if v]) for k in RANKINGS}
    print("mean  " + "  ".join(f"{means[k]:9.3f}" for k in RANKINGS))


if __name__ == "__main__":
    main()
