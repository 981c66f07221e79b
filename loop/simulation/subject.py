"""A virtual subject: a brain volume with visual ROIs whose voxels respond to images by a known model.

The ground truth is deliberately *not* cortexloop's default encoding model
(EfficientNet-Lite0 features and ridge), so a controller has a real gap to
close:

- V1, V2 and V4 are retinotopic. Each voxel has a population receptive
  field (pRF) whose centre follows the voxel's place in the ROI: the left
  hemisphere sees the right visual field, dorsal voxels the lower field,
  posterior voxels the fovea, and pRFs grow with eccentricity and from V1
  to V4. Early voxels sum oriented energy (quadrature Gabor pairs at two
  spatial frequencies) under their pRF with their own orientation and
  frequency tuning, compressively (exponent 0.5, as in the CSS model); V4
  adds mid-level EfficientNet-Lite2 features under a larger pRF.
- LO pools late Lite2 features over a large field, plus evidence for
  objects; FFA (faces and animals) and PPA (places and scenes) weight
  Lite2's ImageNet class probabilities, each voxel its own mix of class
  groups (dogs, cats, birds, primates, people...; landscapes, buildings,
  shops...), plus a little generic late-feature drive.

Each voxel's drive is standardized on a calibration set of natural images
and mapped to a response in percent signal change (a baseline plus a gain
times the standardized drive, never below zero): the BOLD response at the
peak of a one-second presentation. Longer presentations sum linearly.

Noise is set per voxel so that single-trial responses estimated from
isolated trials of ``reference_duration_s`` (with the voxel's own HRF) have
the configured noise ceiling (NSD's definition, median over ROI voxels).
Trials closer together give noisier estimates, as in a real scanner.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)

from db.base import ConfigError
from loop.analysis.hrf import hrf_integral
from loop.errors import SimulationError
from loop.simulation.rois import ROI_DESCRIPTIONS, ROI_NAMES

__all__ = ["ROI_NAMES", "SubjectConfig", "VirtualSubject"]

Array = npt.NDArray[np.float64]


# ImageNet-1k class groups (indices) that the category areas weight.
_DOGS, _CATS, _BIRDS = range(151, 269), range(281, 294), [*range(80, 101), *range(127, 147)]
_PRIMATES = range(365, 385)
_PERSON = (399, 400, 433, 439, 452, 457, 474, 515, 518, 551, 560, 570, 610, 614, 617, 629, 643, 652, 678, 697,
           796, 808, 834, 836, 837, 841, 887, 903, 906, 981, 982, 983)  # fmt: skip
_OTHER_ANIMALS = sorted(set(range(398)) - set(_DOGS) - set(_CATS) - set(_BIRDS) - set(_PRIMATES))
FACE_GROUPS: dict[str, tuple[int, ...]] = {
    "people": _PERSON, "dogs": tuple(_DOGS), "cats": tuple(_CATS), "birds": tuple(_BIRDS),
    "primates": tuple(_PRIMATES), "other animals": tuple(_OTHER_ANIMALS),
}  # fmt: skip
PLACE_GROUPS: dict[str, tuple[int, ...]] = {
    "landscapes": tuple(range(970, 981)),
    "buildings": (
        425,
        437,
        449,
        483,
        497,
        500,
        538,
        580,
        660,
        663,
        668,
        698,
        727,
        743,
        832,
        853,
        858,
        873,
        900,
        915,
    ),
    "streets and bridges": (460, 525, 536, 562, 649, 706, 718, 821, 825, 839, 888, 912),
    "shops and rooms": (410, 415, 424, 454, 467, 498, 509, 582, 598, 624, 634, 762, 788, 819, 860, 865),
}
OBJECT_CLASSES = tuple(
    sorted(set(range(398, 1000)) - {c for g in (*FACE_GROUPS.values(), *PLACE_GROUPS.values()) for c in g})
)

N_ORIENTATIONS = 4
FREQUENCIES = (4.0, 10.0)  # cycles per image
ENERGY_GRID = 32  # energy maps are pooled to this grid before pRF weighting
MID_LAYER, LATE_LAYER, CLASSES_LAYER = "_blocks.6", "_blocks.14", "_fc"


@dataclass(frozen=True, kw_only=True)
class SubjectConfig:
    """Everything that makes a virtual subject; the same config and seed give the same subject.

    Noise: ``noise_ceiling`` (percent) is the median noise ceiling of single-
    trial responses over ROI voxels; ``ar1`` the noise's autocorrelation at a
    lag of one second; ``physio_fraction`` the share of the noise variance in
    ``physio_rank`` low-rank physiological components; ``drift_pct`` the size
    of slow drifts over a run, in percent of the baseline.

    Head: ``motion_mm`` is the standard deviation of the head's step per volume
    within a run; ``run_shift_mm`` that of where the head is, on each axis, at
    the start of each run after the first (as after a break between runs);
    ``head_mm`` and ``head_deg`` where the head is in this session against the
    subject's first (another day: the same brain, scanned in another position):
    a shift in mm along the volume's axes and a rotation in degrees about
    them, about the volume's centre, as :mod:`loop.analysis.motion` measures it.
    """

    name: str = "sim-01"
    seed: int = 0
    shape: tuple[int, int, int] = (64, 64, 36)
    voxel_mm: float = 3.0
    baseline: float = 1000.0
    noise_ceiling: float = 40.0
    reference_duration_s: float = 1.0
    ar1: float = 0.5
    physio_rank: int = 3
    physio_fraction: float = 0.2
    drift_pct: float = 1.0
    motion_mm: float = 0.0
    run_shift_mm: float = 0.0
    head_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    head_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hrf_delay_sd_s: float = 0.5
    image_size: int = 128
    calibration_images: int = 100
    backbone: str = "efficientnet-lite2"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.noise_ceiling < 100:
            problems.append(f"noise_ceiling {self.noise_ceiling} must be between 0 and 100 (percent)")
        if not 0 <= self.ar1 < 1 or not 0 <= self.physio_fraction < 1:
            problems.append(
                f"ar1 ({self.ar1}) and physio_fraction ({self.physio_fraction}) must be in [0, 1)"
            )
        if min(self.shape) < 16 or len(self.shape) != 3:
            problems.append(f"shape {self.shape} must be three sizes of at least 16 voxels")
        if self.motion_mm < 0 or self.run_shift_mm < 0 or self.drift_pct < 0 or self.calibration_images < 20:
            problems.append("motion_mm, run_shift_mm and drift_pct must be >= 0 and calibration_images >= 20")
        if problems:
            raise ConfigError(f"virtual subject {self.name!r}: " + "; ".join(problems))

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> SubjectConfig:
        """``default`` or a TOML file of fields; ``overrides`` (e.g. ``seed``) win."""
        values: dict[str, Any] = {}
        if spec != "default":
            path = Path(spec)
            try:
                values = tomllib.loads(path.read_text())
            except FileNotFoundError:
                raise ConfigError(
                    f"subject spec {spec!r}: no such file; give `default` or a TOML file"
                ) from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"subject file {path} is not valid TOML: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"subject spec {spec!r} has unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("shape", "head_mm", "head_deg"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"subject spec {spec!r}: {exc}") from None


# --- the subject -----------------------------------------------------------------------------------


@dataclass
class VoxelTuning:
    """The ground-truth model's parameters for the ROI voxels (one row per voxel, in ``roi_index`` order)."""

    coords: npt.NDArray[np.intp]  # (n, 3) voxel indices
    roi: npt.NDArray[np.intp]  # (n,) index into ROI_NAMES
    prf: Array  # (n, 3): x, y (visual field, -1..1 spans the image, y up) and sigma
    orientation: Array  # (n,) preferred orientation, radians
    frequency_weight: Array  # (n,) weight of the high spatial frequency (0..1)
    hrf_delay_s: Array  # (n,)
    base: Array  # (n,) response (%) at the calibration set's mean drive
    gain: Array  # (n,) response (%) per standard deviation of drive
    channel_weights: dict[str, Array] = field(default_factory=dict)
    class_weights: Array | None = None  # (n, 1000) for the category areas, else zeros


