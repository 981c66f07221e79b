"""Ridge against the field's references: scikit-learn's Ridge/RidgeCV and himalaya's RidgeCV."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.linear_model import Ridge
from sklearn.linear_model import RidgeCV as SkRidgeCV
from sklearn.model_selection import GridSearchCV

from stimulus import EncodingInputError
from stimulus.ridge import RidgeCV, group_folds

ALPHAS = np.logspace(-2, 5, 8)
RTOL = 1e-4

# (n_samples, n_features): the dual solver (n <= p) and the primal (p < n).
SHAPES = {"dual": (60, 150), "primal": (150, 30)}


def _data(
    rng: np.random.Generator, n: int, p: int, n_voxels: int = 12
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Features with a few dominant directions (as CNN features have) and an offset; voxels from
    barely to strongly predictable. The spread of the spectrum is what single precision finds hard."""
    mixing = rng.standard_normal((p, p)) / np.sqrt(p)
    dominant = rng.standard_normal((n, 3)) @ rng.standard_normal((3, p)) * 10
    x = rng.standard_normal((n, p)) @ (np.eye(p) + mixing) + dominant + 2.0
    w = rng.standard_normal((p, n_voxels)) / np.sqrt(p)
    noise = rng.standard_normal((n, n_voxels)) * np.geomspace(0.1, 10, n_voxels)
    return x, x @ w + noise + 5.0


def _relative(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_leave_one_out_matches_scikit_learn_ridgecv(rng: np.random.Generator, shape: str) -> None:
    x, y = _data(rng, *SHAPES[shape])
    ours = RidgeCV(ALPHAS, cv="loo", dtype="float64", keep_cv_predictions=True).fit(x, y)
    reference = SkRidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, y)

    assert ours.solver_ == shape
    np.testing.assert_array_equal(ours.alpha_, reference.alpha_)
    assert len(set(ours.alpha_)) > 1, "the data should make voxels choose different penalties"
    assert _relative(ours.coef_, reference.coef_.T) < RTOL
    assert _relative(ours.intercept_, reference.intercept_) < RTOL
    assert _relative(ours.predict(x), reference.predict(x)) < RTOL
    # The leave-one-out predictions are those of refits without each sample.
    assert ours.cv_predictions_ is not None
    for i in (0, 17):
        keep = np.arange(len(x)) != i
        refit = Ridge(alpha=ours.alpha_).fit(x[keep], y[keep])
        assert _relative(ours.cv_predictions_[i], refit.predict(x[i : i + 1])[0]) < 10 * RTOL


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_kfold_over_groups_matches_scikit_learn_grid_search(rng: np.random.Generator, shape: str) -> None:
    x, y = _data(rng, *SHAPES[shape])
    groups = np.repeat(np.arange(6), len(x) // 6)
    ours = RidgeCV(ALPHAS, n_splits=3, dtype="float64", keep_cv_predictions=True).fit(x, y, groups)
    folds = group_folds(len(x), 3, groups)

    for voxel in range(y.shape[1]):
        search = GridSearchCV(Ridge(), {"alpha": ALPHAS}, cv=folds, scoring="r2").fit(x, y[:, voxel])
        assert search.best_params_["alpha"] == ours.alpha_[voxel]
        np.testing.assert_allclose(
            ours.cv_scores_[:, voxel], search.cv_results_["mean_test_score"], rtol=RTOL
        )
    reference = Ridge(alpha=ours.alpha_).fit(x, y)
    assert _relative(ours.coef_, reference.coef_.T) < RTOL
    assert _relative(ours.intercept_, reference.intercept_) < RTOL
    assert ours.cv_predictions_ is not None
    for train, test in folds:
        fold_model = Ridge(alpha=ours.alpha_).fit(x[train], y[train])
        assert _relative(ours.cv_predictions_[test], fold_model.predict(x[test])) < RTOL


def test_kfold_matches_himalaya(rng: np.random.Generator) -> None:
    himalaya_ridge = pytest.importorskip("himalaya.ridge")
    from himalaya.scoring import r2_score

    x, y = _data(rng, 90, 40)
    folds = group_folds(len(x), 5)
    ours = RidgeCV(ALPHAS, cv=folds, dtype="float64").fit(x, y)
    reference = himalaya_ridge.RidgeCV(
        alphas=ALPHAS, cv=folds, fit_intercept=True, solver_params={"score_func": r2_score}
    ).fit(x, y)

    np.testing.assert_allclose(ours.alpha_, reference.best_alphas_, rtol=1e-12)
    assert _relative(ours.coef_, reference.coef_) < RTOL
    assert _relative(ours.intercept_, reference.intercept_) < RTOL
    np.testing.assert_allclose(ours.best_score_, reference.cv_scores_, rtol=RTOL)


@pytest.mark.parametrize("cv", ["loo", "kfold"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_float32_agrees_with_float64(rng: np.random.Generator, shape: str, cv: str) -> None:
    """The default single precision, away from the interpolating penalties where round-off decides."""
    x, y = _data(rng, *SHAPES[shape])
    alphas = np.logspace(0, 5, 6)
    single = RidgeCV(alphas, cv=cv, dtype="float32").fit(x, y)  # type: ignore[arg-type]
    double = RidgeCV(alphas, cv=cv, dtype="float64").fit(x, y)  # type: ignore[arg-type]
    np.testing.assert_array_equal(single.alpha_, double.alpha_)
    assert _relative(single.predict(x), double.predict(x)) < 1e-4


def test_voxel_batches_give_the_same_fit(rng: np.random.Generator) -> None:
    x, y = _data(rng, 60, 80, n_voxels=25)
    whole = RidgeCV(ALPHAS, dtype="float64").fit(x, y)
    batched = RidgeCV(ALPHAS, dtype="float64", voxel_batch=4).fit(x, y)
    np.testing.assert_array_equal(whole.alpha_, batched.alpha_)
    np.testing.assert_allclose(whole.coef_, batched.coef_, rtol=1e-10, atol=1e-12)


def test_group_folds_never_split_a_group() -> None:
    groups = np.array([3, 3, 1, 1, 1, 7, 7, 2, 2, 2, 9, 9])
    folds = group_folds(len(groups), 3, groups)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(groups)))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    # Groups are kept in order of appearance: the first fold tests the first runs.
    assert set(groups[folds[0][1]]) == {3, 1}


def test_too_few_groups_for_the_folds_says_what_to_change() -> None:
    with pytest.raises(EncodingInputError, match=r"2 groups .* too few for 5 folds.* at most 2 folds"):
        group_folds(10, 5, [0] * 5 + [1] * 5)
    with pytest.raises(EncodingInputError, match=r"6 samples are too few for 5 folds"):
        RidgeCV().fit(np.ones((6, 3)), np.ones((6, 2)))


def test_bad_inputs_are_named(rng: np.random.Generator) -> None:
    x, y = _data(rng, 30, 10)
    holed = y.copy()
    holed[4, 2] = np.nan
    with pytest.raises(EncodingInputError, match=r"responses Y has 1 NaN .*first: 4"):
        RidgeCV().fit(x, holed)
    with pytest.raises(EncodingInputError, match=r"features X have 30 rows but responses Y have 29"):
        RidgeCV().fit(x, y[:29])
    with pytest.raises(EncodingInputError, match=r"reshape"):
        RidgeCV().fit(x, y[:, 0])
