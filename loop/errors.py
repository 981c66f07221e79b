"""The exceptions the controller raises, under cortexloop's root::

    CortexloopError (db.base.errors)
    ├── SessionError(RuntimeError)          the session cannot go on (the message says why and what to do)
    ├── AcquisitionError(RuntimeError)      a run could not be acquired to its end; it stays open for --resume
    └── SimulationError(RuntimeError)       the virtual subject, its scanner or a simulated part failed

A session file's own mistakes are :class:`db.base.ConfigError`, raised
before anything starts. Messages name the thing, what was expected, what
came, and what to do.
"""

from __future__ import annotations

from db.base import CortexloopError

__all__ = ["AcquisitionError", "SessionError", "SimulationError"]


class SessionError(CortexloopError, RuntimeError):
    """The session cannot go on (the message says why and what to do)."""


class AcquisitionError(CortexloopError, RuntimeError):
    """A run could not be acquired to its end (the message says what to check)."""


class SimulationError(CortexloopError, RuntimeError):
    """The virtual subject, the simulated scanner or another simulated part failed."""