class VirtualSubject:
    """A brain with visual ROIs, a ground-truth response model and the noise of a real scan.

    Build it from a :class:`SubjectConfig`; everything is drawn from its seed.
    """

    def __init__(self, config: SubjectConfig | None = None, *, device: str | torch.device = "cpu") -> None:
        from stimulus.backbones import load_backbone

        self.config = config = config or SubjectConfig()
        self.device = torch.device(device)
        rng = np.random.default_rng(config.seed)
        self.affine = _affine(config.shape, config.voxel_mm)
        self.brain, self.tissue = _brain(config.shape, rng)
        self.labels = _rois(config.shape, self.brain, rng)
        self.backbone = load_backbone(config.backbone, device=self.device)
        self.tuning = _tuning(self.labels, rng, config)
        self._filters = _gabor_bank(config.image_size // 2).to(self.device)
        self._prf_energy = (
            torch.from_numpy(_prf_weights(self.tuning.prf, ENERGY_GRID)).float().to(self.device)
        )
        self._prf_mid = (
            torch.from_numpy(_prf_weights(self.tuning.prf, config.image_size // 8)).float().to(self.device)
        )
        self._prf_late = (
            torch.from_numpy(_prf_weights(self.tuning.prf * [1, 1, 2.0], config.image_size // 16))
            .float()
            .to(self.device)
        )
        from stimulus.natural import natural_image_set

        calibration = natural_image_set(
            config.calibration_images, size=config.image_size, seed=config.seed + 1
        )
        components = self._components(calibration.pixels)  # (n, voxels, 4)
        self._component_mean = components.mean(0)
        self._component_std = components.std(0) + 1e-9
        combined = self._combine(components)
        self._combined_std = combined.std(0) + 1e-9
        responses = self._responses(components)  # the calibration set's, without a second pass
        self.signal_sd = responses.std(0)  # % signal change across natural images, per voxel
        self._ncsnr = _voxel_ncsnr(config, len(self.signal_sd), rng)
        self._noise_sd: dict[float, Array] = {}

    def noise_sd(self, tr_s: float) -> Array:
        """Each ROI voxel's noise (percent of baseline, per volume) at a TR, set to give the noise ceiling."""
        if tr_s not in self._noise_sd:
            self._noise_sd[tr_s] = self.signal_sd * _trial_efficiency(tr_s, self.config) / self._ncsnr
        return self._noise_sd[tr_s]

    @property
    def noise_ceiling(self) -> Array:
        """Each ROI voxel's configured single-trial noise ceiling (percent), for isolated reference trials."""
        return 100 * self._ncsnr**2 / (self._ncsnr**2 + 1)

    # -- geometry ---------------------------------------------------------------------------------

    @property
    def roi_names(self) -> tuple[str, ...]:
        return ROI_NAMES

    def roi_mask(self, name: str) -> npt.NDArray[np.bool_]:
        """Which voxels of the volume belong to an ROI."""
        mask: npt.NDArray[np.bool_] = self.labels == ROI_NAMES.index(name) + 1
        return mask

    def roi_voxels(self, name: str) -> npt.NDArray[np.intp]:
        """Rows of :attr:`tuning` (and columns of :meth:`voxel_responses`) of one ROI."""
        return np.flatnonzero(self.tuning.roi == ROI_NAMES.index(name))

    def write_atlas(self, folder: Path) -> tuple[Path, Path]:
        """The ROI atlas as sessions take it: a NIfTI label image and a TSV (index, name, description)."""
        import nibabel as nib

        from db.base import write_atomic

        folder.mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(self.labels.astype(np.int16), self.affine)
        image.set_sform(self.affine, code="scanner")
        image.set_qform(self.affine, code="scanner")
        labels = folder / "rois.nii.gz"
        write_atomic(labels, gzip.compress(image.to_bytes(), mtime=0))
        rows = ["index\tname\tdescription"] + [
            f"{k + 1}\t{name}\t{ROI_DESCRIPTIONS[name]}" for k, name in enumerate(ROI_NAMES)
        ]
        names = folder / "rois.tsv"
        write_atomic(names, ("\n".join(rows) + "\n").encode())
        return labels, names

    # -- the ground truth -------------------------------------------------------------------------

    def voxel_responses(self, pixels: npt.NDArray[np.floating[Any]] | torch.Tensor) -> Array:
        """Each ROI voxel's true response (percent signal change at the peak of a 1 s presentation).

        ``pixels``: (n, 3, H, W) on 0..1. Returns (n, n_roi_voxels).
        """
        return self._responses(self._components(pixels))

    def _responses(self, components: Array) -> Array:
        z = self._combine(components) / self._combined_std
        responses: Array = np.maximum(self.tuning.base + self.tuning.gain * z, 0.0)
        return responses

    def _combine(self, components: Array) -> Array:
        z = (components - self._component_mean) / self._component_std
        combined: Array = (z * _mixing(self.tuning.roi)).sum(-1)
        return combined

    def roi_responses(self, pixels: npt.NDArray[np.floating[Any]] | torch.Tensor) -> dict[str, Array]:
        """The mean true response of each ROI to each image: {roi: (n,)}."""
        responses = self.voxel_responses(pixels)
        return {name: responses[:, self.roi_voxels(name)].mean(1) for name in ROI_NAMES}

    def _components(self, pixels: npt.NDArray[np.floating[Any]] | torch.Tensor, batch: int = 32) -> Array:
        images = torch.as_tensor(np.asarray(pixels) if not isinstance(pixels, torch.Tensor) else pixels)
        if images.dim() != 4 or images.shape[1] != 3:
            raise SimulationError(
                f"images have shape {tuple(images.shape)}; expected (n, 3, height, width) on 0..1"
            )
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch):
                out.append(self._drive_batch(images[start : start + batch].float().to(self.device)))
        return np.concatenate(out).astype(np.float64)

    def _drive_batch(self, images: torch.Tensor) -> npt.NDArray[np.float32]:
        """(b, voxels, 4): the early (energy), mid, late and category drives of each voxel."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        t = self.tuning
        # Oriented energy: (b, orientations, frequencies, grid*grid), pooled under each pRF.
        grey = F.avg_pool2d(images.mean(1, keepdim=True) - 0.5, 2)  # energy is computed at half size
        responses = F.conv2d(grey, self._filters, padding=self._filters.shape[-1] // 2)
        b, half = len(images), size // 2
        pairs = responses.view(b, N_ORIENTATIONS * len(FREQUENCIES), 2, half, half)
        energy = pairs.pow(2).sum(2).sqrt()
        energy = F.adaptive_avg_pool2d(energy, ENERGY_GRID).flatten(2)  # (b, channels, grid*grid)
        pooled = torch.einsum("vg,bcg->bvc", self._prf_energy, energy)  # (b, voxels, channels)
        pooled = pooled.view(b, -1, N_ORIENTATIONS, len(FREQUENCIES))
        tuning = torch.from_numpy(_orientation_tuning(t.orientation)).float().to(images.device)  # (v, o)
        freq = (
            torch.from_numpy(np.stack([1 - t.frequency_weight, t.frequency_weight], 1))
            .float()
            .to(images.device)
        )
        early = torch.einsum("bvof,vo,vf->bv", pooled, tuning, freq).clamp_min(0).sqrt()
        # Lite2 features and class probabilities.
        captured: dict[str, torch.Tensor] = {}
        modules = dict(self.backbone.module.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
            for name in (MID_LAYER, LATE_LAYER, CLASSES_LAYER)
        ]
        try:
            self.backbone.module(self.backbone.normalize(images))
        finally:
            for handle in handles:
                handle.remove()
        mid = F.relu(captured[MID_LAYER]).flatten(2)  # (b, c, g)
        late = F.relu(captured[LATE_LAYER]).flatten(2)
        probs = captured[CLASSES_LAYER].softmax(-1)
        w_mid = torch.from_numpy(t.channel_weights["mid"]).float().to(images.device)  # (v, c)
        w_late = torch.from_numpy(t.channel_weights["late"]).float().to(images.device)
        mid_drive = torch.einsum("vg,bcg,vc->bv", self._prf_mid, mid, w_mid).clamp_min(0).sqrt()
        late_drive = torch.einsum("vg,bcg,vc->bv", self._prf_late, late, w_late).clamp_min(0).sqrt()
        assert t.class_weights is not None
        category = torch.log(0.02 + probs @ torch.from_numpy(t.class_weights).float().to(images.device).T)
        return torch.stack([early, mid_drive, late_drive, category], -1).cpu().numpy()


# --- construction ----------------------------------------------------------------------------------


def _affine(shape: tuple[int, int, int], voxel_mm: float) -> Array:
    """Voxel indices to RAS+ millimetres, the volume centred on the origin."""
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = -voxel_mm * (np.asarray(shape) - 1) / 2
    return affine


def _relative(shape: tuple[int, int, int]) -> tuple[Array, Array, Array]:
    """Coordinates of every voxel relative to the brain ellipsoid: -1..1 on each axis inside it."""
    radii = np.array([0.42, 0.45, 0.42]) * np.asarray(shape)
    centre = (np.asarray(shape) - 1) / 2
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (i - centre[0]) / radii[0], (j - centre[1]) / radii[1], (k - centre[2]) / radii[2]


def _brain(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[npt.NDArray[np.bool_], Array]:
    """The brain mask (an ellipsoid) and a smooth tissue contrast around 1 inside it."""
    from scipy.ndimage import gaussian_filter

    u, v, w = _relative(shape)
    brain = u**2 + v**2 + w**2 <= 1.0
    texture = gaussian_filter(rng.normal(size=shape), 3.0)
    texture /= texture.std() + 1e-12
    return brain, np.where(brain, 1.0 + 0.08 * texture, 0.0)


# Where each ROI sits, relative to the brain ellipsoid: |lateral|, anterior, superior; and its radii.
_ROI_PLACES = {
    "V1": ((0.12, -0.86, 0.0), (0.10, 0.10, 0.25)),
    "V2": ((0.18, -0.80, 0.0), (0.15, 0.15, 0.36)),
    "V4": ((0.45, -0.62, -0.25), (0.12, 0.12, 0.16)),
    "LO": ((0.66, -0.58, 0.05), (0.12, 0.12, 0.16)),
    "FFA": ((0.45, -0.32, -0.50), (0.10, 0.13, 0.10)),
    "PPA": ((0.24, -0.22, -0.45), (0.10, 0.13, 0.10)),
}


def _rois(
    shape: tuple[int, int, int], brain: npt.NDArray[np.bool_], rng: np.random.Generator
) -> npt.NDArray[np.int16]:
    """The label image: 0 outside the ROIs, k + 1 inside ``ROI_NAMES[k]``; both hemispheres."""
    u, v, w = _relative(shape)
    labels = np.zeros(shape, dtype=np.int16)
    for k, name in enumerate(ROI_NAMES):
        (cu, cv, cw), (ru, rv, rw) = _ROI_PLACES[name]
        for side in (-1.0, 1.0):
            jitter = rng.uniform(-0.02, 0.02, 3)
            inside = (
                ((u - side * (cu + jitter[0])) / ru) ** 2
                + ((v - cv - jitter[1]) / rv) ** 2
                + ((w - cw - jitter[2]) / rw) ** 2
            ) <= 1.0
            labels[inside & brain & (labels == 0)] = k + 1
    return labels


_FREQUENCY_PREFERENCE = {"V1": 0.7, "V2": 0.5, "V4": 0.3, "LO": 0.3, "FFA": 0.3, "PPA": 0.2}
_PRF_SCALE = {"V1": 1.0, "V2": 1.6, "V4": 3.0}
_GAIN = {"V1": (0.3, 0.6), "V2": (0.3, 0.6), "V4": (0.3, 0.6), "LO": (0.4, 0.7), "FFA": (0.5, 0.8),
         "PPA": (0.5, 0.8)}  # fmt: skip


def _tuning(labels: npt.NDArray[np.int16], rng: np.random.Generator, config: SubjectConfig) -> VoxelTuning:
    coords = np.argwhere(labels > 0)
    roi = labels[tuple(coords.T)].astype(np.intp) - 1
    n = len(coords)
    u, v, w = (a[tuple(coords.T)] for a in _relative(config.shape))
    prf = np.empty((n, 3))
    for k, name in enumerate(ROI_NAMES):
        rows = roi == k
        (_cu, cv, cw), (_ru, rv, rw) = _ROI_PLACES[name]
        side = np.sign(u[rows])  # left hemisphere (u < 0) sees the right visual field
        if name in _PRF_SCALE:
            angle = -np.clip((w[rows] - cw) / rw, -1, 1) * np.pi / 2  # dorsal voxels see the lower field
            eccentricity = 0.05 + 0.9 * np.clip((v[rows] - cv + rv) / (2 * rv), 0, 1)  # posterior = fovea
            prf[rows, 0] = -side * eccentricity * np.cos(angle)
            prf[rows, 1] = eccentricity * np.sin(angle)
            prf[rows, 2] = (0.06 + 0.12 * eccentricity) * _PRF_SCALE[name]
        else:  # large fields around the fovea, biased to the opposite side
            prf[rows, 0] = -side * 0.2
            prf[rows, 1] = 0.0
            prf[rows, 2] = 0.6
    prf[:, :2] += rng.normal(0, 0.03, (n, 2))
    names = [ROI_NAMES[r] for r in roi]
    frequency = np.clip(np.array([_FREQUENCY_PREFERENCE[r] for r in names]) + rng.normal(0, 0.15, n), 0, 1)
    delay = np.clip(
        rng.normal(0, config.hrf_delay_sd_s, n), -2 * config.hrf_delay_sd_s, 2 * config.hrf_delay_sd_s
    )
    low, high = np.array([_GAIN[r] for r in names]).T
    class_weights = np.zeros((n, 1000))
    for k, name in enumerate(ROI_NAMES):
        rows = np.flatnonzero(roi == k)
        if name == "LO":
            class_weights[np.ix_(rows, np.array(OBJECT_CLASSES))] = 1.0
        groups = FACE_GROUPS if name == "FFA" else PLACE_GROUPS if name == "PPA" else None
        if groups is not None:
            mix = rng.dirichlet(np.ones(len(groups)), size=len(rows))
            for g, classes in enumerate(groups.values()):
                class_weights[np.ix_(rows, np.array(classes))] = mix[:, g : g + 1]
    return VoxelTuning(
        coords=coords,
        roi=roi,
        prf=prf,
        orientation=rng.uniform(0, np.pi, n),
        frequency_weight=frequency,
        hrf_delay_s=delay,
        base=rng.uniform(0.8, 1.6, n),
        gain=rng.uniform(low, high),
        channel_weights={
            "mid": _sparse_positive(rng, n, 48, 0.2),
            "late": _sparse_positive(rng, n, 120, 0.1),
        },
        class_weights=class_weights,
    )


def _sparse_positive(rng: np.random.Generator, n: int, channels: int, density: float) -> Array:
    weights = rng.exponential(1.0, (n, channels)) * (rng.random((n, channels)) < density)
    weights[np.arange(n), rng.integers(0, channels, n)] += 1.0  # every voxel reads at least one channel
    normalized: Array = weights / weights.sum(1, keepdims=True)
    return normalized


# Weights of the early, mid, late and category drives, per ROI.
_MIX = {
    "V1": (1.0, 0.0, 0.0, 0.0),
    "V2": (0.85, 0.15, 0.0, 0.0),
    "V4": (0.4, 0.6, 0.0, 0.0),
    "LO": (0.0, 0.2, 0.5, 0.3),
    "FFA": (0.0, 0.0, 0.25, 0.75),
    "PPA": (0.1, 0.0, 0.2, 0.7),
}


def _mixing(roi: npt.NDArray[np.intp]) -> Array:
    table = np.array([_MIX[name] for name in ROI_NAMES])
    return table[roi]


def _orientation_tuning(preferred: Array) -> npt.NDArray[np.float32]:
    angles = np.arange(N_ORIENTATIONS) * np.pi / N_ORIENTATIONS
    tuning = np.exp(2.0 * np.cos(2 * (angles[None, :] - preferred[:, None])))
    normalized: npt.NDArray[np.float32] = (tuning / tuning.sum(1, keepdims=True)).astype(np.float32)
    return normalized


def _gabor_bank(size: int) -> torch.Tensor:
    """Quadrature Gabor pairs: (orientations * frequencies * 2, 1, k, k), frequencies in cycles per image."""
    sigma_max = 0.45 * size / min(FREQUENCIES)
    half = int(np.ceil(2.0 * sigma_max))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    kernels = []
    for o in range(N_ORIENTATIONS):
        theta = o * np.pi / N_ORIENTATIONS
        along = xx * np.cos(theta) + yy * np.sin(theta)
        for cycles in FREQUENCIES:
            wavelength = size / cycles
            sigma = 0.45 * wavelength
            envelope = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
            even = envelope * np.cos(2 * np.pi * along / wavelength)
            even -= envelope * even.sum() / envelope.sum()  # no response to uniform light
            odd = envelope * np.sin(2 * np.pi * along / wavelength)
            norm = np.sqrt((even**2).sum())
            kernels += [even / norm, odd / norm]
    return torch.from_numpy(np.stack(kernels)[:, None]).float()


def _prf_weights(prf: Array, grid: int) -> npt.NDArray[np.float32]:
    """Each voxel's Gaussian pRF over a grid x grid image (row 0 at the top), rows summing to 1."""
    centres = (np.arange(grid) + 0.5) / grid * 2 - 1
    x = np.tile(centres, grid)
    y = np.repeat(-centres, grid)
    d2 = (x[None, :] - prf[:, :1]) ** 2 + (y[None, :] - prf[:, 1:2]) ** 2
    sigma = np.maximum(prf[:, 2:3], 1.0 / grid)
    weights = np.exp(-d2 / (2 * sigma**2))
    normalized: npt.NDArray[np.float32] = (weights / weights.sum(1, keepdims=True)).astype(np.float32)
    return normalized


# --- noise calibration -----------------------------------------------------------------------------


def _voxel_ncsnr(config: SubjectConfig, n: int, rng: np.random.Generator) -> Array:
    """Noise-ceiling SNR per voxel: lognormal around the configured median (single trials)."""
    median = math.sqrt(config.noise_ceiling / (100 - config.noise_ceiling))
    return median * np.exp(rng.normal(0, 0.3, n))


def _trial_efficiency(tr_s: float, config: SubjectConfig) -> float:
    """x'x / sqrt(x' S x) for one isolated reference trial sampled at the TR, averaged over onset phases.

    ``x`` is the trial's response to unit amplitude, ``S`` the noise correlation
    (AR(1) plus the physiological components). A response estimate then has
    noise sd = noise sd per volume / efficiency, so the noise per volume that
    gives a voxel its ncsnr is ``signal_sd * efficiency / ncsnr``.
    """
    n = int(np.ceil(40.0 / tr_s))
    lags = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) * tr_s
    ar = (config.ar1**tr_s) ** (lags / tr_s)
    f_lo, f_hi = PHYSIO_FREQUENCIES
    with np.errstate(invalid="ignore", divide="ignore"):
        physio = np.where(lags > 0, (np.sin(2 * np.pi * f_hi * lags) - np.sin(2 * np.pi * f_lo * lags))
                          / (2 * np.pi * lags * (f_hi - f_lo)), 1.0)  # fmt: skip
    correlation = (1 - config.physio_fraction) * ar + config.physio_fraction * physio
    efficiencies = []
    for phase in np.arange(4) / 4 * tr_s:
        t = np.arange(n) * tr_s + phase
        x = hrf_integral(t) - hrf_integral(t - config.reference_duration_s)
        efficiencies.append(x @ x / math.sqrt(x @ correlation @ x))
    return float(np.mean(efficiencies))


PHYSIO_FREQUENCIES = (0.05, 0.3)  # Hz: respiration and cardiac cycles as a TR of 1-3 s aliases them
