"""Factories for the stimulus tests: the embedded backbone and natural crops, made once."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from stimulus import Backbone, load_backbone, natural_crops


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
