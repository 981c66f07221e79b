"""In-silico experiments: classic mapping stimuli shown to an encoding model instead of a subject.

Category contrasts (:func:`contrast`): each voxel's Welch t between the
predicted responses to two categories of images, or the smallest against
several (a conjunction), as a category localizer is analysed.

Retinotopic mapping (paper 001's in-silico experiments; the travelling-wave
design of phase-encoded mapping): contrast-reversing checkerboards seen through
a rotating wedge and an expanding ring are predicted voxel by voxel, and each
voxel's preferred polar angle is read from a sine/cosine GLM on the wedge's
cycle: ``response = b0 + b_cos cos(angle) + b_sin sin(angle)``, the preferred
angle ``atan2(b_sin, b_cos)``, its amplitude ``hypot(b_cos, b_sin)``; its
eccentricity from the ring it answers most (refined between its neighbours).

The visual field runs from -1 to 1 across the image (x to the right, y up), so
an eccentricity of 1 is the image's half-width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stimulus.encoding import EncodingModel
from stimulus.errors import EncodingInputError

__all__ = ["Contrast", "Retinotopy", "contrast", "mapping_stimuli", "retinotopy", "sine_cosine_fit"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MappingStimuli:
    """Wedge and ring apertures over checkerboards: images (n, 3, size, size) and each one's cycle phase."""

    wedges: npt.NDArray[np.float32]
    wedge_phase: FloatArray  # the wedge's centre angle, radians (0: right, pi/2: up)
    rings: npt.NDArray[np.float32]
    ring_eccentricity: FloatArray  # each ring's mean eccentricity (1: the image's half-width)


def _field(size: int) -> tuple[FloatArray, FloatArray]:
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(centres, -centres)  # row 0 at the top: y up
    return np.hypot(x, y), np.arctan2(y, x)


def _checkerboard(radius: FloatArray, angle: FloatArray, reverse: int) -> FloatArray:
    """A polar checkerboard whose checks grow with eccentricity, as retinotopy's do (0 or 1)."""
    rings = np.floor(np.log(radius + 0.05) * 6)
    spokes = np.floor(angle / (2 * np.pi) * 24)
    board: FloatArray = ((rings + spokes + reverse) % 2).astype(np.float64)
    return board


def mapping_stimuli(size: int = 128, *, n_wedges: int = 16, n_rings: int = 8) -> MappingStimuli:
    """The wedge and ring images, each position in two contrast-reversed checkerboards (to be averaged).

    A wedge spans three of the ``n_wedges`` steps (so neighbouring positions
    overlap, as a continuously rotating wedge does); a ring spans two of the
    ``n_rings`` eccentricity steps out to the image's half-width.
    """
    radius, angle = _field(size)
    grey = 0.5

    def show(aperture: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.float32]]:
        return [
            np.repeat(np.where(aperture, _checkerboard(radius, angle, k), grey)[None], 3, axis=0).astype(
                np.float32
            )
            for k in (0, 1)
        ]

    wedge_phase = np.arange(n_wedges) * 2 * np.pi / n_wedges
    wedges = []
    for centre in wedge_phase:
        offset = np.abs(np.angle(np.exp(1j * (angle - centre))))
        wedges += show((offset <= 1.5 * np.pi / n_wedges) & (radius <= 1.0))
    step = 1.0 / n_rings
    rings, ring_eccentricity = [], []
    for k in range(n_rings):
        inner, outer = max(0.0, (k - 0.5) * step), (k + 1.5) * step
        rings += show((radius >= inner) & (radius < min(outer, 1.0)))
        ring_eccentricity.append((inner + min(outer, 1.0)) / 2)
    return MappingStimuli(
        wedges=np.stack(wedges),
        wedge_phase=wedge_phase,
        rings=np.stack(rings),
        ring_eccentricity=np.asarray(ring_eccentricity),
    )


