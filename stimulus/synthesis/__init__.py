"""ROI-targeted image synthesis by activation maximization of the encoding model.

:func:`synthesize` makes images for ROIs or voxels (objectives in
:mod:`~stimulus.synthesis.objectives`), through a Fourier or pixel
parametrization (:mod:`~stimulus.synthesis.parametrizations`) under random
robustness transforms (:mod:`~stimulus.synthesis.transforms`);
:func:`write_png` saves them with their metadata.
"""

from __future__ import annotations

from stimulus.synthesis.objectives import OBJECTIVES, ObjectiveKind, Readout, Target, build_readout
from stimulus.synthesis.parametrizations import FourierImage, PixelImage
from stimulus.synthesis.run import (
    SynthesisConfig,
    SynthesizedImage,
    check_models,
    png_bytes,
    synthesize,
    write_png,
)
from stimulus.synthesis.transforms import TransformConfig, random_affine

__all__ = [
    "OBJECTIVES",
    "FourierImage",
    "ObjectiveKind",
    "PixelImage",
    "Readout",
    "SynthesisConfig",
    "SynthesizedImage",
    "Target",
    "TransformConfig",
    "build_readout",
    "check_models",
    "png_bytes",
    "random_affine",
    "synthesize",
    "write_png",
]
