"""The encoding model: images in, every voxel's predicted response out.

A frozen backbone's layers, each reduced to a feature budget and
standardized (:mod:`stimulus.features`), feed one ridge model per voxel with
its own cross-validated penalty (:mod:`stimulus.ridge`). Fitting also gives
what a lab reads to trust the model: out-of-fold correlations and R^2 per
voxel, a permutation test with FDR selection, and per-layer models whose
scores form each voxel's "fingerprint" (which layer explains it best).

The fitted model is a differentiable torch module (:meth:`EncodingModel.module`)
so that synthesis can push gradients from predicted responses back to pixels,
and saves to one file (:meth:`EncodingModel.save`) that carries everything
needed to use it and is checked against the installed backbone when loaded.

A model can be fitted from a prior (:meth:`EncodingModel.fit` with
``prior=``): an earlier model of the same voxels, such as one fitted on an
earlier session or averaged over other subjects (:mod:`stimulus.transfer`).
The ridge then shrinks towards the prior's weights instead of towards zero:
it fits what the prior leaves unexplained, and its cross-validated penalty
decides how far the new data move the model. With few new images, or a
prior that already predicts them, the model stays near the prior.

Two designs are supported: one response per image (trial betas, the default)
and a time series (:meth:`EncodingModel.fit_timeseries`: frame features
averaged per TR and lagged, for block and movie runs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from db.base import ConfigError, write_atomic
from stimulus._torch import DtypeName, resolve_device
from stimulus.backbones import BACKBONES, Backbone, BackboneSpec, backbone_from_factory, load_backbone
from stimulus.errors import (
    BackboneError,
    BackboneMismatchError,
    EncodingInputError,
    ModelFileError,
    ModelWriteError,
)
from stimulus.features import FeatureExtractor, ReductionConfig, extract_features
from stimulus.images import load_images
from stimulus.names import CvKind
from stimulus.ridge import DEFAULT_ALPHAS, RidgeCV, group_folds
from stimulus.scores import (
    NoiseCeiling,
    average_repeats,
    fdr_select,
    fingerprint_voxels,
    noise_ceiling,
    normalized_accuracy,
    pearson_r,
    permutation_p_values,
    r2_score,
    roi_fingerprints,
)
from stimulus.temporal import DEFAULT_LAGS_S, features_per_tr, lag_features, repeated_run_ceiling

__all__ = [
    "EncodingConfig",
    "EncodingModel",
    "EncodingModule",
    "EncodingScores",
    "TimeSeriesRun",
    "TimeSeriesScores",
    "describe_features",
    "feature_space",
]

log = logging.getLogger(__name__)

FORMAT = "cortexloop.encoding-model"
FORMAT_VERSION = 1

Images = npt.ArrayLike | torch.Tensor | Sequence[str | Path]
Progress = Callable[[str, int, int], None]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class EncodingConfig:
    """What to fit: backbone, layers, reduction and ridge settings.

    ``layers`` empty means the backbone's default layers. ``cv="kfold"``
    splits over ``groups`` (runs or sessions) into ``n_splits`` folds;
    ``cv="loo"`` is exact leave-one-out for independent trial responses.
    ``layerwise`` also fits one model per layer for the fingerprints.
    """

    backbone: str = "efficientnet-lite0"
    layers: tuple[str, ...] = ()
    image_size: int = 128
    reduction: ReductionConfig = field(default_factory=ReductionConfig)
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    cv: CvKind = "kfold"
    n_splits: int = 5
    layerwise: bool = True
    n_permutations: int = 1000
    fdr_q: float = 0.05
    batch_size: int = 32
    dtype: DtypeName = "float32"
    voxel_batch: int = 4096

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small; use 16 pixels or more")
        if self.cv not in ("kfold", "loo"):
            raise ConfigError(f"cv {self.cv!r} is unknown; use 'kfold' or 'loo'")
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be at least 2, not {self.n_splits}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ConfigError(f"alphas must be positive numbers, not {self.alphas}")
        if not 0 < self.fdr_q < 1:
            raise ConfigError(f"fdr_q must be between 0 and 1, not {self.fdr_q}")
        if self.batch_size < 1 or self.voxel_batch < 1 or self.n_permutations < 1:
            raise ConfigError("batch_size, voxel_batch and n_permutations must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncodingConfig:
        values = dict(values)
        reduction = ReductionConfig(**values.pop("reduction"))
        for key in ("layers", "alphas"):
            values[key] = tuple(values[key])
        return cls(reduction=reduction, **values)


@dataclass(frozen=True)
class TimeSeriesRun:
    """One block or movie run for :meth:`EncodingModel.fit_timeseries`.

    Attributes
    ----------
    images : array of shape (n_frames, 3, H, W) on 0..1, or image paths
    onsets_s : array of shape (n_frames,)
        When each frame appeared, in seconds from the run's first trigger.
    responses : array of shape (n_trs, n_voxels), optional for prediction
    n_trs : int, optional
        Defaults to the number of response rows.
    """

    images: Images
    onsets_s: npt.ArrayLike
    responses: npt.ArrayLike | None = None
    n_trs: int | None = None


@dataclass(frozen=True)
class EncodingScores:
    """A model scored on measured responses.

    Attributes
    ----------
    r, r2 : ndarray of shape (n_voxels,)
    ceiling : NoiseCeiling or None
        When stimuli were repeated.
    normalized : ndarray of shape (n_voxels,) or None
        ``100 r^2 / NC`` per voxel.
    by_roi : dict of ROI name to dict of median values
    n_stimuli : int
    """

    r: FloatArray
    r2: FloatArray
    ceiling: NoiseCeiling | None
    normalized: FloatArray | None
    by_roi: dict[str, dict[str, float]]
    n_stimuli: int

    @property
    def overall_normalized(self) -> float | None:
        """The median of ``normalized`` over all voxels: paper 003's accuracy (its eq. 4), or None."""
        return None if self.normalized is None else float(np.nanmedian(self.normalized))


