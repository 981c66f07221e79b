"""Offline rehearsal: a virtual subject, its BOLD, a simulated scanner, and a whole simulated session.

- :mod:`~loop.simulation.subject`: :class:`VirtualSubject`, a brain with
  visual ROIs and a ground-truth response model (EfficientNet-Lite2, a
  network the controller does not use);
- :mod:`~loop.simulation.bold`: :class:`BoldRun`, what it saw turned into
  BOLD volumes with a scanner's noise (the HRF is the analysis's own,
  :mod:`loop.analysis.hrf`);
- :mod:`~loop.simulation.scanner`: :class:`SimulatedScanner`, triggers to
  the presenter, its onsets back, volumes written into an export folder
  where the bridge reads them as a real scanner's;
- :mod:`~loop.simulation.processes`: ``cortexloop simulate``, every part in a
  process of its own, supervised;
- :mod:`~loop.simulation.inprocess`: the same session in one process, as
  fast as it goes (``--in-process``, and each session of a sweep).

The controller never imports this package: it sees the virtual subject
only through the presenter, the bridge and, for scoring, the ground-truth
files the scanner writes (tests/test_layout.py holds it to that). The
names below are imported when first used (the subject loads torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.base.lazy import lazy_exports

if TYPE_CHECKING:
    from loop.simulation.bold import BoldRun
    from loop.simulation.inprocess import simulate_in_process
    from loop.simulation.processes import SimulatedSession, simulation_config
    from loop.simulation.scanner import RunRecord, SimulatedScanner
    from loop.simulation.subject import SubjectConfig, VirtualSubject

_EXPORTS = {
    "BoldRun": "loop.simulation.bold",
    "RunRecord": "loop.simulation.scanner",
    "SimulatedScanner": "loop.simulation.scanner",
    "SimulatedSession": "loop.simulation.processes",
    "SubjectConfig": "loop.simulation.subject",
    "VirtualSubject": "loop.simulation.subject",
    "simulate_in_process": "loop.simulation.inprocess",
    "simulation_config": "loop.simulation.processes",
}

__all__ = [
    "BoldRun",
    "RunRecord",
    "SimulatedScanner",
    "SimulatedSession",
    "SubjectConfig",
    "VirtualSubject",
    "simulate_in_process",
    "simulation_config",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
