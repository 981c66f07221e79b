"""ROI signals: an atlas (NIfTI label image + TSV of names) applied to each volume as it arrives.

The atlas is the format sessions take ROIs in (and the virtual subject
writes): a label image, 0 outside every ROI, and a TSV with at least the
columns ``index`` and ``name``. It must share the run's voxels: the same
grid, or the same voxel centres with axes flipped or swapped (looked up in
the volume's own order, exactly); any other grid is refused with both
geometries named, never resampled silently. Per volume, :meth:`RoiSignals.extract` gives each ROI's
mean and the values of the voxels the encoding model uses, by flat index:
a few microseconds for thousands of voxels.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

from db.base import ConfigError

__all__ = ["RoiAtlas", "RoiSignals", "resample_atlas"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RoiAtlas:
    """Labels on a voxel grid and the names of the ROIs they number."""

    labels: npt.NDArray[np.int16]
    affine: Array
    names: dict[int, str]

    @classmethod
    def load(cls, labels_path: Path, names_path: Path) -> RoiAtlas:
        """Read a label image and its TSV; every label in the image needs a name."""
        try:
            image = nib.load(labels_path)
            labels = np.asarray(image.dataobj).astype(np.int16)  # type: ignore[attr-defined]
        except Exception as exc:  # nibabel raises many types for a bad file
            raise ConfigError(f"ROI atlas {labels_path} cannot be read as NIfTI: {exc}") from exc
        if labels.ndim != 3:
            raise ConfigError(
                f"ROI atlas {labels_path} has shape {labels.shape}; it must be one 3D label image"
            )
        try:
            with open(names_path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
        except OSError as exc:
            raise ConfigError(f"ROI names {names_path} cannot be read: {exc.strerror or exc}") from exc
        if not rows or not {"index", "name"} <= set(rows[0]):
            raise ConfigError(f"ROI names {names_path} need the columns index and name (tab-separated)")
        try:
            names = {int(r["index"]): r["name"].strip() for r in rows}
        except ValueError as exc:
            raise ConfigError(f"ROI names {names_path}: an index is not an integer ({exc})") from exc
        unnamed = sorted({int(v) for v in np.unique(labels)} - {0} - set(names))
        if unnamed:
            raise ConfigError(f"labels {unnamed} in {labels_path} have no name in {names_path}")
        return cls(labels=labels, affine=np.asarray(image.affine, dtype=np.float64), names=names)  # type: ignore[attr-defined]

    @property
    def voxel_mm(self) -> Array:
        """Voxel sizes along the grid's three axes, from the affine."""
        sizes: Array = np.sqrt((self.affine[:3, :3] ** 2).sum(0))
        return sizes

    def labelled_voxels(self) -> npt.NDArray[np.intp]:
        """(n, 3) indices of every voxel in an ROI: the voxels a session's encoding model is fitted on."""
        return np.argwhere(self.labels > 0)

    def mask(self, name: str) -> npt.NDArray[np.bool_]:
        index = {v: k for k, v in self.names.items()}.get(name)
        if index is None:
            raise ConfigError(f"no ROI named {name!r}; the atlas has {', '.join(self.names.values())}")
        mask: npt.NDArray[np.bool_] = self.labels == index
        return mask


