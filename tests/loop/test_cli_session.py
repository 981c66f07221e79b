"""`cortexloop session run` as an operator meets it: what cannot run is said before any wait."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from db import open_database
from loop.rehearsal import record_rehearsal

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def session_file(db_path: Path, tmp_path: Path) -> Path:
    """A session file naming a completed session (the rehearsal's), with no presenter or bridge running."""
    with open_database(db_path, create=True) as database:
        record_rehearsal(database, tmp_path / "stimuli")
    path = tmp_path / "session.toml"
    path.write_text(
        f'[session]\nsubject = "sub-rehearsal"\nsession = "ses-01"\ndatabase = "{db_path}"\n'
        '[scanner]\npresenter = "tcp://127.0.0.1:1"\nbridge = "tcp://127.0.0.1:2"\nkey_file = "k.key"\n'
    )
    return path


def _refused(result: subprocess.CompletedProcess[str], elapsed: float) -> str:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert elapsed < 25, "refused only after waiting on the presenter (30 s)"
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("cortexloop: error: ")]
    return line


def test_a_completed_session_is_refused_at_once_with_its_report_command(
    cortexloop: Cli, session_file: Path, db_path: Path
) -> None:
    assert cortexloop("bridge", "keygen", session_file.parent / "k.key").returncode == 0
    started = time.monotonic()
    line = _refused(
        cortexloop("session", "run", "--config", session_file, "--resume"), time.monotonic() - started
    )
    assert "session sub-rehearsal/ses-01 is completed; nothing is left to run" in line
    assert f"`cortexloop report sub-rehearsal/ses-01 --db {db_path} --out report.html`" in line


def test_starting_a_recorded_session_again_names_the_resume_command(
    cortexloop: Cli, session_file: Path
) -> None:
    assert cortexloop("bridge", "keygen", session_file.parent / "k.key").returncode == 0
    started = time.monotonic()
    line = _refused(cortexloop("session", "run", "--config", session_file), time.monotonic() - started)
    assert "session sub-rehearsal/ses-01 is in the database already (completed)" in line
    assert f"`cortexloop session run --config {session_file} --resume`" in line
    other = session_file.with_name("other.toml")
    other.write_text(session_file.read_text().replace('"ses-01"', '"ses-02"'))
    started = time.monotonic()
    line = _refused(cortexloop("session", "run", "--config", other, "--resume"), time.monotonic() - started)
    assert "nothing to resume: the database has no session sub-rehearsal/ses-02" in line


def test_a_labs_atlas_on_another_grid_is_put_on_the_sessions_grid(cortexloop: Cli, tmp_path: Path) -> None:
    """An atlas drawn at 2 mm in another orientation lands on the session's 3 mm grid where it was drawn."""
    import nibabel as nib
    import numpy as np

    from loop.analysis.roi import RoiAtlas, resample_atlas

    # The session's grid (3 mm), and two ROIs drawn on it: a ball and a slab.
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-96.0, -96.0, -54.0]
    i, j, k = np.indices((64, 64, 36))
    labels = np.zeros((64, 64, 36), np.int16)
    labels[(i - 20) ** 2 + (j - 30) ** 2 + (k - 18) ** 2 <= 36] = 1
    labels[(i > 40) & (i < 46) & (j > 10) & (j < 50) & (k > 5) & (k < 12)] = 2
    names = tmp_path / "rois.tsv"
    names.write_text("index\tname\n1\tFFA\n2\tPPA\n")
    own = RoiAtlas(labels=labels, affine=affine, names={1: "FFA", 2: "PPA"})
    # The lab's atlas: 2 mm voxels, the first axis flipped, the field of view a little shifted.
    fine = np.diag([-2.0, 2.0, 2.0, 1.0])
    fine[:3, 3] = [97.0, -95.0, -53.0]
    lab = resample_atlas(own, (96, 96, 54), fine)
    nib.save(nib.Nifti1Image(lab.labels, lab.affine), tmp_path / "lab.nii.gz")
    reference = tmp_path / "reference.npz"  # a session's reference volume: its grid is the session's
    np.savez(reference, volume=np.zeros((64, 64, 36), np.float32), affine=affine)
    result = cortexloop(
        "session",
        "atlas",
        tmp_path / "lab.nii.gz",
        names,
        "--reference",
        reference,
        "--out",
        tmp_path / "on.nii.gz",
    )
    assert result.returncode == 0, result.stderr
    assert "in the session file: [atlas] labels" in result.stdout
    placed = RoiAtlas.load(tmp_path / "on.nii.gz", names)
    np.testing.assert_allclose(placed.affine, affine)
    for index, name in own.names.items():
        mine, theirs = own.labels == index, placed.labels == index
        overlap = (mine & theirs).sum() / (mine | theirs).sum()
        print(f"{name}: {mine.sum()} voxels drawn, {theirs.sum()} placed, overlap {overlap:.2f}")
        assert overlap > 0.8
    # An atlas of somewhere else is refused, naming the ROIs that found no voxel there.
    away = np.array(fine)
    away[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(lab.labels, away), tmp_path / "away.nii.gz")
    result = cortexloop(
        "session",
        "atlas",
        tmp_path / "away.nii.gz",
        names,
        "--reference",
        reference,
        "--out",
        tmp_path / "x.nii",
    )
    assert result.returncode == 1
    assert "FFA, PPA of" in result.stderr
    assert "cover no voxel centre" in result.stderr
