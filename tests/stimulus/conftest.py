"""Factories for the stimulus tests: the embedded backbone and natural crops, made once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from PIL import Image

from stimulus import Backbone, EncodingConfig, EncodingModel, extract_features, load_backbone, natural_crops


@pytest.fixture(scope="session", autouse=True)
def _two_threads() -> None:
    # CI has 2 cores; more threads only contend.
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def lite0() -> Backbone:
    return load_backbone("efficientnet-lite0")


@pytest.fixture(scope="session")
def crops() -> npt.NDArray[np.float32]:
    """400 natural images of 64 px: enough for a fit, small enough for a 2-core CI."""
    return natural_crops(400, size=64, seed=7)


ROI_NAMES = ("A", "B", "C")
N_ROI_VOXELS, N_DIVERSE = 10, 150


@pytest.fixture(scope="session")
def roi_model(crops: npt.NDArray[np.float32]) -> EncodingModel:
    """A model of three ROIs of 10 voxels that share a tuning each, and 150 voxels of varied tuning ("D").

    Fitted on 300 crops; the last 100 crops are held out.
    """
    model = EncodingModel(EncodingConfig(image_size=64, n_permutations=200, layerwise=False))
    raw = np.concatenate(extract_features(model.extractor, crops[:300], standardized=False), axis=1)
    x = (raw - raw.mean(axis=0)) / (raw.std(axis=0) + 1e-6)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    rng = np.random.default_rng(0)
    shared = [
        vt[:50].T @ (rng.standard_normal((50, 1)) + 0.3 * rng.standard_normal((50, N_ROI_VOXELS)))
        for _ in ROI_NAMES
    ]
    weights = np.concatenate([*shared, vt[:100].T @ rng.standard_normal((100, N_DIVERSE))], axis=1)
    signal = x @ weights
    responses = signal + 0.5 * signal.std(axis=0) * rng.standard_normal(signal.shape)
    labels = [name for name in ROI_NAMES for _ in range(N_ROI_VOXELS)] + ["D"] * N_DIVERSE
    return model.fit(crops[:300], responses, groups=np.repeat(np.arange(10), 30), roi_labels=labels)


@pytest.fixture
def stimuli(tmp_path: Path) -> dict[str, str]:
    """Three small PNGs (red, green, blue) in tmp_path, by name, with their SHA-256: a run plan's images."""
    hashes = {}
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        path = tmp_path / f"img{k}.png"
        Image.new("RGB", (16, 16), colour).save(path)
        hashes[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes
