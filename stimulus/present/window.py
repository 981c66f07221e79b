"""The PsychoPy window: a :class:`~stimulus.present.schedule.Display` on the screen the subject sees.

Textures are made from the checked images before the run is armed. Times
are PsychoPy's: ``win.flip()`` returns the moment of the flip on
``logging.defaultClock``, and keys are stamped on the same clock, so the run
loop measures onsets and responses on one time base. With a monitor
calibration (PsychoPy's Monitor Center name) sizes are in degrees of visual
angle; without one, in pixels.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["PsychoPyClock", "PsychoPyDisplay"]

log = logging.getLogger(__name__)


class PsychoPyClock:
    """PsychoPy's default clock, the one ``win.flip()`` and key stamps use."""

    def __init__(self) -> None:
        from psychopy import logging as psychopy_logging

        self._clock = psychopy_logging.defaultClock

    def now(self) -> float:
        return float(self._clock.getTime())

    def sleep_until(self, t: float) -> None:
        from psychopy import core

        remaining = t - self.now()
        if remaining > 0:
            core.wait(remaining, hogCPUperiod=min(remaining, 0.002))


class PsychoPyDisplay:
    """A PsychoPy window that the run loop draws into.

    Parameters
    ----------
    size : (width, height) in pixels
    fullscreen : bool
    screen : int
    monitor : str, optional
        A calibrated monitor's name; sizes are then in degrees.
    image_size : float
        Side of the square images: degrees with a monitor, else pixels.
    fixation_size : float
        Diameter of the fixation point, in the same units.
    background : RGB on -1..1
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = (800, 600),
        fullscreen: bool = False,
        screen: int = 0,
        monitor: str | None = None,
        image_size: float = 400.0,
        fixation_size: float = 8.0,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        from psychopy import event, visual

        self._event = event
        self._visual = visual
        units = "deg" if monitor else "pix"
        self.win = visual.Window(
            size=size, fullscr=fullscreen, screen=screen, monitor=monitor, units=units, color=background,
            colorSpace="rgb", allowGUI=False, waitBlanking=True, checkTiming=False,
        )  # fmt: skip
        self.clock = PsychoPyClock()
        measured = self.win.getActualFrameRate(nIdentical=10, nMaxFrames=120, nWarmUpFrames=10, threshold=1)
        if measured is None:
            log.warning("the refresh rate could not be measured (no stable vsync); assuming 60 Hz")
        self.refresh_hz = float(measured or 60.0)
        self.image_size = image_size
        self.fixation = visual.Circle(
            self.win,
            radius=fixation_size / 2,
            units=units,
            fillColor=(1, -1, -1),
            lineColor=None,
            colorSpace="rgb",
        )
        self.stims: dict[str, Any] = {}

    def prepare(self, images: dict[str, npt.NDArray[np.uint8]]) -> None:
        side = (self.image_size, self.image_size)
        self.stims = {
            name: self._visual.ImageStim(self.win, image=Image.fromarray(pixels), size=side, interpolate=True)
            for name, pixels in images.items()
        }

    def draw_stimulus(self, name: str) -> None:
        self.stims[name].draw()
        self.fixation.draw()

    def draw_fixation(self, colour: tuple[float, float, float]) -> None:
        self.fixation.fillColor = colour
        self.fixation.draw()

    def flip(self) -> float:
        return float(self.win.flip())

    def pressed_keys(self) -> list[tuple[str, float]]:
        return [(str(k), float(t)) for k, t in self._event.getKeys(timeStamped=self.clock._clock)]

    def close(self) -> None:
        self.win.close()
