"""Trigger sources for a PsychoPy window: the scanner's keyboard emulation and the launchScan metronome.

Most scanners turn each volume's sync pulse into a key press ('5' by
default). :class:`KeyboardTriggers` takes those from the window's key
queue, apart from the subject's responses. :class:`EmulatedScanTriggers` is
for rehearsal at the stimulus computer: it starts the metronome of
PsychoPy's ``launchScan`` test mode (the ``psychopy-mri-emulator`` plugin),
which types the trigger key every TR, and then reads it back through the
very same keyboard path a real session uses.

Key times are PsychoPy's: pyglet stamps a key when the window's event loop
sees it, which happens every time the run loop looks (each frame while
presenting, every half millisecond while waiting for the first trigger).
The emulator's keys carry the time they were typed.

Triggers over the network come through the presenter's channel
(:class:`stimulus.present.channel.ChannelTriggers`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from db.base import Clock
from stimulus.errors import PresenterError

__all__ = ["EmulatedScanTriggers", "KeyboardTriggers"]

POLL_S = 0.0005


class _Keys(Protocol):
    def trigger_presses(self) -> list[float]: ...


class KeyboardTriggers:
    """Triggers typed by the scanner's interface (``key``) into the window."""

    def __init__(self, display: _Keys, clock: Clock, key: str = "5") -> None:
        self.display, self.clock, self.key = display, clock, key
        self.description = f"key {key!r} on the stimulus computer's keyboard"

    def wait(self, until: float) -> list[float]:
        while True:
            times = self.display.trigger_presses()
            if times or self.clock.now() >= until:
                return times
            time.sleep(POLL_S)


class EmulatedScanTriggers(KeyboardTriggers):
    """launchScan's test-mode metronome: the trigger key typed every ``tr_s`` from the first wait on.

    The metronome starts when the run loop first waits for a trigger (the run
    is armed by then) and sends ``n_volumes`` triggers.
    """

    def __init__(self, display: _Keys, clock: Clock, tr_s: float, n_volumes: int, key: str = "5") -> None:
        super().__init__(display, clock, key)
        self.description = f"PsychoPy's launchScan emulator (key {key!r} every {tr_s:g} s)"
        self.tr_s, self.n_volumes = tr_s, n_volumes
        self._generator: Any = None

    def wait(self, until: float) -> list[float]:
        if self._generator is None:
            self._generator = _sync_generator(self.tr_s, self.n_volumes, self.key)
            self._generator.start()
        return super().wait(until)

    def stop(self) -> None:
        """Stop the metronome (a run that ended early)."""
        if self._generator is not None:
            self._generator.stop()
            self._generator.join(timeout=2 * self.tr_s)


def _sync_generator(tr_s: float, n_volumes: int, key: str) -> Any:
    import psychopy.plugins

    psychopy.plugins.activatePlugins()
    try:
        from psychopy.hardware.emulator import SyncGenerator
    except ImportError as exc:
        raise PresenterError(
            "the launchScan emulator needs the psychopy-mri-emulator plugin; "
            "install it with `pip install psychopy-mri-emulator`"
        ) from exc
    return SyncGenerator(TR=tr_s, TA=tr_s, volumes=n_volumes, sync=key, skip=0, sound=False)
