"""Ridge with a penalty per voxel: cortexloop against himalaya and scikit-learn on identical data.

Usage: python benchmarks/ridge_fit.py [--samples N] [--features P] [--voxels V]
                                      [--alphas K] [--folds F] [--dtype float32|float64]
                                      [--skip-sklearn]

In one process, on the same arrays:

1. cortexloop's RidgeCV, K-fold over contiguous blocks (the folds given to
   himalaya too), one penalty per voxel chosen by mean R^2 over folds, then
   the refit of the primal coefficients on all samples;
2. himalaya's best solver for the shape: KernelRidgeCV with a linear kernel
   when samples < features (what himalaya itself advises), RidgeCV otherwise,
   with the same folds, R^2 scoring and intercept, plus the primal
   coefficients;
3. scikit-learn's RidgeCV(alpha_per_target=True), which only does
   leave-one-out (GCV), against cortexloop's exact leave-one-out.

Prints each time, the ratios, the largest difference in chosen-penalty
scores and coefficients, and the GFLOP/s cortexloop achieved (from a count
of its matrix products) beside this machine's measured matmul GFLOP/s in the
same dtype, the ceiling for this kind of work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from stimulus.ridge import RidgeCV, group_folds


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best of a few square products: the machine's practical ceiling."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b)[1] for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def ridge_flops(
    n: int, p: int, v: int, k: int, folds: list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]
) -> float:
    """Multiply-adds (x2) of cortexloop's K-fold fit: Gram, eigh (~9 r^3), projections, products."""
    total = 0.0
    for train, test in folds:
        n_tr, n_te = len(train), len(test)
        r = min(n_tr, p)
        total += 2 * n_tr * p * r + 9 * r**3  # Gram matrix and its eigendecomposition
        total += (
            2 * n_te * p * n_tr + 2 * n_te * n_tr * r if n_tr <= p else 2 * n_te * p * r
        )  # test projection
        total += 2 * r * n_tr * v + 2 * k * n_te * r * v  # Z^T Y, predictions for every penalty
    r = min(n, p)
    total += 2 * n * p * r + 9 * r**3 + 2 * r * n * v + 2 * p * r * v  # refit
    return total


