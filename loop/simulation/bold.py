"""BOLD volumes from what a virtual subject saw: the HRF, a baseline near 1000, and a scanner's noise.

Volume ``k`` is the signal at ``k * TR`` seconds after the run's first
trigger (its acquisition starts there; slice timing is not modelled). Every
ROI voxel's signal is the sum, over the presentations so far, of its true
response times its own HRF (the canonical one shifted by the voxel's delay)
integrated over the presentation's duration. To it the run adds, in
percent of each voxel's baseline: AR(1) noise, a few low-rank
physiological oscillations shared across voxels, a slow drift, and
optionally rigid head motion (a random walk of translations, applied to
the whole volume, from where the run began: shifted and, on another day,
rotated). Every draw comes from the run's seed, so a run can be
generated again exactly; :attr:`BoldRun.presentations` and
:attr:`BoldRun.motion_voxels` keep what went in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
from scipy.ndimage import affine_transform
from scipy.ndimage import shift as shift_volume

from loop.analysis.hrf import hrf_integral
from loop.analysis.motion import rotation_matrix
from loop.errors import SimulationError
from loop.simulation.subject import PHYSIO_FREQUENCIES, VirtualSubject

__all__ = ["BoldRun", "Presentation"]

HRF_SPAN_S = 40.0  # a presentation adds nothing after this


@dataclasses.dataclass
class Presentation:
    """One image on screen, as the presenter reported it (times from the first trigger)."""

    onset_s: float
    duration_s: float
    stimulus: str
    responses: npt.NDArray[np.float64]  # the ROI voxels' true responses (percent)


class BoldRun:
    """Generates one run's volumes in order, as their TRs end.

    Parameters
    ----------
    subject : VirtualSubject
    tr_s : float
    n_volumes : int
    seed : int
        The run's noise (a different seed for every run of a session).
    motion_mm : float, optional
        Standard deviation of the head's step per volume, in mm (default: the subject's ``motion_mm``).
    start_mm : array-like of shape (3,), optional
        Where the head is at the run's first volume, against the session's first run (translations, mm).
    rotation_deg : array-like of shape (3,), optional
        How the head is turned during the run, about the volume's centre (degrees about x, y, z).
    """

    def __init__(
        self,
        subject: VirtualSubject,
        tr_s: float,
        n_volumes: int,
        seed: int = 0,
        *,
        motion_mm: float | None = None,
        start_mm: npt.ArrayLike | None = None,
        rotation_deg: npt.ArrayLike | None = None,
    ) -> None:
        if not tr_s > 0 or n_volumes < 1:
            raise SimulationError(
                f"a run needs a positive TR and at least one volume (got {tr_s} s, {n_volumes})"
            )
        self.subject, self.tr_s, self.n_volumes = subject, tr_s, n_volumes
        config = subject.config
        rng = np.random.default_rng([config.seed, seed])
        self.presentations: list[Presentation] = []
        self._next = 0
        brain = subject.brain
        self._brain_index = np.flatnonzero(brain.ravel())
        n_brain = len(self._brain_index)
        # Where the ROI voxels sit among the brain voxels.
        flat_roi = np.ravel_multi_index(tuple(subject.tuning.coords.T), brain.shape)
        self._roi_in_brain = np.searchsorted(self._brain_index, flat_roi)
        roi_sd = subject.noise_sd(tr_s)
        sd = np.full(n_brain, float(np.median(roi_sd)))
        sd[self._roi_in_brain] = roi_sd
        self._tissue = subject.tissue.ravel()[self._brain_index] * config.baseline
        self._phi = config.ar1**tr_s
        self._ar_sd = sd * math.sqrt(1 - config.physio_fraction)
        self._ar = rng.normal(size=n_brain) * self._ar_sd  # stationary from the start
        k = config.physio_rank
        self._physio_freq = rng.uniform(*PHYSIO_FREQUENCIES, k)
        self._physio_phase = rng.uniform(0, 2 * np.pi, k)
        # A sinusoid has variance 1/2: scale so the k components add up to physio_fraction of the variance.
        self._physio_loading = (
            rng.normal(size=(n_brain, k)) * (sd * math.sqrt(2 * config.physio_fraction / k))[:, None]
        )
        self._drift = rng.normal(size=(n_brain, 3)) * config.drift_pct / math.sqrt(3)
        self._rng = rng
        motion = config.motion_mm if motion_mm is None else motion_mm
        steps = (
            rng.normal(0, motion / config.voxel_mm, (n_volumes, 3)) if motion else np.zeros((n_volumes, 3))
        )
        steps[0] = 0.0 if start_mm is None else np.asarray(start_mm, dtype=np.float64) / config.voxel_mm
        self.motion_voxels = np.cumsum(steps, axis=0)  # from where the session's first run began
        turned = np.zeros(3) if rotation_deg is None else np.radians(np.asarray(rotation_deg, np.float64))
        self.rotation = rotation_matrix(turned) if turned.any() else None

    @property
    def next_index(self) -> int:
        return self._next

    def present(self, onset_s: float, duration_s: float, stimulus: str, responses: npt.ArrayLike) -> int:
        """Record a presentation; return its number (to correct its duration later)."""
        values = np.asarray(responses, dtype=np.float64)
        if values.shape != (len(self.subject.tuning.roi),):
            raise SimulationError(
                f"responses of shape {values.shape}; the subject has {len(self.subject.tuning.roi)} "
                "ROI voxels (use VirtualSubject.voxel_responses)"
            )
        self.presentations.append(Presentation(onset_s, duration_s, stimulus, values))
        return len(self.presentations) - 1

    def set_duration(self, number: int, duration_s: float) -> None:
        """Correct a presentation's duration once the presenter has measured it."""
        self.presentations[number].duration_s = duration_s

    def signal(self, t: float) -> npt.NDArray[np.float64]:
        """The ROI voxels' noise-free BOLD change (percent) at time ``t``."""
        delays = self.subject.tuning.hrf_delay_s
        total = np.zeros(len(delays))
        for p in self.presentations:
            since = t - p.onset_s
            if 0 < since < HRF_SPAN_S:
                total += p.responses * (
                    hrf_integral(since, delays) - hrf_integral(since - p.duration_s, delays)
                )
        return total

    def volume(self) -> npt.NDArray[np.int16]:
        """The next volume, (nx, ny, nz) int16 in the scanner's raw units."""
        k = self._next
        if k >= self.n_volumes:
            raise SimulationError(f"the run has {self.n_volumes} volumes; all were made")
        t = k * self.tr_s
        config = self.subject.config
        if k:
            innovation = self._rng.normal(size=len(self._ar)) * self._ar_sd * math.sqrt(1 - self._phi**2)
            self._ar = self._phi * self._ar + innovation
        percent = self._ar + self._physio_loading @ np.sin(
            2 * np.pi * self._physio_freq * t + self._physio_phase
        )
        duration = self.n_volumes * self.tr_s
        cosines = np.cos(np.pi * np.arange(1, 4) * (t + 0.5 * self.tr_s) / duration)
        percent += self._drift @ cosines
        percent[self._roi_in_brain] += self.signal(t)
        shape = config.shape
        air = self._rng.standard_normal(int(np.prod(shape)), dtype=np.float32)
        values = np.abs(air * np.float32(0.02 * config.baseline)).astype(np.float64)
        values[self._brain_index] = self._tissue * (1 + percent / 100)
        volume = values.reshape(shape)
        if self.rotation is not None:
            # What sits at x (about the centre) in the still head sits at R x + t: sample R^T (y - t).
            centre = (np.asarray(shape) - 1) / 2
            back = self.rotation.T
            offset = centre - back @ (centre + self.motion_voxels[k])
            volume = affine_transform(volume, back, offset=offset, order=1, mode="nearest")
        elif np.any(self.motion_voxels[k]):
            volume = shift_volume(volume, self.motion_voxels[k], order=1, mode="nearest")
        self._next += 1
        raw: npt.NDArray[np.int16] = np.clip(np.round(volume), 0, np.iinfo(np.int16).max).astype(np.int16)
        return raw
