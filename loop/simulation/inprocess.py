"""A whole simulated session in this one process: no network, no processes, as fast as it goes.

``cortexloop simulate --in-process`` runs it, and so does each session of a
sweep on its worker (:mod:`loop.sweep`): the simulated scanner writes its
volumes into the session folder and hands them to the controller in this
process, and the presenter's onsets come from a virtual clock.
"""

from __future__ import annotations

from pathlib import Path

from db.base import write_atomic
from loop.config import SessionConfig, to_toml
from loop.observer import Observer

__all__ = ["simulate_in_process"]


def simulate_in_process(
    config: SessionConfig,
    out: Path,
    *,
    device: str | None = None,
    resume: bool = False,
    observer: Observer | None = None,
) -> SessionConfig:
    """Run (or, with ``resume``, continue) the session of ``config`` in ``out``; return its session file."""
    from db import open_database
    from loop.acquisition import InProcessAcquisition
    from loop.session import Controller
    from loop.simulation.processes import simulation_config
    from loop.simulation.scanner import SimulatedScanner
    from loop.simulation.subject import SubjectConfig, VirtualSubject
    from stimulus._torch import reuse_freed_memory
    from stimulus.present import VirtualClock

    reuse_freed_memory()
    out.mkdir(parents=True, exist_ok=True)
    config = simulation_config(config, out)  # no network here: its endpoints go unused
    write_atomic(out / "session.toml", to_toml(config).encode())  # recorded with the session
    subject = VirtualSubject(SubjectConfig.from_spec(config.simulation.subject, seed=config.session.seed))
    scanner = SimulatedScanner(
        subject,
        out / "export",
        tr_s=config.scanner.tr_s,
        clock=VirtualClock(),
        fmt=config.simulation.format,
        stimulus_dir=Path(config.scanner.stimulus_dir),
        truth_dir=Path(config.simulation.truth),
    )
    with open_database(config.database_target, create=True) as database:
        Controller(
            config, database, InProcessAcquisition(scanner, export_dir=out / "export"), observer=observer,
            device=device,
        ).run(resume=resume)  # fmt: skip
    return config
