"""Images in, predictions out; and images out.

Backbones and feature extraction (:mod:`stimulus.backbones`,
:mod:`stimulus.features`), ridge per voxel (:mod:`stimulus.ridge`), the
encoding model (:class:`EncodingModel`: fit, predict, score, save, load),
scores (:mod:`stimulus.scores`), natural stimuli cut from bundled
photographs (:func:`natural_crops`), synthesis by activation maximization
(:mod:`stimulus.synthesis`) and decoding by encoder inversion
(:mod:`stimulus.decoding`). Presentation arrives with its issue. Imports ``db`` at most, never ``loop``.
"""

from __future__ import annotations

from stimulus.backbones import (
    BACKBONES,
    Backbone,
    BackboneSpec,
    backbone_from_factory,
    load_backbone,
    register_backbone,
)
from stimulus.encoding import EncodingConfig, EncodingModel, EncodingModule, EncodingScores, TimeSeriesRun
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