class RoiSignals:
    """Per-volume ROI means and model-voxel values, for volumes on the atlas's grid.

    Parameters
    ----------
    atlas : RoiAtlas
    voxels : (n, 3) int array, optional
        The voxels whose values the encoding model needs (voxel indices).
    """

    def __init__(self, atlas: RoiAtlas, voxels: npt.ArrayLike | None = None) -> None:
        self.atlas = atlas
        self.roi_names = [atlas.names[k] for k in sorted(atlas.names)]
        shape = atlas.labels.shape
        self._roi_index = [np.flatnonzero(atlas.mask(name).ravel()) for name in self.roi_names]
        empty = [n for n, idx in zip(self.roi_names, self._roi_index, strict=True) if len(idx) == 0]
        if empty:
            raise ConfigError(f"ROI(s) {', '.join(empty)} have no voxels in the atlas")
        coords = np.zeros((0, 3), dtype=np.intp) if voxels is None else np.asarray(voxels, dtype=np.intp)
        if coords.size and (coords.min() < 0 or np.any(coords.max(0) >= shape)):
            raise ConfigError(f"model voxels lie outside the atlas grid {shape}")
        self.voxel_index = (
            np.ravel_multi_index(tuple(coords.T), shape) if coords.size else np.zeros(0, np.intp)
        )
        # Where the ROIs' voxels and the model voxels lie in a volume: the atlas's own flat indices, until
        # check() meets volumes whose axes run another way.
        self._rois_in_volume, self._voxels_in_volume = self._roi_index, self.voxel_index
        self._shape: tuple[int, ...] = shape
        self._affine: Array = atlas.affine

    def check(self, shape: tuple[int, ...], affine: Array) -> None:
        """Take volumes of this geometry: the atlas's grid, or the same voxels with axes flipped or swapped.

        A volume whose axes run another way (single-slice DICOM stacked head to foot, say) holds the
        same voxel centres: the ROIs are looked up in its own order, exactly, with no resampling. Any
        other grid is refused with both geometries named.
        """
        atlas_shape = self.atlas.labels.shape
        self._shape, self._affine = tuple(shape), np.asarray(affine, dtype=np.float64)
        if tuple(shape) == atlas_shape and np.allclose(affine, self.atlas.affine, atol=1e-3):
            self._rois_in_volume, self._voxels_in_volume = self._roi_index, self.voxel_index
            return
        to_volume = np.linalg.solve(np.asarray(affine, dtype=np.float64), self.atlas.affine)
        rotation = np.round(to_volume[:3, :3])
        same_voxels = (
            len(shape) == 3
            and np.allclose(to_volume[:3], np.round(to_volume[:3]), atol=1e-3)
            and sorted(np.abs(rotation).sum(0)) == [1, 1, 1]
        )
        if same_voxels:  # a signed permutation: where each atlas voxel is in the volume
            ijk = np.indices(atlas_shape).reshape(3, -1)
            mapped = (rotation @ ijk + np.round(to_volume[:3, 3:4])).astype(np.intp)
            same_voxels = mapped.min() >= 0 and bool(np.all(mapped.max(1) < np.asarray(shape)))
        if not same_voxels:
            raise ConfigError(
                f"volumes of shape {tuple(shape)} with affine {np.round(affine, 3).tolist()} are not on "
                f"the ROI atlas's grid {atlas_shape} {np.round(self.atlas.affine, 3).tolist()}; "
                "register the atlas to the run's reference volume first"
            )
        in_volume = np.ravel_multi_index(tuple(mapped), tuple(shape))  # atlas flat index -> the volume's
        self._rois_in_volume = [in_volume[idx] for idx in self._roi_index]
        self._voxels_in_volume = in_volume[self.voxel_index]

    def place(self, params: npt.ArrayLike, voxel_mm: npt.ArrayLike) -> int:
        """Follow the head to where :meth:`RigidRegistration.register` found it (``params``) in this run.

        Called after :meth:`check`, with the run's first volume registered to the session's reference on
        the same grid: each ROI voxel and model voxel is looked up at its nearest voxel in the moved head.
        Returns how many ROI voxels moved out of the grid (left out of the means).
        """
        grid = (self._shape, self._affine)
        return self.place_across(params, voxel_mm, grid, grid)

    def place_across(
        self,
        params: npt.ArrayLike,
        voxel_mm: npt.ArrayLike,
        reference: tuple[tuple[int, ...], Array],
        volume: tuple[tuple[int, ...], Array],
    ) -> int:
        """:meth:`place` for volumes on any grid, the reference's or another (``(shape, affine)`` each).

        Each atlas voxel goes through the affines to the reference's grid, moves with the head there
        (``params``, as registered in the reference's grid), and is looked up at its nearest voxel of the
        volume's grid: the atlas and the model's voxels resampled onto the day's grid. Returns how many
        ROI voxels fall outside it.
        """
        from loop.analysis.motion import locate

        (reference_shape, reference_affine), (shape, affine) = reference, volume
        atlas_to_reference = np.linalg.solve(reference_affine, self.atlas.affine)
        reference_to_volume = np.linalg.solve(np.asarray(affine, np.float64), reference_affine).astype(
            np.float64
        )
        atlas_shape = self.atlas.labels.shape

        def located(flat: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
            ijk = np.stack(np.unravel_index(flat, atlas_shape), 1).astype(np.float64)
            where = ijk @ atlas_to_reference[:3, :3].T + atlas_to_reference[:3, 3]
            return locate(
                where, reference_shape, voxel_mm, params, to_volume=(reference_to_volume, tuple(shape))
            )

        rois, gone = [], 0
        for idx in self._roi_index:
            found, inside = located(idx)
            gone += int((~inside).sum())
            rois.append(found[inside] if inside.any() else found)
        self._rois_in_volume = rois
        self._voxels_in_volume = located(self.voxel_index)[0]
        self._shape, self._affine = tuple(shape), np.asarray(affine, dtype=np.float64)
        return gone

    @property
    def rois_in_volume(self) -> list[npt.NDArray[np.intp]]:
        """Each ROI's voxels (in ``roi_names`` order) as flat indices into the volumes :meth:`check` took."""
        return list(self._rois_in_volume)

    def extract(self, volume: npt.ArrayLike) -> tuple[Array, Array]:
        """(ROI means in atlas order, model-voxel values) of one volume."""
        flat = np.asarray(volume).ravel()
        means = np.array([flat[idx].mean(dtype=np.float64) for idx in self._rois_in_volume])
        return means, flat[self._voxels_in_volume].astype(np.float64)


def resample_atlas(atlas: RoiAtlas, shape: tuple[int, int, int], affine: npt.ArrayLike) -> RoiAtlas:
    """``atlas`` on another grid (``shape``, ``affine``): each voxel takes the label at its centre.

    A lab's atlas drawn on an anatomy or on another session's grid is put on the session's grid this
    way (nearest neighbour, through the two affines: any voxel size, field of view and orientation).
    """
    from nibabel.processing import resample_from_to

    image = nib.Nifti1Image(atlas.labels.astype(np.int16), atlas.affine)
    target = np.asarray(affine, dtype=np.float64)
    moved = resample_from_to(image, (tuple(shape), target), order=0, mode="constant", cval=0)
    labels = np.asarray(moved.dataobj).astype(np.int16)
    return RoiAtlas(labels=labels, affine=target, names=dict(atlas.names))
