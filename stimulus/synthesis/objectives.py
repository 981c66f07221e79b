"""What synthesis maximizes: ROI-level readouts of the model's features.

Every objective is linear in the (raw, unstandardized) features, so it is
folded into a few readout columns once, before the first step: one column
per ROI (its mean predicted response, for reporting and for contrasts) and
one per target. A step then costs one small product instead of predicting
every voxel, and models of several subjects that share a feature space
average into the same columns (the cross-subject synthesis of paper 000).

Objective kinds, per image made for a target:

- ``roi-mean``: the target ROI's mean predicted response;
- ``voxel-weighted``: paper 000's objective: the ROI's voxel coefficients
  weighted by each voxel's cross-validated accuracy, projected to one
  direction in feature space and normalized to unit length;
- ``voxel``: one voxel's predicted response;
- ``contrast``: the target ROI minus the mean of the other ROIs;
- ``contrast-baseline``: the target ROI up from its baseline while every
  other ROI stays at its baseline (its mean response to natural images):
  ``(t - base_t) - mean_o |o - base_o|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from stimulus.encoding import EncodingModel, feature_space
from stimulus.errors import TargetError
from stimulus.names import ObjectiveKind

__all__ = [
    "OBJECTIVES",
    "ObjectiveKind",
    "Readout",
    "Target",
    "build_readout",
    "feature_space",
    "objective_values",
]

OBJECTIVES: tuple[ObjectiveKind, ...] = (
    "roi-mean",
    "voxel-weighted",
    "voxel",
    "contrast",
    "contrast-baseline",
)


@dataclass(frozen=True)
class Target:
    """An ROI by name, or one voxel by its column in the model."""

    roi: str | None = None
    voxel: int | None = None

    def __post_init__(self) -> None:
        if (self.roi is None) == (self.voxel is None):
            raise TargetError("a target is either an ROI (roi='V1') or a voxel (voxel=123), exactly one")

    @property
    def label(self) -> str:
        return self.roi if self.roi is not None else f"voxel-{self.voxel}"


@dataclass(frozen=True)
class Readout:
    """Columns over the raw features: ``predictions = features @ coef + intercept``.

    Attributes
    ----------
    coef : tensor of shape (n_features, n_rois + n_targets)
    intercept : tensor of shape (n_rois + n_targets,)
    roi_names : list of str
        The first ``n_rois`` columns are these ROIs' mean responses.
    baselines : tensor of shape (n_rois,)
        Each ROI's mean predicted response to the training images.
    """

    coef: torch.Tensor
    intercept: torch.Tensor
    roi_names: list[str]
    baselines: torch.Tensor

    def to(self, device: torch.device) -> Readout:
        return Readout(
            self.coef.to(device), self.intercept.to(device), self.roi_names, self.baselines.to(device)
        )


@dataclass(frozen=True)
class _Subject:
    """One model's arrays as the readout needs them, gathered once per readout.

    ``mean`` and ``scale`` are the feature standardization (0 and 1 for a
    model fitted without it); ``coef`` reads standardized features.
    """

    model: EncodingModel
    coef: npt.NDArray[np.float64]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    which: int
    n_models: int

    @classmethod
    def of(cls, model: EncodingModel, which: int, n_models: int) -> _Subject:
        mean, scale = model.feature_statistics()
        return cls(
            model=model,
            coef=model._image_coef().astype(np.float64),
            mean=mean,
            scale=scale,
            which=which,
            n_models=n_models,
        )

    def raw_column(
        self, weights: npt.NDArray[np.float64], voxels: npt.NDArray[np.intp]
    ) -> tuple[npt.NDArray[np.float64], float]:
        """A weighted sum of voxels' readouts, moved from standardized to raw feature space."""
        coef = self.coef[:, voxels] @ weights
        intercept = float(self.model.intercept_[voxels].astype(np.float64) @ weights)
        return coef / self.scale, intercept - float((self.mean / self.scale) @ coef)

    def roi_voxels(self, roi: str) -> npt.NDArray[np.intp]:
        members = np.flatnonzero(self.model.roi_labels_ == roi)
        if len(members) == 0:
            known = ", ".join(sorted(set(self.model.roi_labels_.tolist())))
            whose = f"model {self.which + 1} of {self.n_models}" if self.n_models > 1 else "the model"
            raise TargetError(f"{whose} has no ROI named {roi!r}; its ROIs are {known}")
        return members


