"""The exceptions the stimulus package raises::

    CortexloopError                          (db.errors)
    └── StimulusError
        ├── BackboneError(ValueError)        unknown backbone, unreadable weights, a layer that is not there
        ├── EncodingInputError(ValueError)   images and responses the fit cannot use as given
        ├── ImageReadError(OSError)          an image file that is missing or does not decode
        ├── ModelFileError(ValueError)       a model file that is truncated, forged or from elsewhere
        │   └── BackboneMismatchError        the model was fitted on a backbone that is not the installed one
        ├── ModelWriteError(OSError)         a model file could not be written (the previous one is kept)
        ├── TargetError(LookupError)         a synthesis target (ROI, voxel) the model does not have
        ├── PlanError(ValueError)            a run plan that cannot be armed: bad timing, bad images
        ├── TriggerTimeoutError(TimeoutError) the scanner's first trigger never came
        ├── PresenterError(RuntimeError)     the presenter cannot be reached, or refused a plan
        └── SynthesisError(RuntimeError)     an optimization that diverged (non-finite objective)

Messages name the thing, what was expected, what came, and what to do.
"""

from __future__ import annotations

from db.base import CortexloopError

__all__ = [
    "BackboneError",
    "BackboneMismatchError",
    "EncodingInputError",
    "ImageReadError",
    "ModelFileError",
    "ModelWriteError",
    "PlanError",
    "PresenterError",
    "StimulusError",
    "SynthesisError",
    "TargetError",
    "TriggerTimeoutError",
]


class StimulusError(CortexloopError):
    """Root of the errors raised by ``stimulus``."""


class BackboneError(StimulusError, ValueError):
    """A backbone or one of its layers cannot be used as asked."""


class EncodingInputError(StimulusError, ValueError):
    """Images, responses, groups or settings that a fit or a score cannot use."""


class ImageReadError(StimulusError, OSError):
    """An image file is missing or cannot be decoded."""


class ModelFileError(StimulusError, ValueError):
    """A model file cannot be loaded: truncated, altered, or not a cortexloop model."""


class BackboneMismatchError(ModelFileError):
    """The model file was fitted on a backbone that differs from the one installed here."""


class ModelWriteError(StimulusError, OSError):
    """A model file could not be written; any previous file at that path is untouched."""


class TargetError(StimulusError, LookupError):
    """A synthesis or decoding target that the model cannot serve: unknown or empty ROI, bad voxel."""


class SynthesisError(StimulusError, RuntimeError):
    """An optimization that cannot go on, such as an objective that became NaN or infinite."""


class PlanError(StimulusError, ValueError):
    """A run plan that cannot be armed: bad timing, unknown keys, missing, altered or unreadable images."""


class TriggerTimeoutError(StimulusError, TimeoutError):
    """The run's first trigger did not come in time."""


class PresenterError(StimulusError, RuntimeError):
    """The presenter cannot be reached or started, or it refused a plan or a command."""
