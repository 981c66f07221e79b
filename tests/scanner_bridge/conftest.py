"""Factories for the bridge's tests: the real BOLD run nibabel ships, keys, runs in tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scanner_bridge import RecordedRun, generate_key_file, load_key

FUNCTIONAL = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"


@pytest.fixture(scope="session")
def functional_path() -> Path:
    """20 real BOLD volumes (17 x 21 x 3, TR 2 s) that ship inside nibabel."""
    return FUNCTIONAL


@pytest.fixture(scope="session")
def functional_values() -> np.ndarray:
    return np.asanyarray(nib.load(FUNCTIONAL).dataobj)


@pytest.fixture(scope="session")
def functional_run() -> RecordedRun:
    return RecordedRun.load(FUNCTIONAL)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return generate_key_file(tmp_path / "bridge.key")


@pytest.fixture
def key(key_file: Path) -> bytes:
    return load_key(key_file)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    path = tmp_path / "export"
    path.mkdir()
    return path
