"""The ``cortexloop`` command as an operator runs it: a separate process, output captured."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
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


# -- the suite's whole default session and its day 2, run beside the other tests ----------------------


DAY_TWO_MOVE = {"head_mm": (2.5, -2.5, 2.0), "head_deg": (3.0, -3.0, 2.5)}  # 4.1 mm and 4.9 degrees
SESSION_TIMEOUT_S = 900


class StudySessions:
    """Seed 0's whole default session (day 1), then its day 2, each ``cortexloop simulate --in-process``.

    Each runs in a process of its own with one thread (as the benchmarks run them), started as soon
    as the suite knows it needs them, so that the other tests run beside it on the second core. Day 2
    starts from day 1 (``[model] start``), in a copy of its database, its head moved by
    ``DAY_TWO_MOVE``, with no training run and one round, as soon as day 1 has ended well.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.day_one, self.day_two = root / "seed0", root / "day2"
        self._one = self._simulate(["--seed", "0", "--out", str(self.day_one)], root / "day1.log")
        self._two: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._starting_error: BaseException | None = None
        self._starter = threading.Thread(target=self._start_day_two_after_day_one, daemon=True)
        self._starter.start()

    @staticmethod
    def _simulate(args: list[str], log: Path) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "loop.cli",
            "--log-level",
            "warning",
            "simulate",
            "--in-process",
            *args,
        ]
        with log.open("wb") as out:
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
            )

    def _finished(self, process: subprocess.Popen[bytes], log: Path) -> str:
        try:
            process.wait(timeout=SESSION_TIMEOUT_S)
        finally:
            process.kill()
        output = log.read_text(errors="replace")
        assert process.returncode == 0, output[-4000:]
        return output

    def wait_day_one(self) -> Path:
        """Day 1's folder, once its session has ended (and day 2 has taken what it needs of it)."""
        output = self._finished(self._one, self.root / "day1.log")
        assert "target ROIs driven above non-target images" in output
        self._starter.join()
        if self._starting_error is not None:
            raise self._starting_error
        return self.day_one

    def _start_day_two_after_day_one(self) -> None:
        """In the background: day 2 starts when day 1 has ended well, not when a test first asks for it."""
        try:
            if self._one.wait() == 0 and not self._stopping.is_set():
                self._start_day_two()
        except BaseException as exc:  # raised again in the test that waits for day 1
            self._starting_error = exc

    def _start_day_two(self) -> None:
        folder = self.day_two
        folder.mkdir()
        with (
            sqlite3.connect(self.day_one / "cortexloop.sqlite") as source,
            sqlite3.connect(folder / "study.sqlite") as target,
        ):
            source.backup(target)
        shutil.copy(self.day_one / "reference.npz", folder / "day1-reference.npz")  # as a lab keeps it
        move = "".join(f"{key} = {list(value)}\n" for key, value in DAY_TWO_MOVE.items())
        (folder / "subject.toml").write_text(move)
        (folder / "day2.toml").write_text(
            f'[session]\nsession = "ses-02"\n\n[atlas]\nreference = "{folder / "day1-reference.npz"}"\n\n'
            "[training]\nimages = 0\nrepeated = 0\n\n[rounds]\ncount = 1\n\n"
            f'[model]\nstart = ["sub-01/ses-01"]\n\n[simulation]\nsubject = "{folder / "subject.toml"}"\n'
        )
        log = self.root / "day2.log"
        self._two = self._simulate(
            ["--seed", "0", "--config", str(folder / "day2.toml"), "--db", str(folder / "study.sqlite"),
             "--out", str(folder / "session")], log,
        )  # fmt: skip
        # Day 2 reads day 1's folder only as it starts (its model, runs and images); then the tests may
        # move day 1's folder about.
        deadline = time.monotonic() + 300
        while "(the start model:" not in log.read_text(errors="replace") and self._two.poll() is None:
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            if self._stopping.wait(0.5):
                return

    def wait_day_two(self) -> Path:
        """Day 2's folder (its database ``study.sqlite``, its session in ``session/``), once it has ended."""
        self.wait_day_one()
        assert self._two is not None
        self._finished(self._two, self.root / "day2.log")
        return self.day_two

    def stop(self) -> None:
        self._stopping.set()
        self._one.kill()
        self._starter.join()
        for process in (self._one, self._two):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


STUDY = pytest.StashKey[StudySessions]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the whole sessions now when a collected test needs them: they run beside the others.

    The tests that read them run last, so that the suite does not stand waiting for them to end. (Run at
    a lower priority beside them, the rest of the suite took 18:32 rather than 17:04: the sessions then
    ended early, and the other tests waited for the processor instead.)
    """
    needs = [item for item in items if "study_sessions" in getattr(item, "fixturenames", ())]
    if needs:
        config.stash[STUDY] = StudySessions(Path(tempfile.mkdtemp(prefix="cortexloop-sessions-")))
        items[:] = [item for item in items if item not in needs] + needs


def pytest_unconfigure(config: pytest.Config) -> None:
    if STUDY in config.stash:
        config.stash[STUDY].stop()


@pytest.fixture(scope="session")
def study_sessions(request: pytest.FixtureRequest) -> StudySessions:
    """The whole default session of seed 0 and its day 2, started when the suite was collected."""
    if STUDY not in request.config.stash:
        request.config.stash[STUDY] = StudySessions(Path(tempfile.mkdtemp(prefix="cortexloop-sessions-")))
    return request.config.stash[STUDY]
