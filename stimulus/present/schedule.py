"""The presenter's run loop: frame-locked onsets, measured flips, triggers, responses.

The same loop drives a PsychoPy window and the window-less presenter: it
talks to a :class:`Display` (draw, flip, keys) and a :class:`TriggerSource`,
and keeps time on the display's clock. Onsets are planned in frames of the
measured refresh period from the first trigger; each actual onset is the
time of the flip that first showed the image, so actual minus planned is
known for every trial. A flip later than 1.5 periods after the previous one
counts the frames it dropped. Events (:mod:`stimulus.present.events`) go to
``on_event`` as they happen, so an abort (escape) or a crash keeps
everything up to that moment.

:class:`VirtualDisplay` with :class:`db.base.VirtualClock` runs a plan with no
window and no waiting, as fast as the CPU allows; with a scaled clock it
keeps pace with a simulated scanner.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from db.base import Clock
from stimulus.errors import TriggerTimeoutError
from stimulus.present.events import (
    Aborted,
    Armed,
    AttentionScore,
    Done,
    Offset,
    Onset,
    PresenterEvent,
    Response,
    RunLog,
    TrialRecord,
    Triggered,
    TriggerTimeout,
)
from stimulus.present.plan import FixationSettings, RunPlan

__all__ = [
    "Display",
    "TriggerSource",
    "VirtualDisplay",
    "VirtualTriggers",
    "present_run",
    "score_attention",
]

log = logging.getLogger(__name__)


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
    """The scanner's volume triggers, each stamped on the run loop's clock when it came."""

    def wait(self, until: float) -> list[float]:
        """Times of the triggers that came since the last call, waiting until clock time ``until`` for one.

        Returns as soon as there is at least one; ``wait(clock.now())`` only looks.
        """
        ...


class VirtualDisplay:
    """A display with no window: flips land on the clock's frame boundaries.

    Parameters
    ----------
    clock : Clock
    refresh_hz : float
    late_flips : iterable of int, optional
        Flip numbers (0-based, counted from the first flip) that come one
        frame late, to rehearse dropped frames.
    history : int, optional
        How many flips :attr:`shown` keeps (all by default).
    """

    def __init__(
        self,
        clock: Clock,
        refresh_hz: float = 60.0,
        late_flips: Iterable[int] = (),
        history: int | None = None,
    ) -> None:
        self.clock = clock
        self.refresh_hz = refresh_hz
        self.late_flips = set(late_flips)
        # (flip time, what was on screen) of the last ``history`` flips (all when None; a server keeps none).
        self.shown: collections.deque[tuple[float, str]] = collections.deque(maxlen=history)
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

    description = "the virtual scanner"

    def __init__(self, clock: Clock, tr_s: float, n_volumes: int, first_at: float = 0.0) -> None:
        self.clock, self.tr_s, self.n_volumes, self.first_at = clock, tr_s, n_volumes, first_at
        self._sent = 0

    def _due(self, k: int) -> float:
        return self.first_at + k * self.tr_s

    def wait(self, until: float) -> list[float]:
        if self._sent < self.n_volumes and self.clock.now() < min(until, self._due(self._sent)):
            self.clock.sleep_until(min(until, self._due(self._sent)))
        times = []
        while self._sent < self.n_volumes and self._due(self._sent) <= self.clock.now():
            times.append(self._due(self._sent))
            self._sent += 1
        return times


def score_attention(
    changes_s: list[float], responses: list[tuple[str, float]], settings: FixationSettings
) -> AttentionScore:
    """Pair each colour change with the first unused response key press inside its window."""
    low, high = settings.response_window_s
    presses = sorted(t for key, t in responses if key in settings.response_keys)
    used: set[int] = set()
    reaction_times = []
    for change in changes_s:
        for k, t in enumerate(presses):
            if k not in used and change + low <= t <= change + high:
                used.add(k)
                reaction_times.append(t - change)
                break
    return AttentionScore(
        changes=len(changes_s),
        hits=len(reaction_times),
        false_alarms=len(presses) - len(used),
        reaction_times_s=tuple(reaction_times),
    )


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
    on_event: Callable[[PresenterEvent], None] | None = None,
    should_abort: Callable[[], bool] | None = None,
) -> RunLog:
    """Show a checked plan, locked to the display's refreshes, from the first trigger.

    ``images`` are the plan's images, already read and checked
    (:meth:`RunPlan.load_images`), so nothing can fail for a file mid-run.
    The run stops early, keeping what it measured, when an abort key is
    pressed or ``should_abort()`` (asked once a frame) says so. A first
    trigger that does not come within ``trigger_timeout_s`` raises
    :class:`TriggerTimeoutError`.
    """
    emit = on_event or (lambda event: None)
    stop_requested = should_abort or (lambda: False)
    display.prepare(images)
    display.draw_fixation(plan.fixation.colour)
    display.flip()
    emit(Armed(run_id=plan.run_id, refresh_hz=display.refresh_hz, tr_s=plan.tr_s, n_volumes=plan.n_volumes,
               stimuli=tuple(sorted({t.stimulus for t in plan.trials}))))  # fmt: skip
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
    run = RunLog(run_id=plan.run_id, refresh_hz=display.refresh_hz, trials=records)
    first = _wait_first_trigger(
        plan.run_id, triggers, display, clock, trigger_timeout_s, abort_keys, stop_requested, emit
    )
    if first is None:
        run.aborted = True
        emit(Aborted(run_id=plan.run_id, time_s=None, before_first_trigger=True))
        emit(Done(run_id=plan.run_id, aborted=True, dropped_frames=0))
        return run
    run.first_trigger_clock = first[0]
    onsets = [round(t.onset_s / period) for t in plan.trials]
    offsets = [round((t.onset_s + t.duration_s) / period) for t in plan.trials]
    end = round(plan.duration_s / period)
    changes = _fixation_changes(plan)
    change_frames = [
        (round(c / period), round((c + plan.fixation.change_duration_s) / period)) for c in changes
    ]
    for t in first:
        run.triggers_s.append(t - first[0])
        emit(Triggered(run_id=plan.run_id, index=len(run.triggers_s) - 1, time_s=t - first[0]))
    first_s = first[0]
    # Flip k after the trigger lands in ((k - 1) period, k period]: frame k shows what is planned for it.
    frame = math.floor((clock.now() - first_s) / period + 1e-9) + 1
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
        clock.sleep_until(first_s + (frame - 1.5) * period)
        flip = display.flip()
        elapsed = flip - first_s
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
            emit(Offset(run_id=plan.run_id, trial=showing, actual_duration_s=record.actual_duration_s,
                        dropped_frames=record.dropped_frames))  # fmt: skip
        if on is not None and on != showing:
            records[on].actual_onset_s = elapsed
            emit(Onset(run_id=plan.run_id, trial=on, stimulus=records[on].stimulus,
                       planned_onset_s=records[on].planned_onset_s, actual_onset_s=elapsed,
                       planned_duration_s=records[on].planned_duration_s,
                       onset_error_ms=1e3 * (elapsed - records[on].planned_onset_s)))  # fmt: skip
        showing = on
        for t in triggers.wait(clock.now()):
            run.triggers_s.append(t - first_s)
            emit(Triggered(run_id=plan.run_id, index=len(run.triggers_s) - 1, time_s=t - first_s))
        for key, t in display.pressed_keys():
            if key in abort_keys:
                run.aborted = True
            else:
                run.responses.append((key, t - first_s))
                emit(Response(run_id=plan.run_id, key=key, time_s=t - first_s))
        if stop_requested():
            run.aborted = True
        if run.aborted:
            emit(Aborted(run_id=plan.run_id, time_s=elapsed))
            log.warning("run %s aborted by the operator at %.3f s", plan.run_id, elapsed)
            break
        frame = shown + 1
    if showing is not None and records[showing].actual_duration_s is None and not run.aborted:
        flip = display.flip()
        records[showing].actual_duration_s = flip - first_s - (records[showing].actual_onset_s or 0.0)
    run.fixation_changes_s = [c for c in changes if c < (clock.now() - first_s)]
    if plan.fixation.task:
        run.attention = score_attention(run.fixation_changes_s, run.responses, plan.fixation)
    emit(Done(run_id=plan.run_id, aborted=run.aborted, dropped_frames=run.dropped_frames,
              attention=run.attention))  # fmt: skip
    return run


def _wait_first_trigger(
    run_id: str,
    triggers: TriggerSource,
    display: Display,
    clock: Clock,
    timeout_s: float,
    abort_keys: tuple[str, ...],
    stop_requested: Callable[[], bool],
    emit: Callable[[PresenterEvent], None],
) -> list[float] | None:
    """The first trigger(s), in clock time; None if the run was aborted while waiting."""
    deadline = clock.now() + timeout_s
    while True:
        got = triggers.wait(min(deadline, clock.now() + 0.05))
        if got:
            return got
        if stop_requested() or any(key in abort_keys for key, _ in display.pressed_keys()):
            return None
        if clock.now() >= deadline:
            source = getattr(triggers, "description", type(triggers).__name__)
            emit(TriggerTimeout(run_id=run_id, timeout_s=timeout_s, source=source))
            raise TriggerTimeoutError(
                f"no trigger within {timeout_s:g} s from {source}; is the scanner running, and is the "
                "trigger cable or network connected? The run was armed and can be sent again."
            )
