"""Trigger sources: the scanner's keyboard emulation, a serial trigger box, the launchScan metronome.

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

Many sites' trigger boxes send a byte per volume on a serial port instead
(often '5', on a USB serial adapter); :class:`SerialTriggers` reads them
with pyserial in a thread of its own, so each is stamped when it comes, not
when the run loop next looks.

Triggers over the network come through the presenter's channel
(:class:`stimulus.present.channel.ChannelTriggers`).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol

from db.base import Clock
from stimulus.errors import PresenterError

__all__ = ["EmulatedScanTriggers", "KeyboardTriggers", "SerialTriggers"]

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


class SerialTriggers:
    """Triggers from a trigger box on a serial port: ``byte`` once per volume; other bytes are ignored.

    Parameters
    ----------
    port : str
        The port (``/dev/ttyUSB0``, ``COM3``) or any pyserial URL (``socket://host:port``).
    clock : Clock
        The run loop's clock; each trigger is stamped on it as its byte is read.
    byte : bytes
        The one byte the box sends per volume.
    baudrate : int
        The box's line speed.

    The port is opened (and what was waiting in it dropped: stale triggers)
    when the run is armed, and closed by :meth:`stop` when it ends.
    """

    def __init__(self, port: str, clock: Clock, *, byte: bytes = b"5", baudrate: int = 115200) -> None:
        import serial

        if len(byte) != 1:
            raise PresenterError(f"a serial trigger is one byte; got {byte!r}")
        try:
            self._port = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, ValueError) as exc:
            raise PresenterError(
                f"cannot open the trigger port {port} ({exc}); check the trigger box's cable and the port's "
                "name (ls /dev/ttyUSB* /dev/ttyACM*), and that this user may read it (the dialout group)"
            ) from None
        self._port.reset_input_buffer()
        self.clock, self.byte = clock, byte[0]
        self.description = f"byte {byte!r} on serial port {port} at {baudrate} baud"
        self._times: queue.SimpleQueue[float] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self._error: str | None = None
        self._reader = threading.Thread(target=self._read, name="cortexloop-serial-triggers", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import serial

        while not self._stopped.is_set():
            try:
                first = self._port.read(1)  # returns as soon as one byte comes (or after the timeout)
                now = self.clock.now()
                data = first + (self._port.read(self._port.in_waiting) if first else b"")
            except (serial.SerialException, OSError, TypeError) as exc:  # unplugged; closed under us
                if not self._stopped.is_set():
                    self._error = str(exc)
                return
            for value in data:
                if value == self.byte:
                    self._times.put(now)

    def wait(self, until: float) -> list[float]:
        times: list[float] = []
        while True:
            while not self._times.empty():
                times.append(self._times.get_nowait())
            if times or self.clock.now() >= until:
                return times
            if self._error is not None:
                raise PresenterError(
                    f"the trigger port failed: {self._error}; is the trigger box still plugged in?"
                )
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop reading and close the port."""
        self._stopped.set()
        self._reader.join(timeout=1)
        self._port.close()
