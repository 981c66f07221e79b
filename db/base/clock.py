"""Clocks: real time for the scanner, scaled time for fast rehearsal, jumping time for tests.

Every component that waits takes a :class:`Clock`, so that a replay or a
simulated session can run many times faster than real time with the same
code: the bridge's receiver counts TRs on it, the presenter's run loop
keeps its frames on it, the simulated scanner paces its volumes by it.
Stage timestamps on volumes are always wall-clock (``time.time()``):
latency is a property of the real machine, whatever the clock.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ScaledClock", "VirtualClock", "WallClock"]


@runtime_checkable
class Clock(Protocol):
    """Seconds on a monotonic scale, and a way to wait for them."""

    def now(self) -> float:
        """The current time in this clock's seconds (monotonic, arbitrary origin)."""
        ...

    def seconds_to_wall(self, seconds: float) -> float:
        """How many real seconds ``seconds`` of this clock take."""
        ...

    def sleep_until(self, t: float) -> None:
        """Block until ``now() >= t``."""
        ...


class WallClock:
    """Real time, from ``time.monotonic``."""

    def now(self) -> float:
        return time.monotonic()

    def seconds_to_wall(self, seconds: float) -> float:
        return seconds

    def sleep_until(self, t: float) -> None:
        while (remaining := t - self.now()) > 0:
            time.sleep(remaining)


class ScaledClock:
    """Time that runs ``speed`` times faster than real time (``speed=10``: a 2 s TR takes 0.2 s).

    Parameters
    ----------
    speed : float
        Clock seconds per real second; must be positive.
    """

    def __init__(self, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self.speed = float(speed)
        self._origin = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.speed

    def seconds_to_wall(self, seconds: float) -> float:
        return seconds / self.speed

    def sleep_until(self, t: float) -> None:
        while (remaining := t - self.now()) > 0:
            time.sleep(remaining / self.speed)


class VirtualClock:
    """Time that jumps instead of waiting: a run takes as long as its computation."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def seconds_to_wall(self, seconds: float) -> float:
        return 0.0

    def sleep_until(self, t: float) -> None:
        self._t = max(self._t, t)
