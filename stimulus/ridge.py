"""Multi-target ridge regression with a penalty chosen per target (voxel).

The penalty of each voxel is picked from a grid, either by K-fold
cross-validation over groups of samples (runs or sessions: a time series is
never split at random) or by exact leave-one-out for independent trial
responses. Each fold is decomposed once and that decomposition serves every
penalty and every voxel:

- the centred training features ``Xc`` (n x p) are diagonalized through the
  smaller of their two Gram matrices: ``Xc Xc^T`` (the dual, when n <= p) or
  ``Xc^T Xc`` (the primal, when p < n), so the cost is ``min(n, p)^2 max(n, p)``;
- in either case a prediction is ``A diag(1 / (d + alpha)) Z^T Y`` with ``d``
  the eigenvalues, ``Z`` the training projection and ``A`` the test projection,
  so all penalties come from one batched product;
- the refit on all samples scales ``Z^T Y`` voxel by voxel with that voxel's
  own penalty, so the coefficients come from a single product whatever the
  number of distinct penalties.

Voxels are processed in batches to bound memory. Everything runs in torch, on
the GPU when one is given. Results agree with scikit-learn's ``Ridge`` /
``RidgeCV`` and himalaya's ``RidgeCV`` (see tests/stimulus/test_ridge.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from stimulus._torch import DtypeName, resolve_device, resolve_dtype
from stimulus.errors import EncodingInputError
from stimulus.names import CvKind

__all__ = [
    "DEFAULT_ALPHAS",
    "Fold",
    "RidgeCV",
    "group_folds",
]

log = logging.getLogger(__name__)

Fold = tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]
Scoring = Literal["r2", "neg_mse"]
Progress = Callable[[int, int], None]

# One decade apart: standardized CNN features need penalties from tiny to huge.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 7, 10))


def group_folds(n_samples: int, n_splits: int, groups: npt.ArrayLike | None = None) -> list[Fold]:
    """K folds that never split a group (a run, a session) between train and test.

    Parameters
    ----------
    n_samples : int
    n_splits : int
        Number of folds, at least 2.
    groups : array-like of shape (n_samples,), optional
        The group of each sample. Groups go to folds in order of first
        appearance, in contiguous blocks. Without groups, samples go to folds
        in contiguous blocks (scikit-learn's ``KFold`` without shuffling).

    Returns
    -------
    list of (train_indices, test_indices)
    """
    if n_splits < 2:
        raise EncodingInputError(f"cross-validation needs at least 2 folds, not {n_splits}")
    if groups is None:
        if n_samples < 2 * n_splits:
            raise EncodingInputError(
                f"{n_samples} samples are too few for {n_splits} folds; each test fold needs 2 or more: "
                f"give at least {2 * n_splits} stimuli or ask for fewer folds"
            )
        blocks = np.array_split(np.arange(n_samples), n_splits)
        labels = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])
    else:
        group_array = np.asarray(groups)
        if group_array.shape != (n_samples,):
            raise EncodingInputError(
                f"groups has shape {group_array.shape}; expected one group per sample, ({n_samples},)"
            )
        _, first, inverse = np.unique(group_array, return_index=True, return_inverse=True)
        n_groups = len(first)
        if n_groups < n_splits:
            raise EncodingInputError(
                f"{n_groups} groups (runs or sessions) are too few for {n_splits} folds, since a group "
                f"is never split; record more runs, ask for at most {n_groups} folds, or use leave-one-out"
            )
        order = np.argsort(np.argsort(first))  # rank of each group by first appearance
        fold_of_group = np.concatenate(
            [np.full(len(b), i) for i, b in enumerate(np.array_split(np.arange(n_groups), n_splits))]
        )
        labels = fold_of_group[order[inverse]]
    folds: list[Fold] = []
    for k in range(n_splits):
        test = np.flatnonzero(labels == k).astype(np.intp)
        train = np.flatnonzero(labels != k).astype(np.intp)
        if len(test) < 2:
            raise EncodingInputError(
                f"fold {k + 1} of {n_splits} would test on {len(test)} sample; each needs 2 or more: "
                "give more stimuli per group or ask for fewer folds"
            )
        folds.append((train, test))
    return folds


@dataclass(frozen=True)
class _Eigenbasis:
    """One decomposition of centred training features ``Xc`` (n x p).

    ``predict = A diag(1/(d + alpha)) Z^T Y`` and ``coef = C diag(1/(d + alpha)) Z^T Y``,
    where ``A`` is :meth:`test_projection` of the test features.
    """

    d: torch.Tensor  # (r,) eigenvalues, those above round-off only
    z: torch.Tensor  # (n, r) training projection
    c: torch.Tensor  # (p, r) coefficient basis
    xc: torch.Tensor  # (n, p)
    dual: bool

    @classmethod
    def of(cls, xc: torch.Tensor) -> _Eigenbasis:
        n, p = xc.shape
        dual = n <= p
        gram = xc @ xc.T if dual else xc.T @ xc
        d, vectors = torch.linalg.eigh(gram)
        # Eigenvalues at round-off level (the centred data's null space, or rank deficiency) carry
        # no signal; dropping them keeps 1/sqrt(d) finite in leave-one-out and changes nothing else.
        tol = float(d.max().clamp(min=0)) * 16 * torch.finfo(d.dtype).eps
        keep = d > tol
        d, vectors = d[keep], vectors[:, keep]
        if dual:
            return cls(d=d, z=vectors, c=xc.T @ vectors, xc=xc, dual=True)
        return cls(d=d, z=xc @ vectors, c=vectors, xc=xc, dual=False)

    def test_projection(self, xte_c: torch.Tensor) -> torch.Tensor:
        """``A`` (n_test, r) for centred test features."""
        if self.dual:
            return (xte_c @ self.xc.T) @ self.z
        return xte_c @ self.c

    def left_singular_vectors(self) -> torch.Tensor:
        """``U`` (n, r) with ``Xc = U diag(sqrt d) V^T``, for leave-one-out."""
        return self.z if self.dual else self.z / self.d.sqrt()


def _as_tensor(array: npt.ArrayLike | torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(array), dtype=dtype, device=device)


def _check_matrix(name: str, array: npt.ArrayLike | torch.Tensor) -> npt.NDArray[np.floating]:
    values = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if values.ndim != 2:
        raise EncodingInputError(
            f"{name} has {values.ndim} dimension(s); expected a 2-D array (samples x columns); "
            "reshape a single column with .reshape(-1, 1)"
        )
    if not np.issubdtype(values.dtype, np.number):
        raise EncodingInputError(f"{name} has dtype {values.dtype}; expected numbers")
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        cols = np.flatnonzero(bad.any(axis=0))
        raise EncodingInputError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) in {len(rows)} row(s) (first: {rows[0]}) "
            f"and {len(cols)} column(s) (first: {cols[0]}); drop or impute them before fitting"
        )
    return values


def _fold_scores(
    y_test: torch.Tensor, predictions: torch.Tensor, scoring: Scoring
) -> torch.Tensor:  # (n_alphas, n_voxels)
    """Score predictions (n_alphas, n_test, v) of ``y_test`` (n_test, v), as scikit-learn would."""
    sse = (y_test.unsqueeze(0) - predictions).square().sum(dim=1)
    if scoring == "neg_mse":
        return -sse / y_test.shape[0]
    sst = (y_test - y_test.mean(dim=0)).square().sum(dim=0)
    scores = 1.0 - sse / sst.clamp(min=torch.finfo(sst.dtype).tiny)
    # scikit-learn's r2_score on a constant test fold: 1 when predicted exactly, else 0.
    constant = sst == 0
    if bool(constant.any()):
        scores[:, constant] = (sse[:, constant] == 0).to(scores.dtype)
    return scores


class RidgeCV:
    """Ridge regression with one penalty per target, chosen by cross-validation.

    Parameters
    ----------
    alphas : sequence of float
        The penalty grid, all positive.
    cv : {"kfold", "loo"} or sequence of (train, test) index arrays
        ``"kfold"``: ``n_splits`` folds over ``groups`` (see :func:`group_folds`),
        penalty chosen by the mean over folds of ``scoring``. ``"loo"``: exact
        leave-one-out, penalty chosen by the smallest leave-one-out squared
        error (for independent trial responses; scikit-learn's ``RidgeCV``
        with ``cv=None``). Or the folds themselves.
    n_splits : int
    scoring : {"r2", "neg_mse"}
        The per-fold score for K-fold selection. ``"r2"`` is what
        scikit-learn's ``GridSearchCV`` of a ``Ridge`` uses.
    fit_intercept : bool
    voxel_batch : int
        Voxels processed together; bounds memory at about
        ``n_alphas * n_test * voxel_batch`` numbers.
    device : str or torch.device, optional
        Defaults to the GPU when there is one.
    dtype : {"float32", "float64"}
    keep_cv_predictions : bool
        Keep the out-of-fold predictions at each voxel's chosen penalty
        (``cv_predictions_``), at the cost of one more pass over the folds.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features, n_voxels)
    intercept_ : ndarray of shape (n_voxels,)
    alpha_ : ndarray of shape (n_voxels,)
    cv_scores_ : ndarray of shape (n_alphas, n_voxels)
        Mean score over folds (K-fold) or minus the mean squared leave-one-out
        error, for every penalty.
    best_score_ : ndarray of shape (n_voxels,)
        ``cv_scores_`` at each voxel's penalty.
    folds_ : list of (train, test), empty for leave-one-out
    solver_ : {"primal", "dual"}
    cv_predictions_ : ndarray of shape (n_samples, n_voxels) or None
    """

    def __init__(
        self,
        alphas: Sequence[float] | npt.NDArray[np.floating] = DEFAULT_ALPHAS,
        *,
        cv: CvKind | Sequence[Fold] = "kfold",
        n_splits: int = 5,
        scoring: Scoring = "r2",
        fit_intercept: bool = True,
        voxel_batch: int = 4096,
        device: str | torch.device | None = None,
        dtype: DtypeName | torch.dtype = "float32",
        keep_cv_predictions: bool = False,
    ) -> None:
        self.alphas = alphas
        self.cv = cv
        self.n_splits = n_splits
        self.scoring = scoring
        self.fit_intercept = fit_intercept
        self.voxel_batch = voxel_batch
        self.device = device
        self.dtype = dtype
        self.keep_cv_predictions = keep_cv_predictions

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        x: npt.ArrayLike | torch.Tensor,
        y: npt.ArrayLike | torch.Tensor,
        groups: npt.ArrayLike | None = None,
        *,
        progress: Progress | None = None,
    ) -> RidgeCV:
        """Choose a penalty per voxel and fit the coefficients on all samples.

        Parameters
        ----------
        x : array of shape (n_samples, n_features)
        y : array of shape (n_samples, n_voxels)
        groups : array of shape (n_samples,), optional
            Run or session of each sample, for ``cv="kfold"``.
        progress : callable(done, total), optional
        """
        x_np = _check_matrix("features X", x)
        y_np = _check_matrix("responses Y", y)
        if x_np.shape[0] != y_np.shape[0]:
            raise EncodingInputError(
                f"features X have {x_np.shape[0]} rows but responses Y have {y_np.shape[0]}; "
                "give one row of responses per stimulus, in the same order"
            )
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or len(alphas) == 0 or not np.all(alphas > 0):
            raise EncodingInputError(
                f"alphas must be a non-empty list of positive numbers, not {self.alphas}"
            )
        if self.scoring not in ("r2", "neg_mse"):
            raise EncodingInputError(f"scoring {self.scoring!r} is unknown; use 'r2' or 'neg_mse'")
        if self.voxel_batch < 1:
            raise EncodingInputError(f"voxel_batch must be at least 1, not {self.voxel_batch}")
        n, p = x_np.shape
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype)
        x = _as_tensor(x_np, dtype, device)
        y = _as_tensor(y_np, dtype, device)
        alphas_t = torch.as_tensor(alphas, dtype=dtype, device=device)

        if isinstance(self.cv, str) and self.cv == "loo":
            if n < 3:
                raise EncodingInputError(f"leave-one-out needs at least 3 samples, not {n}")
            folds: list[Fold] = []
        elif isinstance(self.cv, str):
            if self.cv != "kfold":
                raise EncodingInputError(f"cv {self.cv!r} is unknown; use 'kfold', 'loo' or a list of folds")
            folds = group_folds(n, self.n_splits, groups)
        else:
            folds = [(np.asarray(tr, dtype=np.intp), np.asarray(te, dtype=np.intp)) for tr, te in self.cv]

        x_mean = x.mean(dim=0) if self.fit_intercept else torch.zeros(p, dtype=dtype, device=device)
        y_mean = y.mean(dim=0) if self.fit_intercept else torch.zeros(y.shape[1], dtype=dtype, device=device)
        full = _Eigenbasis.of(x - x_mean)
        batches = [
            slice(s, min(s + self.voxel_batch, y.shape[1])) for s in range(0, y.shape[1], self.voxel_batch)
        ]
        steps = (max(len(folds), 1) * (2 if self.keep_cv_predictions else 1) + 1) * len(batches)
        done = 0

        def tick() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, steps)

        if folds:
            scores = self._kfold_scores(x, y, folds, alphas_t, batches, tick)
        else:
            scores = self._loo_scores(full, y - y_mean, alphas_t, batches, tick)
        best = scores.argmax(dim=0)  # the first of equal scores, as scikit-learn and himalaya pick
        alpha_v = alphas_t[best]

        coef = torch.empty((p, y.shape[1]), dtype=dtype, device=device)
        for batch in batches:
            projected = full.z.T @ (y[:, batch] - y_mean[batch])  # (r, vb)
            coef[:, batch] = full.c @ (projected / (full.d[:, None] + alpha_v[None, batch]))
            tick()

        self.coef_ = coef.cpu().numpy()
        self.intercept_ = (y_mean - x_mean @ coef).cpu().numpy()
        self.alpha_ = alphas[best.cpu().numpy()]
        self.cv_scores_ = scores.cpu().numpy().astype(np.float64)
        self.best_score_ = self.cv_scores_[best.cpu().numpy(), np.arange(y.shape[1])]
        self.folds_ = folds
        self.solver_ = "dual" if full.dual else "primal"
        self.n_features_in_ = p
        self.cv_predictions_: npt.NDArray[np.floating] | None = None
        if self.keep_cv_predictions:
            self.cv_predictions_ = (
                self._cv_predictions(x, y, full, folds, alpha_v, batches, tick).cpu().numpy()
            )
        log.debug(
            "ridge: %d samples x %d features -> %d voxels, %s solver, %d folds",
            n,
            p,
            y.shape[1],
            self.solver_,
            len(folds),
        )
        return self

    def _centred_fold(
        self, x: torch.Tensor, fold: Fold
    ) -> tuple[_Eigenbasis, torch.Tensor, torch.Tensor, torch.Tensor]:
        train = torch.as_tensor(fold[0], device=x.device)
        test = torch.as_tensor(fold[1], device=x.device)
        xtr, xte = x[train], x[test]
        if self.fit_intercept:
            mean = xtr.mean(dim=0)
            xtr, xte = xtr - mean, xte - mean
        basis = _Eigenbasis.of(xtr)
        return basis, basis.test_projection(xte), train, test

    def _centred_targets(
        self, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor, batch: slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ytr, yte = y[train, batch], y[test, batch]
        if self.fit_intercept:
            mean = ytr.mean(dim=0)
            ytr, yte = ytr - mean, yte - mean
        return ytr, yte

    def _kfold_scores(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        folds: list[Fold],
        alphas: torch.Tensor,
        batches: list[slice],
        tick: Callable[[], None],
    ) -> torch.Tensor:
        scores = torch.zeros((len(alphas), y.shape[1]), dtype=x.dtype, device=x.device)
        for fold in folds:
            basis, a, train, test = self._centred_fold(x, fold)
            # (n_alphas, n_test, r): the test projection scaled for every penalty at once
            a_scaled = a.unsqueeze(0) / (basis.d[None, None, :] + alphas[:, None, None])
            for batch in batches:
                ytr, yte = self._centred_targets(y, train, test, batch)
                predictions = a_scaled @ (basis.z.T @ ytr)
                scores[:, batch] += _fold_scores(yte, predictions, self.scoring)
                tick()
        return scores / len(folds)

    def _loo_scores(
        self,
        full: _Eigenbasis,
        yc: torch.Tensor,
        alphas: torch.Tensor,
        batches: list[slice],
        tick: Callable[[], None],
    ) -> torch.Tensor:
        n = yc.shape[0]
        u = full.left_singular_vectors()  # (n, r)
        shrink = full.d[None, :] / (full.d[None, :] + alphas[:, None])  # (n_alphas, r)
        # Diagonal of the hat matrix; the unpenalized intercept adds 1/n.
        leverage = u.square() @ shrink.T + (1.0 / n if self.fit_intercept else 0.0)  # (n, n_alphas)
        scores = torch.empty((len(alphas), yc.shape[1]), dtype=yc.dtype, device=yc.device)
        for batch in batches:
            fitted = (u.unsqueeze(0) * shrink[:, None, :]) @ (u.T @ yc[:, batch])  # (n_alphas, n, vb)
            residuals = (yc[:, batch].unsqueeze(0) - fitted) / (1.0 - leverage.T)[:, :, None]
            scores[:, batch] = -residuals.square().mean(dim=1)
            tick()
        return scores

    def _cv_predictions(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        full: _Eigenbasis,
        folds: list[Fold],
        alpha_v: torch.Tensor,
        batches: list[slice],
        tick: Callable[[], None],
    ) -> torch.Tensor:
        predictions = torch.empty_like(y)
        if not folds:  # leave-one-out: y minus the leave-one-out residual
            y_mean = y.mean(dim=0) if self.fit_intercept else torch.zeros_like(y[0])
            u = full.left_singular_vectors()
            for batch in batches:
                yc = y[:, batch] - y_mean[batch]
                shrink = full.d[:, None] / (full.d[:, None] + alpha_v[None, batch])  # (r, vb)
                fitted = u @ (shrink * (u.T @ yc))
                leverage = u.square() @ shrink + (1.0 / len(y) if self.fit_intercept else 0.0)
                predictions[:, batch] = y[:, batch] - (yc - fitted) / (1.0 - leverage)
                tick()
            return predictions
        for fold in folds:
            basis, a, train, test = self._centred_fold(x, fold)
            for batch in batches:
                ytr, _ = self._centred_targets(y, train, test, batch)
                weights = (basis.z.T @ ytr) / (basis.d[:, None] + alpha_v[None, batch])
                offset = y[train, batch].mean(dim=0) if self.fit_intercept else 0.0
                predictions[test, batch] = a @ weights + offset
                tick()
        return predictions

    # -- using the fit ----------------------------------------------------------------------------

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.floating]:
        """Predicted responses, an array of shape (n_samples, n_voxels)."""
        if not hasattr(self, "coef_"):
            raise EncodingInputError("this RidgeCV is not fitted yet; call fit(x, y) first")
        x = _check_matrix("features X", x)
        if x.shape[1] != self.n_features_in_:
            raise EncodingInputError(
                f"features X have {x.shape[1]} columns; the model was fitted on {self.n_features_in_}"
            )
        result: npt.NDArray[np.floating] = x.astype(self.coef_.dtype) @ self.coef_ + self.intercept_
        return result