def _coef_gap(ours: npt.NDArray[Any], reference: npt.NDArray[Any], same: npt.NDArray[np.bool_]) -> str:
    if not same.any():
        return "no voxel chose the same penalty"
    gap = np.abs(ours[:, same] - reference[:, same]).max() / np.abs(reference[:, same]).max()
    return f"largest coefficient difference where the penalty agrees {gap:.2e} (relative)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--features", type=int, default=10000)
    parser.add_argument("--voxels", type=int, default=20000)
    parser.add_argument("--alphas", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--skip-sklearn", action="store_true", help="skip the leave-one-out comparison")
    args = parser.parse_args(argv)
    out = sys.stdout
    n, p, v, k = args.samples, args.features, args.voxels, args.alphas
    np_dtype = np.float32 if args.dtype == "float32" else np.float64
    torch_dtype = torch.float32 if args.dtype == "float32" else torch.float64

    rng = np.random.default_rng(0)
    latent = rng.standard_normal((n, 64)).astype(np_dtype)
    x = (
        latent @ rng.standard_normal((64, p)).astype(np_dtype) + rng.standard_normal((n, p)).astype(np_dtype)
    ) / 8
    tuning = rng.standard_normal((p, 16)).astype(np_dtype) @ rng.standard_normal((16, v)).astype(np_dtype)
    y = x @ tuning / np.sqrt(p) + rng.standard_normal((n, v)).astype(np_dtype) * rng.uniform(
        0.2, 5, v
    ).astype(np_dtype)
    alphas = np.logspace(-1, 6, k)
    folds = group_folds(n, args.folds)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ceiling = matmul_gflops(torch_dtype)
    print(
        f"ridge fit: {n} samples x {p} features x {v} voxels, {k} penalties, {args.folds} folds, "
        f"{args.dtype}, {torch.get_num_threads()} threads, device {device}",
        file=out,
    )
    print(f"machine matmul ceiling ({args.dtype}, 2048^3): {ceiling:.1f} GFLOP/s", file=out)

    ours, t_ours = _timed(lambda: RidgeCV(alphas, cv=folds, dtype=args.dtype, device=device).fit(x, y))
    achieved = ridge_flops(n, p, v, k, folds) / t_ours / 1e9
    print(
        f"cortexloop RidgeCV (k-fold, {ours.solver_}): {t_ours:8.2f} s   {achieved:.1f} GFLOP/s "
        f"({100 * achieved / ceiling:.0f}% of the matmul ceiling)",
        file=out,
    )

    import warnings

    from himalaya.backend import set_backend
    from himalaya.scoring import r2_score

    set_backend("numpy" if device == "cpu" else "torch_cuda", on_error="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if n < p:
            from himalaya.kernel_ridge import KernelRidgeCV

            name = "himalaya KernelRidgeCV(kernel='linear')"

            def run_himalaya() -> tuple[Any, Any]:
                model = KernelRidgeCV(
                    alphas=alphas, kernel="linear", cv=folds, fit_intercept=True,
                    solver_params={"score_func": r2_score},
                ).fit(x, y)  # fmt: skip
                return model, model.get_primal_coef()
        else:
            from himalaya.ridge import RidgeCV as HimalayaRidgeCV

            name = "himalaya RidgeCV"

            def run_himalaya() -> tuple[Any, Any]:
                model = HimalayaRidgeCV(
                    alphas=alphas, cv=folds, fit_intercept=True, solver_params={"score_func": r2_score}
                ).fit(x, y)
                return model, model.coef_

        (reference, reference_coef), t_ref = _timed(run_himalaya)
    reference_coef = np.asarray(reference_coef)
    same_alpha = np.isclose(ours.alpha_, np.asarray(reference.best_alphas_), rtol=1e-6)
    score_gap = np.abs(ours.best_score_ - np.asarray(reference.cv_scores_).ravel()).max()
    print(f"{name + ':':<39} {t_ref:8.2f} s", file=out)
    print(
        f"  speed-up over himalaya: {t_ref / t_ours:.2f}x; same penalty for "
        f"{100 * same_alpha.mean():.2f}% of voxels; largest CV score difference {score_gap:.2e}; "
        f"{_coef_gap(ours.coef_, reference_coef, same_alpha)}",
        file=out,
    )
    del reference, reference_coef

    if args.skip_sklearn:
        return
    from sklearn.linear_model import RidgeCV as SkRidgeCV

    loo, t_loo = _timed(lambda: RidgeCV(alphas, cv="loo", dtype=args.dtype, device=device).fit(x, y))
    sk, t_sk = _timed(lambda: SkRidgeCV(alphas=alphas, alpha_per_target=True).fit(x, y))
    same_alpha = np.isclose(loo.alpha_, sk.alpha_, rtol=1e-6)
    # For a voxel where the two pick different penalties, how far apart were the two penalties' scores?
    differ = np.flatnonzero(~same_alpha)
    index = {a: i for i, a in enumerate(alphas)}
    tie = max(
        (abs(loo.cv_scores_[index[loo.alpha_[j]], j] - loo.cv_scores_[index[sk.alpha_[j]], j])
         / abs(loo.cv_scores_[index[loo.alpha_[j]], j]) for j in differ),
        default=0.0,
    )  # fmt: skip
    print(f"cortexloop RidgeCV (leave-one-out):     {t_loo:8.2f} s", file=out)
    print(f"scikit-learn RidgeCV (GCV, per target): {t_sk:8.2f} s", file=out)
    print(
        f"  speed-up over scikit-learn: {t_sk / t_loo:.2f}x; same penalty for "
        f"{100 * same_alpha.mean():.2f}% of voxels (where they differ, the two penalties' leave-one-out "
        f"errors are within {tie:.1e}, relative); "
        f"{_coef_gap(loo.coef_, sk.coef_.T, same_alpha)}",
        file=out,
    )


if __name__ == "__main__":
    main()
