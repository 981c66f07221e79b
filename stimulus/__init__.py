"""Images in, predictions out; and images out.

Backbones and feature extraction (:mod:`stimulus.backbones`,
:mod:`stimulus.features`), ridge per voxel (:mod:`stimulus.ridge`), the
encoding model (:class:`EncodingModel`: fit, predict, score, save, load),
scores (:mod:`stimulus.scores`), natural stimuli cut from bundled
photographs (:func:`natural_crops`), synthesis by activation maximization
(:mod:`stimulus.synthesis`) and decoding by encoder inversion
(:mod:`stimulus.decoding`), and presentation (:mod:`stimulus.present`, which loads no
torch: the stimulus computer imports it alone). Imports ``db.base`` at most, never ``loop``.
The names below are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.base.lazy import lazy_exports

if TYPE_CHECKING:
    from stimulus.backbones import (
        BACKBONES,
        Backbone,
        BackboneSpec,
        backbone_from_factory,
        load_backbone,
        register_backbone,
    )
    from stimulus.encoding import (
        EncodingConfig,
        EncodingModel,
        EncodingModule,
        EncodingScores,
        TimeSeriesRun,
        TimeSeriesScores,
    )
    from stimulus.errors import (
        BackboneError,
        BackboneMismatchError,
        EncodingInputError,
        ImageReadError,
        ModelFileError,
        ModelWriteError,
        PlanError,
        PresenterError,
        StimulusError,
        SynthesisError,
        TargetError,
        TriggerTimeoutError,
    )
    from stimulus.features import FeatureExtractor, ReductionConfig, extract_features
    from stimulus.images import load_image, load_images
    from stimulus.natural import natural_crops
    from stimulus.ridge import RidgeCV, group_folds

_EXPORTS = {
    "BACKBONES": "stimulus.backbones",
    "Backbone": "stimulus.backbones",
    "BackboneError": "stimulus.errors",
    "BackboneMismatchError": "stimulus.errors",
    "BackboneSpec": "stimulus.backbones",
    "EncodingConfig": "stimulus.encoding",
    "EncodingInputError": "stimulus.errors",
    "EncodingModel": "stimulus.encoding",
    "EncodingModule": "stimulus.encoding",
    "EncodingScores": "stimulus.encoding",
    "FeatureExtractor": "stimulus.features",
    "ImageReadError": "stimulus.errors",
    "ModelFileError": "stimulus.errors",
    "ModelWriteError": "stimulus.errors",
    "PlanError": "stimulus.errors",
    "PresenterError": "stimulus.errors",
    "ReductionConfig": "stimulus.features",
    "RidgeCV": "stimulus.ridge",
    "StimulusError": "stimulus.errors",
    "SynthesisError": "stimulus.errors",
    "TargetError": "stimulus.errors",
    "TimeSeriesRun": "stimulus.encoding",
    "TimeSeriesScores": "stimulus.encoding",
    "TriggerTimeoutError": "stimulus.errors",
    "backbone_from_factory": "stimulus.backbones",
    "extract_features": "stimulus.features",
    "group_folds": "stimulus.ridge",
    "load_backbone": "stimulus.backbones",
    "load_image": "stimulus.images",
    "load_images": "stimulus.images",
    "natural_crops": "stimulus.natural",
    "register_backbone": "stimulus.backbones",
}

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneError",
    "BackboneMismatchError",
    "BackboneSpec",
    "EncodingConfig",
    "EncodingInputError",
    "EncodingModel",
    "EncodingModule",
    "EncodingScores",
    "FeatureExtractor",
    "ImageReadError",
    "ModelFileError",
    "ModelWriteError",
    "PlanError",
    "PresenterError",
    "ReductionConfig",
    "RidgeCV",
    "StimulusError",
    "SynthesisError",
    "TargetError",
    "TimeSeriesRun",
    "TimeSeriesScores",
    "TriggerTimeoutError",
    "backbone_from_factory",
    "extract_features",
    "group_folds",
    "load_backbone",
    "load_image",
    "load_images",
    "natural_crops",
    "register_backbone",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