@dataclass(frozen=True)
class TimeSeriesScores:
    """A time-series model scored on held-out runs, TR by TR.

    Attributes
    ----------
    scores : EncodingScores
        Per voxel and ROI, over the scored TRs (``n_stimuli`` counts TRs).
    stimuli : tuple of str
        The stimulus of each scored TR (runs that repeat one are averaged).
    trs : ndarray of shape (n_trs,)
        Each scored TR's index within its run.
    n_runs : ndarray of shape (n_trs,)
        Runs averaged into each scored TR.
    measured, predicted : ndarray of shape (n_trs, n_voxels)
    """

    scores: EncodingScores
    stimuli: tuple[str, ...]
    trs: npt.NDArray[np.int64]
    n_runs: npt.NDArray[np.int64]
    measured: FloatArray
    predicted: FloatArray


class EncodingModule(nn.Module):
    """The fitted model as a torch module: images (n, 3, H, W) on 0..1 -> responses (n, n_voxels).

    Differentiable with respect to the images; the backbone and the
    coefficients are frozen.
    """

    coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, extractor: FeatureExtractor, coef: torch.Tensor, intercept: torch.Tensor) -> None:
        super().__init__()
        self.extractor = extractor
        self.register_buffer("coef", coef)
        self.register_buffer("intercept", intercept)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.cat(self.extractor(images), dim=1)
        return features @ self.coef + self.intercept


def _as_pixels(images: Images, size: int) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        return images.detach().float()
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, Path)):
        return torch.from_numpy(load_images([Path(str(p)) for p in images], size))
    array = np.asarray(images, dtype=np.float32)
    if array.ndim != 4 or array.shape[1] != 3:
        raise EncodingInputError(
            f"images have shape {array.shape}; expected (n, 3, height, width) on 0..1 or a list of files"
        )
    return torch.from_numpy(array)


def _responses(values: npt.ArrayLike, n_rows: int, what: str) -> npt.NDArray[np.float32]:
    responses = np.asarray(values, dtype=np.float64)
    if responses.ndim != 2:
        raise EncodingInputError(f"responses have {responses.ndim} dimension(s); expected ({what}, voxels)")
    if responses.shape[0] != n_rows:
        raise EncodingInputError(
            f"there are {n_rows} {what} but {responses.shape[0]} rows of responses; "
            f"give one row per {what[:-1]}"
        )
    bad = ~np.isfinite(responses)
    if bad.any():
        voxels = np.flatnonzero(bad.any(axis=0))
        raise EncodingInputError(
            f"responses have {int(bad.sum())} NaN or infinite value(s) in {len(voxels)} voxel(s) "
            f"(first: column {voxels[0]}); drop those voxels or impute them before fitting"
        )
    return responses.astype(np.float32)