def _target_column(
    subject: _Subject, target: Target, objective: ObjectiveKind
) -> tuple[npt.NDArray[np.float64], float]:
    """The readout column of one target's objective for one model."""
    if target.voxel is not None:
        return subject.raw_column(np.ones(1), np.array([target.voxel]))
    assert target.roi is not None
    voxels = subject.roi_voxels(target.roi)
    if objective != "voxel-weighted":
        return subject.raw_column(np.full(len(voxels), 1 / len(voxels)), voxels)
    accuracy = np.clip(subject.model.cv_r_[voxels], 0, None)
    if accuracy.sum() <= 0:
        raise TargetError(
            f"ROI {target.roi!r} has no voxel the model predicts above zero (cross-validated r); "
            "voxel-weighted synthesis needs some; use --objective roi-mean"
        )
    column, _ = subject.raw_column(accuracy / accuracy.sum(), voxels)
    # Unit length in standardized feature space, no intercept: a direction, not a response.
    norm = float(np.linalg.norm(column * subject.scale))
    return column / norm, -float(subject.mean @ column) / norm


def build_readout(
    models: Sequence[EncodingModel], targets: Sequence[Target], objective: ObjectiveKind
) -> Readout:
    """Fold the ROI means and the targets' objectives of one or more models into readout columns.

    Several models (one per subject) must share their feature space (backbone,
    weights, layers, image size, reduction); their columns are averaged.
    """
    if not models:
        raise TargetError("give at least one encoding model")
    if objective not in OBJECTIVES:
        raise TargetError(f"objective {objective!r} is unknown; use one of {', '.join(OBJECTIVES)}")
    spaces = {feature_space(m) for m in models}
    if len(spaces) > 1:
        raise TargetError(
            "models to average must share backbone, weights, layers, image size and reduction; "
            "refit them alike"
        )
    roi_names = list(dict.fromkeys(models[0].roi_labels_.tolist()))
    for target in targets:
        if target.voxel is not None:
            if objective in ("contrast", "contrast-baseline"):
                raise TargetError(f"objective {objective} contrasts ROIs; give an ROI target, not a voxel")
            if len(models) > 1:
                raise TargetError("a voxel target needs one model: voxels are not shared between subjects")
            if not 0 <= target.voxel < models[0].n_voxels:
                raise TargetError(
                    f"voxel {target.voxel} does not exist; the model has {models[0].n_voxels} voxels"
                )
        elif objective in ("contrast", "contrast-baseline") and len(roi_names) < 2:
            raise TargetError(
                f"objective {objective} needs at least two ROIs; the model has only {roi_names}"
            )
    subjects = [_Subject.of(m, which, len(models)) for which, m in enumerate(models)]
    columns, intercepts, baselines = [], [], []
    for roi in roi_names:
        parts = []
        for subject in subjects:
            voxels = subject.roi_voxels(roi)
            parts.append(subject.raw_column(np.full(len(voxels), 1 / len(voxels)), voxels))
            baselines.append(float(subject.model.intercept_[voxels].mean()))
        columns.append(np.mean([c for c, _ in parts], axis=0))
        intercepts.append(float(np.mean([b for _, b in parts])))
    for target in targets:
        parts = [_target_column(subject, target, objective) for subject in subjects]
        columns.append(np.mean([c for c, _ in parts], axis=0))
        intercepts.append(float(np.mean([b for _, b in parts])))
    stacked = np.stack(columns, axis=1)
    bad = ~np.isfinite(stacked).all(axis=0) | ~np.isfinite(intercepts)
    if bad.any():
        name = [*roi_names, *(t.label for t in targets)][int(np.flatnonzero(bad)[0])]
        raise TargetError(
            f"the readout of ROI {name!r} is not finite: the model's coefficients hold NaN or infinite "
            "values; refit the model or load it again from its file"
        )
    base = np.array(baselines).reshape(len(roi_names), len(models)).mean(axis=1)
    return Readout(
        coef=torch.tensor(stacked, dtype=torch.float32),
        intercept=torch.tensor(intercepts, dtype=torch.float32),
        roi_names=roi_names,
        baselines=torch.tensor(base, dtype=torch.float32),
    )


def objective_values(
    outputs: torch.Tensor,
    target_of_image: torch.Tensor,
    roi_of_image: torch.Tensor,
    readout: Readout,
    objective: ObjectiveKind,
) -> torch.Tensor:
    """Per-image objective (n,) from readout outputs (n, n_rois + n_targets).

    ``target_of_image`` gives each image's target (its column after the ROI
    columns); ``roi_of_image`` the ROI column of that target (-1 for a voxel).
    """
    n_rois = len(readout.roi_names)
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    own = outputs[rows, n_rois + target_of_image]
    if objective not in ("contrast", "contrast-baseline"):
        return own
    rois = outputs[:, :n_rois]
    others = torch.ones_like(rois, dtype=torch.bool)
    others[rows, roi_of_image] = False
    if objective == "contrast":
        return own - (rois * others).sum(dim=1) / others.sum(dim=1)
    deviation = (rois - readout.baselines).abs()
    return (own - readout.baselines[roi_of_image]) - (deviation * others).sum(dim=1) / others.sum(dim=1)
