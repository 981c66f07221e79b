"""The words stimulus's settings take, as ``Literal`` types: one place, and no torch to read them.

A session file or a command line is checked against these (``typing.get_args``
gives the choices) before anything heavy loads, and the library's own configs
are typed with the same names, so a checked setting meets them with no cast.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BackboneName",
    "CvKind",
    "InitKind",
    "ObjectiveKind",
    "Parametrization",
    "ReductionMethod",
]

ObjectiveKind = Literal["roi-mean", "voxel-weighted", "voxel", "contrast", "contrast-baseline"]
Parametrization = Literal["fourier", "pixel"]
InitKind = Literal["grey", "noise"]  # where synthesis starts when it is given no images
ReductionMethod = Literal["pool", "smooth"]
CvKind = Literal["kfold", "loo"]
BackboneName = Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]  # the built-in ones