def _stage(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    """A (done, total) callback that reports under one stage name."""
    if progress is None:
        return None
    return lambda done, total: progress(name, done, total)


def _package_version(package: str | None) -> str | None:
    if package is None:
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class EncodingModel:
    """A CNN encoding model of many voxels.

    Parameters
    ----------
    config : EncodingConfig
    device : str or torch.device, optional
        Where features are extracted and ridge solved; the GPU when present.
    backbone : BackboneSpec, optional
        A backbone that is not in the registry (``config.backbone`` is then
        only its recorded name).

    Attributes (after fitting)
    --------------------------
    coef_ : ndarray of shape (n_features, n_voxels)
    intercept_, alpha_ : ndarray of shape (n_voxels,)
    cv_r_, cv_r2_ : ndarray of shape (n_voxels,)
        Out-of-fold correlation and R^2 of the all-layer model.
    layer_scores_ : ndarray of shape (n_layers, n_voxels)
        Out-of-fold R^2 of one model per layer (the fingerprints), or empty.
    best_layer_ : ndarray of shape (n_voxels,) of int, or empty
    p_values_ : ndarray of shape (n_voxels,)
    selected_ : ndarray of shape (n_voxels,) of bool
        Voxels predicted better than chance at ``config.fdr_q``.
    roi_labels_ : ndarray of shape (n_voxels,) of str
    voxel_indices_ : ndarray of shape (n_voxels,) of int
    lags_s_ : tuple of float
        Empty for per-image models; the lags of a time-series model.
    file_sha256_ : str or None
        SHA-256 of the model file last saved or loaded, to record with what it made.
    """

    def __init__(
        self,
        config: EncodingConfig | None = None,
        *,
        device: str | torch.device | None = None,
        backbone: BackboneSpec | None = None,
    ) -> None:
        self.config = config or EncodingConfig()
        self.device = resolve_device(device)
        self._spec = backbone
        self._backbone: Backbone | None = None
        self._extractor: FeatureExtractor | None = None
        self.lags_s_: tuple[float, ...] = ()
        self.tr_s_: float | None = None
        self.fit_info_: dict[str, Any] = {}
        self.file_sha256_: str | None = None  # of the file last saved or loaded

    # -- pieces -----------------------------------------------------------------------------------

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self._spec or self.config.backbone, device=self.device)
        return self._backbone

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            layers = self.config.layers or self.backbone.spec.default_layers
            if not layers:
                raise EncodingInputError(
                    f"backbone {self.backbone.name} has no default layers; name the layers to read"
                )
            self._extractor = FeatureExtractor(
                self.backbone, layers, self.config.image_size, self.config.reduction
            )
        return self._extractor

    @property
    def layers(self) -> tuple[str, ...]:
        return self.extractor.layers

    @property
    def n_voxels(self) -> int:
        self._check_fitted()
        return int(self.coef_.shape[1])

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise EncodingInputError("this encoding model is not fitted yet; call fit() or load a model file")

    def _ridge(self, *, keep_predictions: bool) -> RidgeCV:
        c = self.config
        return RidgeCV(
            c.alphas,
            cv=c.cv,
            n_splits=c.n_splits,
            device=self.device,
            dtype=c.dtype,
            voxel_batch=c.voxel_batch,
            keep_cv_predictions=keep_predictions,
        )

    def _raw_layer_features(self, images: Images, progress: Progress | None) -> list[npt.NDArray[np.float32]]:
        pixels = _as_pixels(images, self.config.image_size)
        return extract_features(
            self.extractor,
            pixels,
            batch_size=self.config.batch_size,
            standardized=False,
            progress=_stage(progress, "features"),
        )

    def _standardize_from(self, raw: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        """Store each layer's training statistics in the extractor and apply them."""
        out = []
        for reduction, values in zip(self.extractor.reductions, raw, strict=True):
            if self.config.reduction.standardize:
                reduction.set_statistics(values.mean(axis=0), values.std(axis=0))
                mean = reduction.mean.numpy()
                scale = reduction.scale.numpy()
                out.append(((values - mean) / scale).astype(np.float32))
            else:
                out.append(values)
        return out

    # -- fitting ----------------------------------------------------------------------------------

    def fit(
        self,
        images: Images,
        responses: npt.ArrayLike,
        *,
        groups: npt.ArrayLike | None = None,
        roi_labels: Sequence[str] | None = None,
        voxel_indices: npt.ArrayLike | None = None,
        prior: EncodingModel | None = None,
        progress: Progress | None = None,
    ) -> EncodingModel:
        """Fit on one response per image.

        Parameters
        ----------
        images : array of shape (n_images, 3, H, W) on 0..1, or image paths
        responses : array of shape (n_images, n_voxels)
            Trial responses (betas), averaged over repeats of an image.
        groups : array of shape (n_images,), optional
            Run or session of each image, for K-fold cross-validation.
        roi_labels : sequence of str of shape (n_voxels,), optional
        voxel_indices : array of shape (n_voxels,), optional
            Where each voxel lies in the run's volume (flat index), kept in the model.
        prior : EncodingModel, optional
            A model of the same voxels in the same feature space: the fit
            keeps its feature statistics and shrinks towards its weights.
        progress : callable(stage, done, total), optional
        """
        started = time.perf_counter()
        n_images = len(images)  # type: ignore[arg-type]
        y = _responses(responses, n_images, "images")
        if self.config.cv == "kfold":  # refuse impossible folds before the slow feature pass
            group_folds(n_images, self.config.n_splits, groups)
        if prior is not None:
            self._check_prior(prior, y.shape[1])
        pixels = _as_pixels(images, self.config.image_size)
        self._set_voxels(y.shape[1], roi_labels, voxel_indices)
        raw = self._raw_layer_features(pixels, progress)
        if prior is None:
            self._fit_design(self._standardize_from(raw), y, groups, progress)
        else:
            self._fit_from_prior(raw, y, groups, prior, progress)
        self.lags_s_, self.tr_s_ = (), None
        self.fit_info_ = self._fit_info(len(pixels), started)
        return self

    def fit_timeseries(
        self,
        runs: Sequence[TimeSeriesRun],
        *,
        tr_s: float,
        lags_s: Sequence[float] = DEFAULT_LAGS_S,
        roi_labels: Sequence[str] | None = None,
        voxel_indices: npt.ArrayLike | None = None,
        progress: Progress | None = None,
    ) -> EncodingModel:
        """Fit on block or movie runs: frame features averaged per TR and lagged.

        Cross-validation is over runs (``config.cv`` must be ``"kfold"``),
        never inside one, since neighbouring TRs are not independent.
        """
        if self.config.cv != "kfold":
            raise EncodingInputError("a time-series model is cross-validated over runs; use cv='kfold'")
        if not runs or any(run.responses is None for run in runs):
            raise EncodingInputError("fit_timeseries needs at least one run, each with its responses")
        started = time.perf_counter()
        frames = [_as_pixels(run.images, self.config.image_size) for run in runs]
        responses = [_responses(run.responses, len(run.responses), "TRs") for run in runs]  # type: ignore[arg-type]
        n_voxels = {r.shape[1] for r in responses}
        if len(n_voxels) != 1:
            raise EncodingInputError(f"runs have different numbers of voxels: {sorted(n_voxels)}")
        self._set_voxels(n_voxels.pop(), roi_labels, voxel_indices)
        raw = self._raw_layer_features(torch.cat(frames), progress)
        layers = self._standardize_from(raw)
        self.lags_s_, self.tr_s_ = tuple(float(x) for x in lags_s), float(tr_s)
        designs, run_labels, start = [], [], 0
        for k, (run, y_run, f) in enumerate(zip(runs, responses, frames, strict=True)):
            per_layer = [values[start : start + len(f)] for values in layers]
            designs.append(self._lagged(per_layer, run, len(y_run)))
            run_labels.append(np.full(len(y_run), k))
            start += len(f)
        stacked = [np.concatenate([d[j] for d in designs]) for j in range(len(layers))]
        self._fit_design(stacked, np.concatenate(responses), np.concatenate(run_labels), progress)
        self.fit_info_ = self._fit_info(sum(len(f) for f in frames), started)
        return self

    def _lagged(
        self, per_layer: list[npt.NDArray[np.float32]], run: TimeSeriesRun, n_trs: int
    ) -> list[npt.NDArray[np.float32]]:
        onsets = np.asarray(run.onsets_s, dtype=np.float64)
        assert self.tr_s_ is not None
        return [
            lag_features(
                features_per_tr(values, onsets, n_trs=n_trs, tr_s=self.tr_s_),
                tr_s=self.tr_s_,
                lags_s=self.lags_s_,
            ).astype(np.float32)
            for values in per_layer
        ]

    def _set_voxels(
        self, n_voxels: int, roi_labels: Sequence[str] | None, voxel_indices: npt.ArrayLike | None
    ) -> None:
        labels = np.asarray(["all"] * n_voxels if roi_labels is None else [str(x) for x in roi_labels])
        if labels.shape != (n_voxels,):
            raise EncodingInputError(
                f"{len(labels)} ROI labels were given for {n_voxels} voxels; give one per voxel"
            )
        indices = np.arange(n_voxels) if voxel_indices is None else np.asarray(voxel_indices, dtype=np.int64)
        if indices.shape != (n_voxels,):
            raise EncodingInputError(
                f"{len(indices)} voxel indices were given for {n_voxels} voxels; give one per voxel"
            )
        self.roi_labels_ = labels
        self.voxel_indices_ = indices

    def _fit_design(
        self,
        layers: list[npt.NDArray[np.float32]],
        y: npt.NDArray[np.float32],
        groups: npt.ArrayLike | None,
        progress: Progress | None,
        *,
        offset: npt.NDArray[np.float32] | None = None,
    ) -> None:
        """Fit the ridge on ``layers``; with ``offset`` (a prior's prediction) on what it leaves of ``y``.

        The coefficients are then the residual's; the scores are of ``offset`` plus it.
        """
        n_layers = len(layers)
        layer_scores = []
        if self.config.layerwise and n_layers > 1:
            for j, (name, values) in enumerate(zip(self.layers, layers, strict=True)):
                stage = _stage(progress, f"layer {j + 1}/{n_layers} {name}")
                ridge = self._ridge(keep_predictions=True).fit(values, y, groups, progress=stage)
                assert ridge.cv_predictions_ is not None
                layer_scores.append(r2_score(y, ridge.cv_predictions_))
        stage = _stage(progress, "all layers")
        target = y if offset is None else y - offset
        ridge = self._ridge(keep_predictions=True).fit(
            np.concatenate(layers, axis=1), target, groups, progress=stage
        )
        assert ridge.cv_predictions_ is not None
        predictions = ridge.cv_predictions_ if offset is None else ridge.cv_predictions_ + offset
        self.coef_ = ridge.coef_.astype(np.float32)
        self.intercept_ = ridge.intercept_.astype(np.float32)
        self.alpha_ = ridge.alpha_
        self.cv_r_ = pearson_r(y, predictions)
        self.cv_r2_ = r2_score(y, predictions)
        self.layer_scores_ = np.array(layer_scores) if layer_scores else np.zeros((0, y.shape[1]))
        self.best_layer_ = self.layer_scores_.argmax(axis=0) if layer_scores else np.zeros(0, dtype=np.int64)
        if progress:
            progress("permutation test", 0, 1)
        self.p_values_ = permutation_p_values(y, predictions, n_permutations=self.config.n_permutations)
        self.selected_ = fdr_select(self.p_values_, self.config.fdr_q)
        if progress:
            progress("permutation test", 1, 1)
        self._solver = ridge.solver_

    def _check_prior(self, prior: EncodingModel, n_voxels: int) -> None:
        prior._check_fitted()
        if prior.lags_s_:
            raise EncodingInputError("a time-series model cannot be the prior of a per-image model")
        if prior.n_voxels != n_voxels:
            raise EncodingInputError(
                f"the prior has {prior.n_voxels} voxels and the responses {n_voxels}; a prior must model "
                "the same voxels (express it on them first: stimulus.transfer.on_voxels)"
            )
        mine, theirs = feature_space(self), feature_space(prior)
        if mine != theirs:
            raise EncodingInputError(
                f"the prior reads other features ({describe_features(prior)}) than this model "
                f"({describe_features(self)}); fit with the features the prior reads"
            )

    def _fit_from_prior(
        self,
        raw: list[npt.NDArray[np.float32]],
        y: npt.NDArray[np.float32],
        groups: npt.ArrayLike | None,
        prior: EncodingModel,
        progress: Progress | None,
    ) -> None:
        """Ridge towards the prior's weights: fit the residual of its prediction, then add it back."""
        layers = []
        for mine, theirs, values in zip(
            self.extractor.reductions, prior.extractor.reductions, raw, strict=True
        ):
            mine.mean.copy_(theirs.mean)
            mine.scale.copy_(theirs.scale)
            if self.config.reduction.standardize:
                values = (values - theirs.mean.cpu().numpy()) / theirs.scale.cpu().numpy()
            layers.append(values.astype(np.float32))
        offset = (np.concatenate(layers, axis=1) @ prior.coef_ + prior.intercept_).astype(np.float32)
        self._fit_design(layers, y, groups, progress, offset=offset)
        self.coef_ = (self.coef_ + prior.coef_).astype(np.float32)
        self.intercept_ = (self.intercept_ + prior.intercept_).astype(np.float32)

    def _fit_info(self, n_images: int, started: float) -> dict[str, Any]:
        return {
            "n_training_images": n_images,
            "n_voxels": int(self.coef_.shape[1]),
            "fit_seconds": round(time.perf_counter() - started, 3),
            "fitted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "solver": self._solver,
            "device": str(self.device),
        }

    # -- using the model --------------------------------------------------------------------------

    def module(self, voxels: npt.ArrayLike | None = None) -> EncodingModule:
        """The model as a differentiable torch module, optionally for some voxels only.

        For a time-series model the coefficients of all lags are summed: the
        module gives the steady-state response to an image held on screen.
        """
        self._check_fitted()
        coef = torch.from_numpy(self._image_coef())
        intercept = torch.from_numpy(self.intercept_.copy())
        if voxels is not None:
            chosen = torch.as_tensor(np.asarray(voxels))
            coef, intercept = coef[:, chosen], intercept[chosen]
        return EncodingModule(self.extractor, coef.to(self.device), intercept.to(self.device))

    def _image_coef(self) -> npt.NDArray[np.float32]:
        if not self.lags_s_:
            return self.coef_
        n_lags = len(self.lags_s_)
        blocks, start = [], 0
        for width in self.extractor.out_features:
            block = self.coef_[start : start + width * n_lags]
            blocks.append(block.reshape(n_lags, width, -1).sum(axis=0))
            start += width * n_lags
        result: npt.NDArray[np.float32] = np.concatenate(blocks).astype(np.float32)
        return result

    def feature_statistics(self) -> tuple[FloatArray, FloatArray]:
        """(mean, scale) of all layers' features side by side: :meth:`features` are (raw - mean) / scale."""
        reductions = self.extractor.reductions
        return (
            np.concatenate([r.mean.cpu().numpy() for r in reductions]).astype(np.float64),
            np.concatenate([r.scale.cpu().numpy() for r in reductions]).astype(np.float64),
        )

    def features(self, images: Images) -> npt.NDArray[np.float32]:
        """Standardized features of all layers side by side, shape (n_images, n_features)."""
        pixels = _as_pixels(images, self.config.image_size)
        return np.concatenate(
            extract_features(self.extractor, pixels, batch_size=self.config.batch_size), axis=1
        )

    def predict(self, images: Images) -> npt.NDArray[np.float32]:
        """Predicted responses, shape (n_images, n_voxels) (steady state for a time-series model)."""
        self._check_fitted()
        result: npt.NDArray[np.float32] = self.features(images) @ self._image_coef() + self.intercept_
        return result

    def predict_timeseries(self, run: TimeSeriesRun) -> npt.NDArray[np.float32]:
        """Predicted responses of a time-series model for one run, shape (n_trs, n_voxels)."""
        self._check_fitted()
        if not self.lags_s_:
            raise EncodingInputError("this model was fitted on one response per image; use predict()")
        n_trs = run.n_trs or (len(run.responses) if run.responses is not None else 0)  # type: ignore[arg-type]
        if n_trs < 1:
            raise EncodingInputError("give the run's n_trs (or its responses) to predict its time series")
        pixels = _as_pixels(run.images, self.config.image_size)
        per_layer = extract_features(self.extractor, pixels, batch_size=self.config.batch_size)
        design = np.concatenate(self._lagged(per_layer, run, n_trs), axis=1)
        result: npt.NDArray[np.float32] = design @ self.coef_ + self.intercept_
        return result

    def score(
        self,
        images: Images,
        responses: npt.ArrayLike,
        *,
        stimulus_ids: Sequence[object] | npt.ArrayLike | None = None,
        given_ceiling: npt.ArrayLike | None = None,
    ) -> EncodingScores:
        """Score predictions against measured responses.

        With ``stimulus_ids`` (one per row of ``responses``), repeated
        presentations are averaged before scoring and give the noise ceiling;
        ``images`` then has one entry per row as well. ``given_ceiling``: the
        noise ceiling a dataset provides instead, in percent per voxel.
        """
        self._check_fitted()
        pixels = _as_pixels(images, self.config.image_size)
        y = _responses(responses, len(pixels), "images").astype(np.float64)
        if y.shape[1] != self.n_voxels:
            raise EncodingInputError(
                f"responses have {y.shape[1]} voxels; the model predicts {self.n_voxels}"
            )
        ceiling = None
        if stimulus_ids is not None:
            repeats = average_repeats(y, stimulus_ids)
            if repeats.counts.max() > 1:
                ceiling = noise_ceiling(y, stimulus_ids, n_averaged=repeats.n_averaged)
                y = repeats.averaged
                pixels = pixels[torch.as_tensor(repeats.first)]
        if given_ceiling is not None:
            ceiling = self._given_ceiling(given_ceiling)
        return self._scored(y, self.predict(pixels).astype(np.float64), ceiling)

    def score_timeseries(
        self,
        runs: Sequence[TimeSeriesRun],
        *,
        stimuli: Sequence[str] | None = None,
        given_ceiling: npt.ArrayLike | None = None,
    ) -> TimeSeriesScores:
        """Score a time-series model on held-out runs, TR by TR.

        Runs that show the same stimulus (``stimuli``: what each run showed;
        by default every run its own) are averaged TR by TR before scoring, as
        paper 001 averaged its ten repeats of the test blocks, and give the
        noise ceiling (:func:`stimulus.temporal.repeated_run_ceiling`).
        ``given_ceiling``: the one a dataset provides instead, in percent per voxel.
        """
        self._check_fitted()
        if not self.lags_s_:
            raise EncodingInputError("this model was fitted on one response per image; use score()")
        labels = [f"run {k + 1}" for k in range(len(runs))] if stimuli is None else [str(s) for s in stimuli]
        if len(labels) != len(runs) or not runs:
            raise EncodingInputError(
                f"{len(labels)} stimuli were given for {len(runs)} runs; give one per run"
            )
        if any(run.responses is None for run in runs):
            raise EncodingInputError("every run to score needs its responses")
        measured = [_responses(run.responses, len(run.responses), "TRs") for run in runs]  # type: ignore[arg-type]
        for values in measured:
            if values.shape[1] != self.n_voxels:
                raise EncodingInputError(
                    f"responses have {values.shape[1]} voxels; the model predicts {self.n_voxels}"
                )
        members: dict[str, list[int]] = {}
        for k, label in enumerate(labels):
            members.setdefault(label, []).append(k)
        ceiling = None
        if any(len(group) > 1 for group in members.values()):
            ceiling = repeated_run_ceiling(measured, labels)
        if given_ceiling is not None:
            ceiling = self._given_ceiling(given_ceiling)
        averaged, predicted, tr_stimuli, trs, n_runs = [], [], [], [], []
        for label, group in members.items():
            first = runs[group[0]]
            for k in group[1:]:
                if not np.allclose(np.asarray(runs[k].onsets_s), np.asarray(first.onsets_s)):
                    raise EncodingInputError(
                        f"runs of stimulus {label!r} show their frames at different times; runs that "
                        "repeat a stimulus must show the same frames at the same onsets"
                    )
            averaged.append(np.mean([measured[k] for k in group], axis=0))
            predicted.append(self.predict_timeseries(first))
            tr_stimuli.extend([label] * len(averaged[-1]))
            trs.append(np.arange(len(averaged[-1])))
            n_runs.extend([len(group)] * len(averaged[-1]))
        y, y_hat = np.concatenate(averaged).astype(np.float64), np.concatenate(predicted).astype(np.float64)
        return TimeSeriesScores(
            scores=self._scored(y, y_hat, ceiling),
            stimuli=tuple(tr_stimuli),
            trs=np.concatenate(trs),
            n_runs=np.asarray(n_runs),
            measured=y,
            predicted=y_hat,
        )

    def _given_ceiling(self, percent: npt.ArrayLike) -> NoiseCeiling:
        try:
            ceiling = NoiseCeiling.given(percent)
        except ValueError as exc:
            raise EncodingInputError(str(exc)) from None
        if len(ceiling.percent) != self.n_voxels:
            raise EncodingInputError(
                f"the noise ceiling has {len(ceiling.percent)} values; "
                f"the model predicts {self.n_voxels} voxels"
            )
        return ceiling

    def _scored(self, y: FloatArray, predicted: FloatArray, ceiling: NoiseCeiling | None) -> EncodingScores:
        r, r2 = pearson_r(y, predicted), r2_score(y, predicted)
        normalized = normalized_accuracy(r, ceiling) if ceiling is not None else None
        by_roi: dict[str, dict[str, float]] = {}
        for roi in dict.fromkeys(self.roi_labels_.tolist()):
            members = self.roi_labels_ == roi
            summary = {
                "n_voxels": float(members.sum()),
                "median_r": float(np.median(r[members])),
                "median_r2": float(np.median(r2[members])),
            }
            if normalized is not None:
                summary["median_normalized_accuracy"] = float(np.nanmedian(normalized[members]))
            by_roi[str(roi)] = summary
        return EncodingScores(
            r=r, r2=r2, ceiling=ceiling, normalized=normalized, by_roi=by_roi, n_stimuli=len(y)
        )

    def fingerprints(self, top: float | None = None) -> dict[str, FloatArray]:
        """Mean layer scores of each ROI's voxels, normalized by their maximum.

        The voxels are those selected above chance, or with ``top`` the fraction of
        each ROI's voxels best predicted (cross-validated r): paper 001 took 0.25.
        """
        self._check_fitted()
        if len(self.layer_scores_) == 0:
            raise EncodingInputError("this model was fitted without layer-wise models (layerwise=False)")
        return roi_fingerprints(self.layer_scores_, self.roi_labels_.tolist(), **self._fingerprinted(top))

    def fingerprint_voxels(self, top: float | None = None) -> dict[str, npt.NDArray[np.int64]]:
        """The voxels each ROI's fingerprint averages (:meth:`fingerprints`), by ROI."""
        self._check_fitted()
        return fingerprint_voxels(self.roi_labels_.tolist(), **self._fingerprinted(top))

    def _fingerprinted(self, top: float | None) -> dict[str, Any]:
        if top is None:
            return {"selected": self.selected_}
        return {"accuracy": self.cv_r_, "top": top}

    # -- files ------------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        backbone = self.backbone
        return {
            "config": {**self.config.to_dict(), "layers": list(self.layers)},
            "backbone": {
                "name": backbone.name,
                "weights_sha256": backbone.weights_sha256,
                "weights_path": str(backbone.weights_path),
                "factory": backbone.spec.factory,
                "package": backbone.spec.package,
                "package_version": _package_version(backbone.spec.package),
                "mean": list(backbone.spec.mean),
                "std": list(backbone.spec.std),
            },
            # A list, not a dict: the metadata is written with sorted keys and layer order matters.
            "layers": [[name, list(self.extractor.layer_shapes[name])] for name in self.layers],
            "out_features": list(self.extractor.out_features),
            "lags_s": list(self.lags_s_),
            "tr_s": self.tr_s_,
            "roi_names": sorted(set(self.roi_labels_.tolist())),
            "fit": self.fit_info_,
            "versions": {
                "cortexloop": _package_version("cortexloop"),
                "torch": torch.__version__,
            },
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        names = sorted(set(self.roi_labels_.tolist()))
        codes = np.searchsorted(np.asarray(names), self.roi_labels_)
        tensors = {
            "coef": torch.from_numpy(self.coef_),
            "intercept": torch.from_numpy(self.intercept_),
            "alpha": torch.from_numpy(np.asarray(self.alpha_, dtype=np.float64)),
            "cv_r": torch.from_numpy(self.cv_r_),
            "cv_r2": torch.from_numpy(self.cv_r2_),
            "layer_scores": torch.from_numpy(np.asarray(self.layer_scores_, dtype=np.float64)),
            "p_values": torch.from_numpy(self.p_values_),
            "selected": torch.from_numpy(self.selected_),
            "roi_codes": torch.from_numpy(codes.astype(np.int64)),
            "voxel_indices": torch.from_numpy(self.voxel_indices_),
        }
        for j, reduction in enumerate(self.extractor.reductions):
            tensors[f"layer{j}.mean"] = reduction.mean.detach().cpu()
            tensors[f"layer{j}.scale"] = reduction.scale.detach().cpu()
        return tensors

    def save(self, path: str | Path) -> str:
        """Write the model to one file, atomically; returns the file's SHA-256.

        The file holds the configuration, the backbone's identity (name and
        weights hash), the layers and their shapes, the feature statistics,
        the coefficients, penalties, voxel indices, ROI labels and scores,
        and a SHA-256 of all of it that :meth:`load` checks.
        """
        self._check_fitted()
        path = Path(path)
        meta_json = json.dumps(self._metadata(), sort_keys=True)
        tensors = {k: v.contiguous() for k, v in self._tensors().items()}
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": meta_json,
            "tensors": tensors,
            "payload_sha256": _payload_digest(meta_json, tensors),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        try:
            write_atomic(path, data)
        except OSError as exc:
            raise ModelWriteError(
                f"cannot write model file {path}: {exc.strerror or exc}; free space or choose another path "
                "(any earlier file at that path is untouched)"
            ) from exc
        digest = hashlib.sha256(data).hexdigest()
        self.file_sha256_ = digest
        log.debug("saved encoding model %s (sha256 %s)", path, digest)
        return digest

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = None,
        expected_sha256: str | None = None,
        weights: str | Path | None = None,
    ) -> EncodingModel:
        """Load a model file and check it against the installed backbone.

        Parameters
        ----------
        expected_sha256 : str, optional
            The hash recorded for this file (for example in the session
            database); a different file is refused.
        weights : path, optional
            For a model on a lab's own backbone: where its weights file is now.
        """
        meta, tensors, digest = read_model_file(path, expected_sha256=expected_sha256)
        config = EncodingConfig.from_dict(meta["config"])
        recorded = meta["backbone"]
        spec = _spec_for(recorded, weights, path)
        model = cls(config, device=device, backbone=spec)
        installed = model.backbone
        if installed.weights_sha256 != recorded["weights_sha256"]:
            version = recorded.get("package_version")
            raise BackboneMismatchError(
                f"model file {path} was fitted on {recorded['name']} weights with sha256 "
                f"{recorded['weights_sha256'][:16]}... ({recorded.get('package') or recorded['weights_path']}"
                f"{' ' + version if version else ''}); the installed weights {installed.weights_path} have "
                f"{installed.weights_sha256[:16]}...; install the weights the model was fitted on, or refit"
            )
        expected_layers = {name: tuple(shape) for name, shape in meta["layers"]}
        try:
            extractor = model.extractor
        except BackboneError as exc:
            raise BackboneMismatchError(
                f"model file {path}: its layers do not exist in the installed backbone: {exc}"
            ) from None
        differing = {
            name: (expected_layers[name], extractor.layer_shapes.get(name))
            for name in expected_layers
            if extractor.layer_shapes.get(name) != expected_layers[name]
        }
        if differing:
            detail = "; ".join(f"{n}: recorded {a}, installed {b}" for n, (a, b) in differing.items())
            raise BackboneMismatchError(
                f"model file {path}: the installed {installed.name} differs ({detail}); refit"
            )
        try:
            for j, reduction in enumerate(extractor.reductions):
                reduction.mean.copy_(tensors[f"layer{j}.mean"])
                reduction.scale.copy_(tensors[f"layer{j}.scale"])
            model.coef_ = tensors["coef"].numpy()
            model.intercept_ = tensors["intercept"].numpy()
            model.alpha_ = tensors["alpha"].numpy()
            model.cv_r_ = tensors["cv_r"].numpy()
            model.cv_r2_ = tensors["cv_r2"].numpy()
            model.layer_scores_ = tensors["layer_scores"].numpy()
            model.best_layer_ = (
                model.layer_scores_.argmax(axis=0)
                if len(model.layer_scores_)
                else np.zeros(0, dtype=np.int64)
            )
            model.p_values_ = tensors["p_values"].numpy()
            model.selected_ = tensors["selected"].numpy()
            model.roi_labels_ = np.asarray(meta["roi_names"])[tensors["roi_codes"].numpy()]
            model.voxel_indices_ = tensors["voxel_indices"].numpy()
        except (KeyError, RuntimeError, IndexError) as exc:
            raise ModelFileError(
                f"model file {path} lacks or garbles part of the model ({exc}); refit"
            ) from None
        expected_rows = sum(extractor.out_features) * max(1, len(meta["lags_s"]))
        if model.coef_.shape[0] != expected_rows:
            raise ModelFileError(
                f"model file {path} has {model.coef_.shape[0]} coefficient rows; "
                f"its layers give {expected_rows}"
            )
        model.lags_s_ = tuple(meta["lags_s"])
        model.tr_s_ = meta["tr_s"]
        model.fit_info_ = meta["fit"]
        model.file_sha256_ = digest
        model._solver = meta["fit"].get("solver", "")
        return model


def feature_space(model: EncodingModel) -> tuple[object, ...]:
    """What makes two models' features the same: backbone, weights, layers, image size, reduction."""
    c = model.config
    backbone = model.backbone
    reduction = c.reduction
    return (backbone.name, backbone.weights_sha256, model.layers, c.image_size, reduction.method,
            reduction.budget, reduction.log, reduction.standardize)  # fmt: skip


def describe_features(model: EncodingModel) -> str:
    """The features a model reads, in words: what :func:`feature_space` compares."""
    c = model.config
    return (
        f"{model.backbone.name} layers {', '.join(model.layers)} at {c.image_size} px, "
        f"{c.reduction.method} to {c.reduction.budget} per layer"
    )


def _payload_digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def read_model_file(
    path: str | Path, *, expected_sha256: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """The metadata, tensors and SHA-256 of a model file, after every integrity check.

    The file is read once. Never unpickles arbitrary objects (``weights_only=True``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model file {path} does not exist") from None
    except OSError as exc:
        raise ModelFileError(f"model file {path} cannot be read: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise ModelFileError(
            f"model file {path} has sha256 {digest[:16]}..., not the recorded "
            f"{expected_sha256[:16]}...; it was replaced or altered since it was recorded"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, forged pickle: torch raises several kinds
        raise ModelFileError(
            f"model file {path} is truncated or is not a cortexloop model ({type(exc).__name__}); "
            "save it again or restore it from the session's copy"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a cortexloop encoding model file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"model file {path} has format version {payload.get('format_version')}; this cortexloop reads "
            f"version {FORMAT_VERSION}; use the cortexloop that wrote it, or refit"
        )
    meta_json, tensors = payload.get("meta"), payload.get("tensors")
    if not isinstance(meta_json, str) or not isinstance(tensors, dict):
        raise ModelFileError(f"model file {path} is missing its metadata or tensors")
    if _payload_digest(meta_json, tensors) != payload.get("payload_sha256"):
        raise ModelFileError(
            f"model file {path} fails its integrity check: its contents do not match the hash written with "
            "them; it was altered or damaged; restore it or refit"
        )
    return json.loads(meta_json), tensors, digest


def _spec_for(recorded: dict[str, Any], weights: str | Path | None, path: str | Path) -> BackboneSpec:
    name = recorded["name"]
    if recorded.get("factory"):
        return backbone_from_factory(
            recorded["factory"],
            weights or recorded["weights_path"],
            name=name,
            mean=tuple(recorded["mean"]),
            std=tuple(recorded["std"]),
        )
    if name in BACKBONES:
        return BACKBONES[name]
    raise BackboneMismatchError(
        f"model file {path} was fitted on backbone {name!r}, which is not registered here; "
        "register it (docs/encoding.md) before loading"
    )
