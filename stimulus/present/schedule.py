"""The presenter's run loop: frame-locked onsets, measured flips, triggers, responses.

The same loop drives a PsychoPy window and the window-less presenter: it
talks to a :class:`Display` (draw, flip, keys) and a :class:`TriggerSource`,
and keeps time on the display's clock. Onsets are planned in frames of the
measured refresh period from the first trigger; each actual onset is the
time of the flip that first showed the image, so actual minus planned is
known for every trial. A flip later than 1.5 periods after the previous one
counts the frames it dropped. Events go to ``on_event`` as they happen, so
an abort (escape) or a crash keeps everything up to that moment.

:class:`VirtualDisplay` with :class:`VirtualClock` runs a plan with no
window and no waiting, as fast as the CPU allows; with a scaled clock it
keeps pace with a simulated scanner.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from stimulus.errors import TriggerTimeoutError
from stimulus.present.plan import RunPlan

__all__ = [
    "Clock",
    "Display",
    "RunLog",
    "TrialRecord",
    "TriggerSource",
    "VirtualClock",
    "VirtualDisplay",
    "VirtualTriggers",
    "present_run",
]

log = logging.getLogger(__name__)

Event = dict[str, Any]


class Clock(Protocol):
    """Seconds on a monotonic scale and a way to wait for them (scanner_bridge's clocks fit)."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class Display(Protocol):
    """What the run loop needs from a screen."""

    refresh_hz: float

    def prepare(self, images: dict[str, npt.NDArray[np.uint8]]) -> None:
        """Turn every image into something drawable, before the run is armed."""

    def draw_stimulus(self, name: str) -> None: ...

    def draw_fixation(self, colour: tuple[float, float, float]) -> None: ...

    def flip(self) -> float:
        """Show what was drawn at the next refresh; return when it was shown, on the display's clock."""
        ...

    def pressed_keys(self) -> list[tuple[str, float]]:
        """Keys pressed since the last call, with their times."""
        ...


class TriggerSource(Protocol):
    """The scanner's volume triggers."""

    def wait_first(self, timeout_s: float) -> float:
        """Block until the first trigger; return its time. Raise TriggerTimeoutError after ``timeout_s``."""
        ...

    def poll(self) -> list[float]:
        """Times of triggers that came since the last call (after the first)."""
        ...


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


class VirtualDisplay:
    """A display with no window: flips land on the clock's frame boundaries.

    Parameters
    ----------
    clock : Clock
    refresh_hz : float
    late_flips : iterable of int, optional
        Flip numbers (0-based, counted from the first flip) that come one
        frame late, to rehearse dropped frames.
    """

    def __init__(self, clock: Clock, refresh_hz: float = 60.0, late_flips: Iterable[int] = ()) -> None:
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.late_flips = set(late_flips)
        self.shown: list[tuple[float, str]] = []  # (flip time, what was on screen)
        self._next: str = "blank"
        self._flips = 0
        self._last: float | None = None
        self._pressed: list[tuple[str, float]] = []

    def prepare(self, images: dict[str, npt.NDArray[np.uint8]]) -> None:
        self.images = images

    def draw_stimulus(self, name: str) -> None:
        self._next = name

    def draw_fixation(self, colour: tuple[float, float, float]) -> None:
        self._next = f"fixation{colour}"

    def flip(self) -> float:
        period = 1.0 / self.refresh_hz
        now = self.clock.now()
        boundary = (math.floor(now / period + 1e-9) + 1) * period
        if self._last is not None:
            boundary = max(boundary, self._last + period)
        if self._flips in self.late_flips:
            boundary += period
        self.clock.sleep_until(boundary)
        self._flips += 1
        self._last = boundary
        self.shown.append((boundary, self._next))
        return boundary

    def press(self, key: str, t: float) -> None:
        """Queue a key press at time ``t`` (for rehearsals and tests)."""
        self._pressed.append((key, t))

    def pressed_keys(self) -> list[tuple[str, float]]:
        now = self.clock.now()
        due = [(k, t) for k, t in self._pressed if t <= now]
        self._pressed = [(k, t) for k, t in self._pressed if t > now]
        return due


class VirtualTriggers:
    """Triggers every TR from ``first_at`` on the given clock, as a simulated scanner sends them."""

    def __init__(self, clock: Clock, tr_s: float, n_volumes: int, first_at: float = 0.0) -> None:
        self.clock, self.tr_s, self.n_volumes, self.first_at = clock, tr_s, n_volumes, first_at
        self._sent = 1

    def wait_first(self, timeout_s: float) -> float:
        if self.first_at - self.clock.now() > timeout_s:
            self.clock.sleep_until(self.clock.now() + timeout_s)
            raise TriggerTimeoutError(f"no trigger within {timeout_s} s")
        self.clock.sleep_until(self.first_at)
        return self.first_at

    def poll(self) -> list[float]:
        now = self.clock.now()
        times = []
        while self._sent < self.n_volumes and self.first_at + self._sent * self.tr_s <= now:
            times.append(self.first_at + self._sent * self.tr_s)
            self._sent += 1
        return times


@dataclass
class TrialRecord:
    """What happened to one planned trial; times in seconds from the first trigger."""

    index: int
    stimulus: str
    sha256: str
    condition: str | None
    target_roi: str | None
    planned_onset_s: float
    planned_duration_s: float
    actual_onset_s: float | None = None
    actual_duration_s: float | None = None
    dropped_frames: int = 0

    @property
    def onset_error_ms(self) -> float | None:
        return None if self.actual_onset_s is None else 1e3 * (self.actual_onset_s - self.planned_onset_s)


@dataclass
class RunLog:
    """Everything the run loop measured."""

    run_id: str
    refresh_hz: float
    trials: list[TrialRecord]
    triggers_s: list[float] = field(default_factory=list)
    responses: list[tuple[str, float]] = field(default_factory=list)
    fixation_changes_s: list[float] = field(default_factory=list)
    dropped_frames: int = 0
    aborted: bool = False
    first_trigger_clock: float = 0.0


def _fixation_changes(plan: RunPlan) -> list[float]:
    """Random times of the attention task's colour changes, reproducible from the plan's seed."""
    settings = plan.fixation
    if not settings.task or settings.changes_per_minute <= 0:
        return []
    rng = np.random.default_rng(plan.seed)
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.exponential(60.0 / settings.changes_per_minute) + settings.change_duration_s
        if t + settings.change_duration_s >= plan.duration_s:
            return times
        times.append(t)


def present_run(
    plan: RunPlan,
    display: Display,
    triggers: TriggerSource,
    clock: Clock,
    *,
    images: dict[str, npt.NDArray[np.uint8]],
    trigger_timeout_s: float = 60.0,
    abort_keys: tuple[str, ...] = ("escape",),
    on_event: Callable[[Event], None] | None = None,
) -> RunLog:
    """Show a checked plan, locked to the display's refreshes, from the first trigger.

    ``images`` are the plan's images, already read and checked
    (:meth:`RunPlan.load_images`), so nothing can fail for a file mid-run.
    """
    emit = on_event or (lambda event: None)
    display.prepare(images)
    display.draw_fixation(plan.fixation.colour)
    display.flip()
    emit({"type": "armed", "run_id": plan.run_id, "refresh_hz": display.refresh_hz})
    first = triggers.wait_first(trigger_timeout_s)
    period = 1.0 / display.refresh_hz
    records = [
        TrialRecord(
            index=k,
            stimulus=t.stimulus,
            sha256=t.sha256,
            condition=t.condition,
            target_roi=t.target_roi,
            planned_onset_s=t.onset_s,
            planned_duration_s=t.duration_s,
        )
        for k, t in enumerate(plan.trials)
    ]
    onsets = [round(t.onset_s / period) for t in plan.trials]
    offsets = [round((t.onset_s + t.duration_s) / period) for t in plan.trials]
    end = round(plan.duration_s / period)
    changes = _fixation_changes(plan)
    change_frames = [
        (round(c / period), round((c + plan.fixation.change_duration_s) / period)) for c in changes
    ]
    run = RunLog(run_id=plan.run_id, refresh_hz=display.refresh_hz, trials=records, triggers_s=[0.0],
                 first_trigger_clock=first)  # fmt: skip
    emit({"type": "trigger", "index": 0, "time_s": 0.0})
    # Flip k after the trigger lands in ((k - 1) period, k period]: frame k shows what is planned for it.
    frame = math.floor((clock.now() - first) / period + 1e-9) + 1
    trial, showing, previous = 0, None, frame - 1
    while frame < end:
        while trial < len(records) and frame >= offsets[trial]:
            trial += 1  # a trial whose every frame was dropped is never shown
        on = trial if trial < len(records) and onsets[trial] <= frame < offsets[trial] else None
        if on is not None:
            display.draw_stimulus(plan.trials[on].stimulus)
        else:
            changed = any(a <= frame < b for a, b in change_frames)
            display.draw_fixation(plan.fixation.change_colour if changed else plan.fixation.colour)
        # Never ahead of time: without vsync (Xvfb, some drivers) flips return at once and would run
        # early. Half a frame of margin leaves a vsync'd flip its refresh.
        clock.sleep_until(first + (frame - 1.5) * period)
        flip = display.flip()
        elapsed = flip - first
        shown = max(math.ceil(elapsed / period - 1e-6), previous + 1)
        if shown > previous + 1:
            run.dropped_frames += shown - previous - 1
            if showing is not None:
                records[showing].dropped_frames += shown - previous - 1
        previous = shown
        if showing is not None and on != showing:
            record = records[showing]
            assert record.actual_onset_s is not None
            record.actual_duration_s = elapsed - record.actual_onset_s
            emit({"type": "offset", "trial": showing, "actual_duration_s": record.actual_duration_s,
                  "dropped_frames": record.dropped_frames})  # fmt: skip
        if on is not None and on != showing:
            records[on].actual_onset_s = elapsed
            emit({"type": "onset", "trial": on, "stimulus": records[on].stimulus,
                  "planned_onset_s": records[on].planned_onset_s, "actual_onset_s": elapsed,
                  "onset_error_ms": records[on].onset_error_ms})  # fmt: skip
        showing = on
        for t in triggers.poll():
            run.triggers_s.append(t - first)
            emit({"type": "trigger", "index": len(run.triggers_s) - 1, "time_s": t - first})
        for key, t in display.pressed_keys():
            if key in abort_keys:
                run.aborted = True
            else:
                run.responses.append((key, t - first))
                emit({"type": "response", "key": key, "time_s": t - first})
        if run.aborted:
            emit({"type": "aborted", "time_s": elapsed})
            log.warning("run %s aborted by the operator at %.3f s", plan.run_id, elapsed)
            break
        frame = shown + 1
    if showing is not None and records[showing].actual_duration_s is None and not run.aborted:
        flip = display.flip()
        records[showing].actual_duration_s = flip - first - (records[showing].actual_onset_s or 0.0)
    run.fixation_changes_s = changes
    emit({"type": "done", "aborted": run.aborted, "dropped_frames": run.dropped_frames})
    return run
