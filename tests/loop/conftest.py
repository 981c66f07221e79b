"""The ``cortexloop`` command as an operator runs it: a separate process, output captured."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from db import open_database
from loop.acquisition import InProcessAcquisition
from loop.config import SessionConfig
from loop.session import Controller
from loop.simulation.scanner import SimulatedScanner
from loop.simulation.subject import SubjectConfig, VirtualSubject
from stimulus.present import VirtualClock

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


# -- a small session acquired in this process (the controller's rules, a study's sessions) -------------


def small_config(out: Path) -> SessionConfig:
    """A session of 12 training images and no rounds, recorded in ``out``."""
    c = SessionConfig()
    truth = out / "export-truth"  # where the simulated scanner writes the atlas and the ground truth
    return dataclasses.replace(
        c,
        session=dataclasses.replace(c.session, output=str(out), database=str(out / "db.sqlite")),
        atlas=dataclasses.replace(c.atlas, labels=str(truth / "rois.nii.gz"), names=str(truth / "rois.tsv")),
        simulation=dataclasses.replace(c.simulation, truth=str(truth)),
        training=dataclasses.replace(c.training, images=12, repeated=4, repeats=2, lead_out_s=12.0),
        rounds=dataclasses.replace(c.rounds, count=0),
        model=dataclasses.replace(c.model, budget=100),
    )


def controller(
    tmp_path: Path,
    kind: type[InProcessAcquisition],
    adjust: Callable[[SessionConfig], SessionConfig] = lambda c: c,
    fmt: str = "nifti",
    subject: VirtualSubject | None = None,
    **kwargs: Any,
) -> tuple[Controller, Path]:
    """A controller of ``adjust(small_config)`` acquiring through ``kind`` from a virtual subject (seed 4)."""
    out = tmp_path / "session"
    config = adjust(small_config(out))
    subject = subject or VirtualSubject(SubjectConfig.from_spec("default", seed=4))
    truth = out / "export-truth"
    scanner = SimulatedScanner(
        subject,
        out / "export",
        tr_s=2.0,
        clock=VirtualClock(),
        fmt=fmt,
        stimulus_dir=out / "stimuli",
        truth_dir=truth,
    )
    acquisition = kind(scanner, export_dir=out / "export", **kwargs)
    database = open_database(out / "db.sqlite", create=True)
    return Controller(config, database, acquisition), out
