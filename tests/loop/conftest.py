"""The ``cortexloop`` command as an operator runs it: a separate process, output captured."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from loop.simulation.subject import SubjectConfig, VirtualSubject

Cli = Callable[..., subprocess.CompletedProcess[str]]

CORTEXLOOP = Path(sys.executable).with_name("cortexloop")


@pytest.fixture(scope="session")
def cortexloop() -> Cli:
    """Run ``cortexloop --log-level warning ARGS...``; pass ``env=`` to replace the environment."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, timeout: float = 110
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CORTEXLOOP), "--log-level", "warning", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return run


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Seen:
    """Natural images the virtual subject saw, with its true response of every ROI voxel to each."""

    subject: VirtualSubject
    images: npt.NDArray[np.float32]
    truth: npt.NDArray[np.float64]


@pytest.fixture(scope="session")
def seen() -> Seen:
    """Subject 3 and its truth for 1000 natural images at 128 px: once for the in-silico and movie tests."""
    from stimulus.natural import natural_image_set

    subject = VirtualSubject(SubjectConfig(seed=3))
    images = natural_image_set(1000, size=128, seed=77).pixels
    return Seen(subject=subject, images=images, truth=subject.voxel_responses(images))
