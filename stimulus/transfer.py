"""A model fitted elsewhere, put on this session's voxels: an earlier session's, or other subjects' averaged.

A model of the same subject on the same grid (an earlier session whose
atlas and reference this session shares) models the same voxels: it is
used as it is. Models of other subjects, whose voxels are other voxels, are
averaged at the ROI level, as paper 000's Experiment 3 drove new subjects
with the average of other subjects' models: each model's mean over an
ROI's voxels is a linear readout of the raw features, and the readouts are
averaged as synthesis averages subjects' models (:func:`build_readout`),
then put in a common feature standardization.
Every voxel of an ROI in this session then starts from its ROI's averaged
readout; fitting with it as the prior (:meth:`EncodingModel.fit`) lets the
session's own responses make the voxels differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stimulus.encoding import EncodingModel, feature_space
from stimulus.errors import EncodingInputError
from stimulus.synthesis.objectives import build_readout

__all__ = ["on_voxels", "same_voxels"]

Array = npt.NDArray[np.float64]


def same_voxels(model: EncodingModel, roi_labels: Sequence[str], voxel_indices: npt.ArrayLike) -> bool:
    """Whether ``model`` models exactly these voxels, in this order, with these ROI labels."""
    indices = np.asarray(voxel_indices, dtype=np.int64)
    return bool(
        model.voxel_indices_.shape == indices.shape
        and np.array_equal(model.voxel_indices_, indices)
        and np.array_equal(model.roi_labels_, np.asarray(roi_labels))
    )


def on_voxels(
    models: Sequence[EncodingModel], roi_labels: Sequence[str], voxel_indices: npt.ArrayLike
) -> EncodingModel:
    """One model of the voxels ``voxel_indices`` (labelled ``roi_labels``) from ``models``.

    One model of exactly these voxels is returned as it is; otherwise the
    models are averaged at the ROI level (see the module's text). Every ROI
    in ``roi_labels`` must be in every model, and the models must read the
    same features.
    """
    if not models:
        raise EncodingInputError("no models were given to start from")
    if len(models) == 1 and same_voxels(models[0], roi_labels, voxel_indices):
        return models[0]
    labels = np.asarray([str(x) for x in roi_labels])
    indices = np.asarray(voxel_indices, dtype=np.int64)
    if labels.shape != indices.shape:
        raise EncodingInputError(f"{len(labels)} ROI labels for {len(indices)} voxels; give one per voxel")
    first = models[0]
    for k, model in enumerate(models[1:], start=2):
        if feature_space(model) != feature_space(first):
            raise EncodingInputError(
                f"model {k} of {len(models)} reads other features than model 1 (backbone, layers, image size "
                "or reduction); models averaged by ROI must share them"
            )
    rois = list(dict.fromkeys(labels.tolist()))
    for k, model in enumerate(models, start=1):
        missing = sorted(set(rois) - set(model.roi_labels_.tolist()))
        if missing:
            raise EncodingInputError(
                f"model {k} of {len(models)} has no voxels of {', '.join(missing)}; its ROIs are "
                f"{', '.join(sorted(set(model.roi_labels_.tolist())))}: use models of the same ROIs"
            )
    # Each ROI's mean over its voxels, averaged over the models, as a readout of the raw features.
    readout = build_readout(models, [], "roi-mean")
    column = {name: k for k, name in enumerate(readout.roi_names)}
    stats = [model.feature_statistics() for model in models]
    mean = np.mean([m for m, _ in stats], axis=0)
    scale = np.mean([s for _, s in stats], axis=0)
    coef = np.zeros((len(mean), len(labels)))
    intercept = np.zeros(len(labels))
    accuracy = np.zeros(len(labels))
    for roi in rois:
        columns = np.flatnonzero(labels == roi)
        raw = readout.coef[:, column[roi]].double().cpu().numpy()
        coef[:, columns] = (raw * scale)[:, None]  # reads features standardized the common way
        intercept[columns] = float(readout.intercept[column[roi]]) + float(mean @ raw)
        accuracy[columns] = np.mean([np.nanmedian(model.cv_r_[model.roi_labels_ == roi]) for model in models])
    return _assembled(first, mean, scale, coef, intercept, accuracy, labels, indices, models)


def _assembled(
    like: EncodingModel,
    mean: Array,
    scale: Array,
    coef: Array,
    intercept: Array,
    accuracy: Array,
    labels: npt.NDArray[np.str_],
    indices: npt.NDArray[np.int64],
    models: Sequence[EncodingModel],
) -> EncodingModel:
    """A fitted model of these voxels from its parts (what a fit would have set)."""
    model = EncodingModel(like.config, device=like.device, backbone=like._spec)
    start = 0
    for reduction in model.extractor.reductions:
        width = len(reduction.mean)
        reduction.set_statistics(mean[start : start + width], scale[start : start + width])
        start += width
    n = len(labels)
    model.coef_ = coef.astype(np.float32)
    model.intercept_ = intercept.astype(np.float32)
    model.alpha_ = np.full(n, np.nan)
    model.cv_r_ = accuracy  # each ROI's median cross-validated r in the models it came from
    model.cv_r2_ = np.full(n, np.nan)
    model.layer_scores_ = np.zeros((0, n))
    model.best_layer_ = np.zeros(0, dtype=np.int64)
    model.p_values_ = np.full(n, np.nan)
    model.selected_ = accuracy > 0
    model.roi_labels_ = labels
    model.voxel_indices_ = indices
    model.fit_info_ = {
        "n_training_images": int(sum(m.fit_info_.get("n_training_images", 0) for m in models)),
        "n_voxels": n,
        "averaged_by_roi": [m.file_sha256_ for m in models],
        "solver": "",
        "device": str(model.device),
    }
    model._solver = ""
    return model
