"""A simulated session run the way a scanner session runs: every part in a process of its own.

``cortexloop simulate`` starts, in a session folder:

- the presenter (``cortexloop present --no-window --triggers network``),
  on a clock ``speed`` times faster than real time, with frames no shorter
  than 10 ms of real time (:func:`frame_rate`);
- the simulated scanner (``cortexloop bridge simulate --presenter``): it
  writes the virtual subject's atlas and ground truth, then for each plan
  the presenter arms, sends triggers and writes volumes as files;
- the bridge (``cortexloop bridge watch``), one for the whole session, as
  on the scanner's computer: it announces each run's series as it begins
  and the controller takes its run's;
- the controller (``cortexloop session run``) on a session file written
  here, with the endpoints, the key and the atlas filled in.

They talk only over ZeroMQ and the export folder, as in the scanner. This
module supervises them: a controller or a bridge killed mid-session
(SIGKILL, the OOM killer) is started again, the controller with
``--resume`` (at most :data:`MAX_RESTARTS` restarts in all); a presenter or
a scanner that dies, or any part that fails, stops the session, saying
which and how, with everything recorded kept: ``cortexloop simulate
--resume`` (``resume=True``) then starts every part again and acquires the
interrupted run again from its first volume (its files of the interrupted
attempt are set aside in ``export/interrupted-N/``). ``services.json`` in
the folder names every process, for whoever wants to look (or to kill one,
as the tests do).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from db.base import Status, write_atomic
from loop.config import SessionConfig, start_source, to_toml
from loop.errors import SimulationError
from loop.simulation.scanner import run_files
from scanner_bridge import generate_key_file

__all__ = ["MAX_RESTARTS", "SimulatedSession", "frame_rate", "simulation_config"]

MAX_RESTARTS = 3
MIN_FRAME_S = 0.01  # of real time: a presenter asked for shorter frames drops them under load
POLL_S = 0.1
ATLAS_TIMEOUT_S = 120.0  # the scanner builds the virtual subject (and loads its network) first
ARM_TIMEOUT_S = 3600.0  # the scanner waits for each plan as an operator would: the controller may be busy


def frame_rate(speed: float) -> float:
    """The no-window presenter's frame rate at ``speed``: 60 Hz, or fewer frames so each lasts 10 real ms.

    At 20x a 60 Hz frame would last 0.8 ms of real time; a loaded computer misses such frames and
    images stay on for one frame or for two seconds. 5 Hz frames at 20x (200 ms of session time)
    keep onsets and durations exact for whole-second plans.
    """
    return min(60.0, 1.0 / (MIN_FRAME_S * speed))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "loop.cli", *args]


def simulation_config(config: SessionConfig, out: Path) -> SessionConfig:
    """A simulation's session file: everything in ``out``, the virtual subject's atlas, fresh endpoints."""
    out = out.resolve()
    truth = out / "export-truth"
    database = config.database_target
    config = _resolved(config)  # the file's own relative paths, before it is written in ``out``
    return dataclasses.replace(
        config,
        session=dataclasses.replace(
            config.session,
            kind="simulation",
            output=str(out),
            database=database if isinstance(database, str) else str(database.resolve()),
        ),
        scanner=dataclasses.replace(
            config.scanner,
            bridge=f"tcp://127.0.0.1:{_free_port()}",
            presenter=f"tcp://127.0.0.1:{_free_port()}",
            key_file=str(out / "cortexloop.key"),
            stimulus_dir=str(out / "stimuli"),
        ),
        atlas=dataclasses.replace(
            config.atlas, labels=str(truth / "rois.nii.gz"), names=str(truth / "rois.tsv")
        ),
        simulation=dataclasses.replace(config.simulation, truth=str(truth)),
        source=str(out / "session.toml"),
    )


def _resolved(config: SessionConfig) -> SessionConfig:
    """``config`` with the paths it gives relative to its file made absolute (reference, images, models)."""

    def absolute(path: str) -> str:
        return str(config.resolve(path).resolve()) if path else path

    start = tuple(
        str(where.resolve()) if isinstance(where := start_source(config, entry), Path) else entry
        for entry in config.model.start
    )
    return dataclasses.replace(
        config,
        atlas=dataclasses.replace(config.atlas, reference=absolute(config.atlas.reference)),
        training=dataclasses.replace(config.training, image_set=absolute(config.training.image_set)),
        model=dataclasses.replace(config.model, start=start),
    )


class SimulatedSession:
    """One simulated session in ``out``: write its files, start its processes, supervise them."""

    def __init__(self, config: SessionConfig, out: Path, *, console: Console, resume: bool = False) -> None:
        self.resume = resume
        self.out = out.resolve()
        self.console = console
        self.logs = self.out / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: dict[str, IO[bytes]] = {}
        self.config = simulation_config(config, self.out)
        self.config_path = self.out / "session.toml"
        self.n_runs = len(self.config.scanner_runs())  # the training run (if any) and one per round

    # -- running --------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the session to its end; :class:`SimulationError` if a part fails."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        (self.out / "export").mkdir(exist_ok=True)
        if not (self.out / "cortexloop.key").exists():
            generate_key_file(self.out / "cortexloop.key")
        write_atomic(self.config_path, to_toml(self.config).encode())
        c, speed = self.config, self.config.simulation.speed
        common = ("--key-file", c.scanner.key_file)
        first = self._first_run_to_acquire() if self.resume else 1
        try:
            self._start(
                "presenter",
                "present",
                "--no-window",
                "--speed",
                str(speed),
                "--refresh-hz",
                f"{frame_rate(speed):g}",
                "--triggers",
                "network",
                "--endpoint",
                c.scanner.presenter,
                *common,
                "--stimulus-dir",
                c.scanner.stimulus_dir,
                "--events-dir",
                str(self.out / "events"),
                "--trigger-timeout",
                f"{c.scanner.trigger_timeout_s:g}",
            )
            self._start(
                "scanner",
                "bridge",
                "simulate",
                str(self.out / "export"),
                "--tr",
                str(c.scanner.tr_s),
                "--presenter",
                c.scanner.presenter,
                *common,
                "--speed",
                str(speed),
                "--runs",
                str(max(0, self.n_runs - first + 1)),
                "--first-run",
                str(first),
                "--subject",
                c.simulation.subject,
                "--seed",
                str(c.session.seed),
                "--format",
                c.simulation.format,
                "--stimulus-dir",
                c.scanner.stimulus_dir,
                "--truth",
                c.simulation.truth,
                "--arm-timeout",
                str(ARM_TIMEOUT_S),
            )
            self._wait_for_atlas()
            self._start_bridge()
            self._start_controller(resume=self.resume)
            self._supervise()
        finally:
            self._stop_all()

    def _supervise(self) -> None:
        restarts = 0
        while True:
            controller = self.processes["controller"]
            code = controller.poll()
            if code == 0:
                return
            if code is not None:
                if code > 0:
                    raise SimulationError(
                        f"the controller stopped with exit status {code}; see {self._log('controller')}"
                    )
                restarts = self._restart("controller", -code, restarts)
                self._start_controller(resume=True)
                continue
            bridge = self.processes.get("bridge")
            if bridge is not None and (code := bridge.poll()) is not None:
                if code >= 0:
                    raise SimulationError(
                        f"the bridge stopped (exit status {code}); see {self._log('bridge')}"
                    )
                restarts = self._restart("bridge", -code, restarts)  # it reads the run's files again
                self._start_bridge()
            for name in ("presenter", "scanner"):
                code = self.processes[name].poll()
                if code is None or (name == "scanner" and code == 0):
                    continue
                how = f"was killed (signal {-code})" if code < 0 else f"stopped (exit status {code})"
                raise SimulationError(
                    f"the {'simulated scanner' if name == 'scanner' else name} {how}; see {self._log(name)}. "
                    f"Everything recorded is kept: `cortexloop simulate --resume --out {self.out}` starts "
                    "every part again and acquires the interrupted run again"
                )
            time.sleep(POLL_S)

    def _restart(self, name: str, signal_number: int, restarts: int) -> int:
        if restarts >= MAX_RESTARTS:
            raise SimulationError(f"{restarts + 1} parts were killed (the {name} last); giving up")
        self.console.print(f"[yellow]the {name} was killed (signal {signal_number}); resuming it[/]")
        return restarts + 1

    def _first_run_to_acquire(self) -> int:
        """On resume: the first run the database does not hold complete; its files so far set aside."""
        from db import open_database
        from db.queries import session_id, session_runs

        ref = f"{self.config.session.subject}/{self.config.session.session}"
        with open_database(self.config.database_target, read_only=True) as database, database.reader() as s:
            done = len(session_runs(s, session_id(s, ref), status=Status.COMPLETED))
        first = done + 1
        export = self.out / "export"
        leftovers = [
            p for run in range(first, self.n_runs + 1)
            for p in export.glob(run_files(run, self.config.simulation.format))
        ]  # fmt: skip
        if leftovers:
            aside = export / f"interrupted-{len(list(export.glob('interrupted-*'))) + 1}"
            aside.mkdir()
            for path in leftovers:
                path.rename(aside / path.name)
            self.console.print(
                f"[yellow]{len(leftovers)} file(s) of the interrupted run set aside in {aside}[/]"
            )
        return first

    def _wait_for_atlas(self) -> None:
        deadline = time.monotonic() + ATLAS_TIMEOUT_S
        while not Path(self.config.atlas.names).exists():
            if self.processes["scanner"].poll() is not None or time.monotonic() > deadline:
                raise SimulationError(f"the simulated scanner wrote no atlas; see {self._log('scanner')}")
            time.sleep(POLL_S)

    # -- processes ------------------------------------------------------------------------------

    def _start_bridge(self) -> None:
        self._start(
            "bridge",
            "bridge",
            "watch",
            str(self.out / "export"),
            "--endpoint",
            self.config.scanner.bridge,
            "--key-file",
            self.config.scanner.key_file,
            "--spool",
            str(self.out / "spool"),
        )

    def _start_controller(self, *, resume: bool) -> None:
        args = ["session", "run", "--config", str(self.config_path)] + (["--resume"] if resume else [])
        # The controller's console is this one: its tables and warnings are the session's output.
        process = subprocess.Popen(_command(*args), stdout=None, stderr=self._file("controller"))
        self.processes["controller"] = process
        self._write_services()

    def _start(self, name: str, *args: str) -> None:
        self.processes[name] = subprocess.Popen(
            _command(*args), stdout=self._file(name), stderr=subprocess.STDOUT
        )
        self._write_services()

    def _file(self, name: str) -> IO[bytes]:
        if name not in self._log_files:
            self._log_files[name] = open(self._log(name), "ab")  # noqa: SIM115 (closed in _stop_all)
        return self._log_files[name]

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _write_services(self) -> None:
        services: dict[str, Any] = {name: p.pid for name, p in self.processes.items()}
        services["endpoints"] = {
            "presenter": self.config.scanner.presenter,
            "bridge": self.config.scanner.bridge,
        }
        write_atomic(self.out / "services.json", json.dumps(services, indent=1).encode())

    def _stop_all(self) -> None:
        for name in ("controller", "scanner", "bridge", "presenter"):
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        for f in self._log_files.values():
            f.close()