def sine_cosine_fit(responses: npt.ArrayLike, phase: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Each column's preferred phase (radians, -pi..pi) and amplitude from ``b0 + b_cos cos + b_sin sin``.

    ``responses``: (n_positions, n_voxels); ``phase``: (n_positions,).
    """
    y = np.asarray(responses, dtype=np.float64)
    theta = np.asarray(phase, dtype=np.float64)
    design = np.column_stack([np.ones_like(theta), np.cos(theta), np.sin(theta)])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.arctan2(beta[2], beta[1]), np.hypot(beta[1], beta[2])


@dataclass(frozen=True)
class Retinotopy:
    """Each model voxel's preferred polar angle (radians: 0 right, pi/2 up), eccentricity and fit strength.

    ``angle_amplitude`` is the wedges' sine/cosine amplitude and ``ring_amplitude``
    the range of the rings' responses, in the model's response units: near 0 for a
    voxel the mapping does not drive.
    """

    polar_angle: FloatArray
    eccentricity: FloatArray
    angle_amplitude: FloatArray
    ring_amplitude: FloatArray


def retinotopy(model: EncodingModel, *, size: int = 128, n_wedges: int = 16, n_rings: int = 8) -> Retinotopy:
    """Map each of ``model``'s voxels with wedges and rings shown to the model."""
    stimuli = mapping_stimuli(size, n_wedges=n_wedges, n_rings=n_rings)
    wedges = model.predict(stimuli.wedges).reshape(n_wedges, 2, -1).mean(axis=1)  # the two checkerboards
    rings = model.predict(stimuli.rings).reshape(n_rings, 2, -1).mean(axis=1)
    angle, angle_amplitude = sine_cosine_fit(wedges, stimuli.wedge_phase)
    # Rings do not wrap round as angles do (the outermost ring is not next to the innermost), so a voxel's
    # eccentricity is its peak ring's, refined by the centre of mass of the peak and its neighbours.
    peak = rings.argmax(axis=0)
    columns = np.arange(rings.shape[1])
    low, high = np.maximum(peak - 1, 0), np.minimum(peak + 1, n_rings - 1)
    floor = rings.min(axis=0)
    weights = [np.maximum(rings[k, columns] - floor, 0) for k in (low, peak, high)]
    total = np.maximum(sum(weights), 1e-12)
    position = (low * weights[0] + peak * weights[1] + high * weights[2]) / total
    eccentricity = np.interp(position, np.arange(n_rings), stimuli.ring_eccentricity)
    return Retinotopy(
        polar_angle=angle,
        eccentricity=eccentricity,
        angle_amplitude=angle_amplitude,
        ring_amplitude=rings.max(axis=0) - floor,
    )


@dataclass(frozen=True)
class Contrast:
    """Each voxel's Welch t of the model's predicted responses, category ``a`` against ``b``.

    With several ``b`` categories, ``t`` is the smallest of the t's against each
    (a conjunction: ``a`` above every one of them), as category localizers test.
    """

    t: FloatArray
    a: str
    b: tuple[str, ...]
    n_a: int
    n_b: tuple[int, ...]


def contrast(
    model: EncodingModel,
    images: npt.ArrayLike | list[Path],
    categories: list[str],
    a: str,
    b: tuple[str, ...],
) -> Contrast:
    """Category ``a`` against each of ``b`` through the model: each voxel's (smallest) Welch t."""
    from scipy import stats

    labels = np.asarray(categories)
    groups = {c: np.flatnonzero(labels == c) for c in (a, *b)}
    short = [f"{c} ({len(i)})" for c, i in groups.items() if len(i) < 2]
    if short or not b or a in b:
        why = f"too few images of {', '.join(short)}" if short else "no other category to contrast with"
        raise EncodingInputError(
            f"a contrast of {a} against {', '.join(b) or 'nothing'} needs two or more images of each, and "
            f"categories that differ: {why}"
        )
    predicted = model.predict(images)
    t = np.min(
        [stats.ttest_ind(predicted[groups[a]], predicted[groups[c]], equal_var=False).statistic for c in b],
        axis=0,
    )
    return Contrast(
        t=np.asarray(t, dtype=np.float64), a=a, b=b, n_a=len(groups[a]), n_b=tuple(len(groups[c]) for c in b)
    )
