"""Head motion: rigid registration of each volume to a reference, and framewise displacement.

Inverse-compositional Gauss-Newton (Baker & Matthews): the reference's
gradient and the six steepest-descent images are computed once, at the few
thousand voxels where the reference has the most edge (the head's outline
and tissue boundaries); each volume then costs a few trilinear samplings at
those points and a 6 x 6 solve, warm-started from the previous volume's
estimate. Parameters are translations in millimetres along the volume's
axes and small rotations in radians about its centre; ``V(R x + t)`` matches
the reference at ``x``. Framewise displacement is Power et al.'s: the sum
of absolute changes in translation plus rotation as arc length on a 50 mm
sphere.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.ndimage import map_coordinates

__all__ = ["RigidRegistration", "framewise_displacement", "locate", "rotation_angle_deg", "rotation_matrix"]

Array = npt.NDArray[np.float64]

HEAD_RADIUS_MM = 50.0


def rotation_matrix(r: Array) -> Array:
    """Rotation matrix for small angles about x, y, z (applied in that order)."""
    cx, cy, cz = np.cos(r)
    sx, sy, sz = np.sin(r)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rotation: Array = rz @ ry @ rx
    return rotation


def rotation_angle_deg(r: npt.ArrayLike) -> float:
    """The whole turn of a rotation (degrees about its axis) from its angles about x, y and z (radians)."""
    cosine = (np.trace(rotation_matrix(np.asarray(r, dtype=np.float64))) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


class RigidRegistration:
    """Registers volumes to one reference volume (the run's first, usually).

    Parameters
    ----------
    reference : (nx, ny, nz) array
    voxel_mm : (3,) voxel sizes in millimetres
    points : int
        How many high-gradient voxels drive the fit.
    iterations : int
    """

    def __init__(
        self, reference: npt.ArrayLike, voxel_mm: npt.ArrayLike, *, points: int = 3000, iterations: int = 3
    ) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        self.voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
        self.iterations = iterations
        self._centre = (np.asarray(ref.shape) - 1) / 2
        gradient = np.stack(np.gradient(ref), -1) / self.voxel_mm  # per mm
        magnitude = np.linalg.norm(gradient, axis=-1)
        interior = np.zeros(ref.shape, dtype=bool)
        interior[1:-1, 1:-1, 1:-1] = True
        candidates = np.flatnonzero((magnitude * interior).ravel())
        keep = candidates[np.argsort(magnitude.ravel()[candidates])[-points:]]
        index = np.stack(np.unravel_index(keep, ref.shape), 1).astype(np.float64)
        self._x = (index - self._centre) * self.voxel_mm  # mm, about the centre
        g = gradient.reshape(-1, 3)[keep]
        self._sd = np.concatenate([g, np.cross(self._x, g)], 1)  # d/dt and d/dr of R(x + t + r x x)
        self._hessian_inv = np.linalg.inv(self._sd.T @ self._sd)
        self._reference = ref.ravel()[keep]
        self._params = np.zeros(6)

    def register(self, volume: npt.ArrayLike) -> Array:
        """(tx, ty, tz in mm, rx, ry, rz in rad) that bring ``volume`` onto the reference."""
        data = np.asarray(volume, dtype=np.float64)
        p = self._params.copy()
        for _ in range(self.iterations):
            moved = self._x @ rotation_matrix(p[3:]).T + p[:3]
            coords = (moved / self.voxel_mm + self._centre).T
            sampled = map_coordinates(data, coords, order=1, mode="nearest")
            step = self._hessian_inv @ (self._sd.T @ (sampled - self._reference))
            p -= step
            if np.abs(step[:3]).max() < 1e-3 and np.abs(step[3:]).max() < 1e-5:
                break
        self._params = p
        return p.copy()

    def match(self, volume: npt.ArrayLike, params: npt.ArrayLike) -> float:
        """How well ``volume`` moved by ``params`` matches the reference: Pearson r at the fit's points.

        Near 1 where the registration found the head; a registration that failed (a turn too large for
        it, another head) leaves it well below.
        """
        p = np.asarray(params, dtype=np.float64)
        moved = self._x @ rotation_matrix(p[3:]).T + p[:3]
        where = (moved / self.voxel_mm + self._centre).T
        sampled = map_coordinates(np.asarray(volume, dtype=np.float64), where, order=1, mode="nearest")
        return float(np.corrcoef(sampled, self._reference)[0, 1])


def framewise_displacement(params: npt.ArrayLike) -> Array:
    """(n_volumes,) framewise displacement in mm from (n_volumes, 6) parameters; 0 for the first."""
    values = np.asarray(params, dtype=np.float64)
    change = np.abs(np.diff(values, axis=0))
    fd = change[:, :3].sum(1) + HEAD_RADIUS_MM * change[:, 3:].sum(1)
    return np.concatenate([[0.0], fd])


def locate(
    indices: npt.ArrayLike,
    shape: tuple[int, ...],
    voxel_mm: npt.ArrayLike,
    params: npt.ArrayLike,
    *,
    to_volume: tuple[Array, tuple[int, ...]] | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where voxels of the reference lie in a volume that :meth:`RigidRegistration.register` gave ``params``.

    Parameters
    ----------
    indices : array of flat indices into a volume of ``shape`` (the reference's grid), or of (n, 3)
        voxel coordinates in it (fractional ones too)
    params : (6,) tx, ty, tz (mm), rx, ry, rz (rad), as ``register`` returns them
    to_volume : (4 x 4 matrix, shape), optional
        For a volume on another grid: the map from the reference's voxel coordinates to the volume's
        (``inv(volume affine) @ reference affine``) and the volume's shape.

    Returns
    -------
    (flat indices of the nearest voxels in the moved volume, whether each lies inside its grid); a voxel
    outside keeps its own index (or 0, when the grids differ).
    """
    p = np.asarray(params, dtype=np.float64)
    mm = np.asarray(voxel_mm, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2
    given = np.asarray(indices)
    if given.ndim == 2:
        ijk, flat = given.astype(np.float64), np.zeros(len(given), dtype=np.intp)
    else:
        flat = given.astype(np.intp)
        ijk = np.stack(np.unravel_index(flat, shape), 1).astype(np.float64)
    moved = (((ijk - centre) * mm) @ rotation_matrix(p[3:]).T + p[:3]) / mm + centre
    target = tuple(shape)
    if to_volume is not None:
        matrix, target = to_volume
        moved = moved @ matrix[:3, :3].T + matrix[:3, 3]
        flat = np.zeros(len(moved), dtype=np.intp)
    nearest = np.round(moved).astype(np.intp)
    inside = np.all((nearest >= 0) & (nearest < np.asarray(target)), axis=1)
    located = flat.copy()
    located[inside] = np.ravel_multi_index(tuple(nearest[inside].T), target)
    return located, inside
