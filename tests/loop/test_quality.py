"""A run's quality, checked against volumes made with a known noise, drift and motion, and known designs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from loop.analysis.design import Trial
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.quality import QualityUnavailableError, design_diagnostics, run_quality
from scanner_bridge.writers import nifti_bytes

SHAPE = (32, 32, 16)
VOXEL_MM = 3.0
TR_S = 2.0
N = 60
MOVED = 40  # from this volume on the head sits 1.5 mm towards -x


def _atlas() -> RoiAtlas:
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[8:14, 8:14, 6:10] = 1
    labels[18:24, 18:24, 6:10] = 2
    return RoiAtlas(labels=labels, affine=np.diag([VOXEL_MM] * 3 + [1.0]), names={1: "A", 2: "B"})


def _head() -> np.ndarray:
    """A smooth head-like image: a bright ellipsoid with structure inside, so registration has edges."""
    x, y, z = np.indices(SHAPE, dtype=np.float64)
    inside = ((x - 15.5) / 13) ** 2 + ((y - 15.5) / 13) ** 2 + ((z - 7.5) / 7) ** 2 < 1
    texture = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=SHAPE), 2) * 2000
    return ndimage.gaussian_filter(inside * 1000.0 + inside * texture, 1) + 100


def _write_run(folder: Path, *, sd: float, drift_per_s: float) -> list[tuple[int, Path | None]]:
    rng = np.random.default_rng(1)
    head = _head()
    moved = ndimage.shift(head, (-1.5 / VOXEL_MM, 0, 0), order=3, mode="nearest")
    files: list[tuple[int, Path | None]] = []
    for k in range(N):
        base = moved if k >= MOVED else head
        data = base + drift_per_s * k * TR_S + rng.normal(0, sd, SHAPE)
        path = folder / f"vol_{k:05d}.nii"
        path.write_bytes(nifti_bytes(data.astype(np.float32), np.diag([VOXEL_MM] * 3 + [1.0]), tr_s=TR_S))
        files.append((k, path))
    return files


def test_tsnr_counts_noise_not_drift_and_motion_is_found_where_the_head_moved(tmp_path: Path) -> None:
    files = _write_run(tmp_path, sd=10.0, drift_per_s=0.5)
    files[5] = (5, None)  # recorded missing
    files[6] = (6, tmp_path / "gone.nii")  # its file is gone
    quality = run_quality(files, TR_S, RoiSignals(_atlas()))
    assert quality.left_out == 2
    assert list(quality.times_s[:6]) == [0.0, 2.0, 4.0, 6.0, 8.0, 14.0]  # the missing ones' times skipped
    # The drift (60 over the run) would triple the sd if it were counted; only the noise of sd 10 is.
    head = _head()
    for name, label in (("A", 1), ("B", 2)):
        expected = np.median(head[_atlas().labels == label]) / 10.0
        assert quality.roi_tsnr[name] == pytest.approx(expected, rel=0.2), name
    assert quality.carpet.shape == (2 * 6 * 6 * 4, N - 2)
    assert quality.carpet_rois == [("A", 0), ("B", 144)]
    np.testing.assert_allclose(quality.carpet.std(1), 1.0, atol=1e-3)  # each row in units of its sd
    still, moved = quality.motion[: MOVED - 2], quality.motion[MOVED - 2 :]
    assert np.abs(still).max() < 0.2  # mm and degrees
    # The parameters t of V(x + t) = reference (loop.analysis.motion): -1.5 mm along x.
    assert np.median(moved[:, 0]) == pytest.approx(-1.5, abs=0.2)
    assert np.abs(moved[:, 1:3]).max() < 0.2
    assert np.abs(moved[:, 3:]).max() < 0.2


def test_a_run_without_its_files_says_how_many_are_at_hand(tmp_path: Path) -> None:
    files = [*_write_run(tmp_path, sd=10.0, drift_per_s=0.0)[:2], (2, None)]
    with pytest.raises(QualityUnavailableError, match="2 of the run's 3 volume files are at hand"):
        run_quality(files, TR_S, RoiSignals(_atlas()))


def test_trials_packed_closer_overlap_more_and_their_estimates_inflate_as_a_regression_says() -> None:
    sparse = design_diagnostics([Trial(10 + 30 * k, 1.0) for k in range(8)], TR_S, 130)
    packed = design_diagnostics([Trial(4 + 4 * k, 1.0) for k in range(60)], TR_S, 130)
    assert sparse.largest_neighbour_r < 0.05
    assert sparse.vif.max() < 1.5  # each trial alone, but for the drifts
    assert 0.3 < packed.largest_neighbour_r < 0.6
    assert np.median(packed.vif) > 5 * np.median(sparse.vif)
    # Each VIF is 1 / (1 - R^2) of that trial's regressor on every other column of the design.
    matrix, j = packed.matrix, 10
    others = np.delete(matrix, j, 1)
    fitted = others @ np.linalg.lstsq(others, matrix[:, j], rcond=None)[0]
    r2 = 1 - ((matrix[:, j] - fitted) ** 2).sum() / ((matrix[:, j] - matrix[:, j].mean()) ** 2).sum()
    assert packed.vif[j] == pytest.approx(1 / (1 - r2), rel=1e-6)
