"""How a planned run is acquired: over the network, as in the scanner, or in this process.

The controller hands an :class:`Acquisition` a run plan and a
:class:`RunSink`; the acquisition delivers each volume (or its absence) in
index order and each onset the presenter reports, and returns the
presenter's record of the run (a :class:`~stimulus.present.RunLog`). Two
kinds exist:

- :class:`NetworkAcquisition`: the plan goes to ``cortexloop present``, the
  volumes come from ``cortexloop bridge watch``, both over ZeroMQ. This is a
  live session, and a ``cortexloop simulate`` session, whose scanner is the
  simulated one writing files for the bridge.
- :class:`InProcessAcquisition`: the virtual subject is scanned here, at
  full speed, showing the plan itself; its files are read back through the
  bridge's readers. Same plans, same per-volume path, no processes: for
  quick science checks (``cortexloop simulate --in-process``).

Rules for what goes wrong during a run (each reported to the sink as an event):

- a volume that never comes is delivered as missing once the bridge's
  receiver declares it so; a volume that comes late is taken if its index
  has not been passed yet, and logged;
- one bridge serves the whole session and announces each series that
  begins; the run is the first series to begin after its plan was sent
  with the session's grid and TR, and never an earlier run's (a run picked
  up after a restart names the series it recorded), so localizers,
  reference scans and earlier runs are never mixed into it;
- the presenter refusing the plan, or reporting that the first trigger
  never came, ends the acquisition with :class:`AcquisitionError`;
- no first trigger (and no volume) within ``trigger_timeout_s`` of the plan
  being sent, or no volume for ``volume_timeout_s`` once the run has begun,
  ends it with :class:`AcquisitionError` too; what was received stays recorded.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from db.base import Clock, VolumeStatus
from loop.errors import AcquisitionError
from scanner_bridge import ReceiverConfig, ScaledClock, SeriesChoice, VolumeReceiver
from scanner_bridge.errors import ReceiveTimeoutError
from scanner_bridge.readers import read_volume
from scanner_bridge.source import BridgeEvent
from scanner_bridge.volume import Volume
from stimulus.present import PresenterEvent, RunLog, RunPlan
from stimulus.present.channel import PresenterClient
from stimulus.present.events import (
    LogReady,
    Onset,
    PresenterWarning,
    Refused,
    RunError,
    StaleTriggers,
    Triggered,
)

__all__ = [
    "Acquisition",
    "AcquisitionError",
    "InProcessAcquisition",
    "NetworkAcquisition",
    "RunSink",
]

log = logging.getLogger(__name__)

REAL_GRACE_S = 2.0


class RunSink(Protocol):
    """Where an acquisition delivers a run, as it happens."""

    def volume(self, index: int, status: VolumeStatus, volume: Volume | None) -> None: ...

    def onset(self, trial: int, onset_s: float, duration_s: float | None) -> None: ...

    def event(self, level: str, code: str, message: str, details: dict[str, Any] | None = None) -> None: ...

    def restart(self, reason: str) -> None:
        """The run is acquired again from its first volume; what was delivered before is void."""
        ...


class Acquisition(Protocol):
    def acquire(
        self,
        plan: RunPlan,
        number: int,
        sink: RunSink,
        *,
        resume: bool = False,
        series: SeriesChoice = SeriesChoice(),  # noqa: B008 (frozen)
    ) -> RunLog:
        """Acquire run ``number`` of the session (1-based) following ``plan``; return what was presented.

        With ``resume``, the plan may have been sent before a restart: the
        acquisition picks the run up where the presenter and bridge are,
        delivering every volume from index 0 again (the sink knows which it
        has recorded). ``series`` says which scanner series can be the run's:
        the session's grid and TR, not its earlier runs' series, and the
        run's own where an earlier attempt recorded it.
        """
        ...

    def close(self) -> None: ...


# --- over the network ------------------------------------------------------------------------------


@dataclass
class NetworkSettings:
    presenter: str
    bridge: str
    key: bytes
    volume_timeout_s: float = 30.0  # real seconds without a volume, once the run has begun
    trigger_timeout_s: float = 60.0  # real seconds from the plan to the first trigger (or volume)
    speed: float = 1.0  # the scanner's speed (a simulation runs faster than real time)


class NetworkAcquisition:
    """Plans to ``cortexloop present``, volumes from ``cortexloop bridge watch``."""

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        self.presenter = PresenterClient(
            settings.presenter, settings.key, timeout_s=settings.volume_timeout_s
        )
        self.presenter.hello(timeout_s=settings.volume_timeout_s)  # the presenter is there, or a clear error
        self._events: collections.deque[PresenterEvent] = collections.deque()
        self._first_trigger = False  # of the run being acquired

    def close(self) -> None:
        self.presenter.close()

    def wait_for_peers(self, n: int, timeout_s: float) -> None:
        """Wait until ``n`` peers (this one included) have said hello to the presenter."""
        deadline = time.monotonic() + timeout_s
        while self.presenter.hello()["peers"] < n:
            if time.monotonic() > deadline:
                raise AcquisitionError(
                    f"only {self.presenter.status['peers']} of {n} peers reached the presenter at "
                    f"{self.settings.presenter} within {timeout_s:g} s"
                )
            event = self.presenter.next_event(0.2)  # kept for the run it belongs to
            if event is not None:
                self._events.append(event)

    def acquire(
        self,
        plan: RunPlan,
        number: int,
        sink: RunSink,
        *,
        resume: bool = False,
        series: SeriesChoice = SeriesChoice(),  # noqa: B008 (frozen)
    ) -> RunLog:
        final = None
        self._first_trigger = False
        clock: Clock = ScaledClock(self.settings.speed)
        series_told = False
        delivered = 0

        def on_bridge_event(event: BridgeEvent) -> None:
            sink.event(event.level, f"bridge.{event.code}", event.message)

        # A volume is declared missing after two TRs, and never before REAL_GRACE_S of real time: a bridge
        # restarting between runs takes a second or two however fast a simulation runs.
        after = max(ReceiverConfig().missing_after_trs, REAL_GRACE_S * self.settings.speed / plan.tr_s)
        receiver = VolumeReceiver(
            self.settings.bridge,
            self.settings.key,
            config=ReceiverConfig(missing_after_trs=after, default_tr_s=plan.tr_s),
            clock=clock,
            on_event=on_bridge_event,
            choice=None,
        )
        with receiver as rx:
            try:  # the series the bridge knows before the plan goes: none of them is this run
                before = [info.series for info in rx.wait_joined(self.settings.volume_timeout_s)]
            except ReceiveTimeoutError as exc:
                raise AcquisitionError(f"run {plan.run_id}: {exc}") from None
            sent = True
            if resume:
                final, sent = self._pick_up(plan, sink)
            else:
                self.presenter.send_plan(plan)
            if sent:  # acquired from its start: a series that begins from now on
                series = replace(series, name=None).but_not(before)
            elif series.name is None:  # picked up, its series never recorded: the newest that fits
                series = replace(series, newest=True)
            rx.choose(series)
            last_volume = time.monotonic()  # or, before any, when the plan went
            while delivered < plan.n_volumes or final is None:
                final = (
                    self._take_events(plan, sink, wait_s=0.1 if delivered >= plan.n_volumes else 0) or final
                )
                waited = time.monotonic() - last_volume
                if delivered >= plan.n_volumes:
                    if final is None and waited > self.settings.volume_timeout_s:
                        raise AcquisitionError(
                            f"run {plan.run_id}: every volume came but the presenter sent no log within "
                            f"{self.settings.volume_timeout_s:g} s; is `cortexloop present` still running?"
                        )
                    continue
                try:
                    arrival = rx.get(timeout_s=0.05)
                except ReceiveTimeoutError:
                    if not (delivered or self._first_trigger) and waited > self.settings.trigger_timeout_s:
                        raise AcquisitionError(
                            f"run {plan.run_id}: no trigger from the scanner within "
                            f"{self.settings.trigger_timeout_s:g} s of the plan; start the scanner's "
                            "sequence (and check the trigger input of the presenter's computer)"
                        ) from None
                    if (delivered or self._first_trigger) and waited > self.settings.volume_timeout_s:
                        raise AcquisitionError(
                            f"run {plan.run_id}: no volume {delivered} from the bridge at "
                            f"{self.settings.bridge} for {self.settings.volume_timeout_s:g} s; "
                            + _what_the_bridge_has(rx, series)
                        ) from None
                    continue
                volume = arrival.volume
                if volume is not None and not series_told:
                    series_told = True
                    sink.event(
                        "info",
                        "run.series",
                        f"run {number} is series {volume.series}",
                        {"series": volume.series},
                    )
                last_volume = time.monotonic()
                sink.volume(arrival.index, arrival.status, volume)
                delivered += 1
        return final

    def _take_events(self, plan: RunPlan, sink: RunSink, *, wait_s: float = 0) -> RunLog | None:
        """Handle the presenter's events so far (waiting up to ``wait_s`` for the first); the run's log."""
        final = None
        while True:
            event = self._events.popleft() if self._events else self.presenter.next_event(wait_s)
            wait_s = 0
            if event is None:
                return final
            if event.run_id not in (None, plan.run_id):
                continue
            match event:
                case Onset():
                    sink.onset(event.trial, event.actual_onset_s, None)
                case Triggered(index=0):
                    self._first_trigger = True
                    sink.event("info", "run.first_trigger", f"run {plan.run_id}: first trigger")
                case LogReady():
                    final = event.log
                case Refused() | RunError():
                    raise AcquisitionError(
                        f"the presenter could not run {plan.run_id}: {event.error}; what was recorded "
                        "is kept and the run stays open"
                    )
                case PresenterWarning():
                    sink.event("warning", "presenter.warning", event.warning)
                case StaleTriggers():
                    sink.event(
                        "warning",
                        "presenter.stale_triggers",
                        f"{event.count} trigger(s) came before run {plan.run_id} was armed; the presenter "
                        "dropped them (was the scanner started before the plan was sent?)",
                    )

    def _pick_up(self, plan: RunPlan, sink: RunSink) -> tuple[RunLog | None, bool]:
        """After a restart: is the presenter showing this run, done with it, or has it never seen it?

        Returns the run's log if the presenter is done with it, and whether the plan was sent again.
        """
        status = self.presenter.hello()
        if status.get("run_id") == plan.run_id:
            sink.event("info", "run.picked_up", f"run {plan.run_id} is in progress at the presenter")
            return None, False
        self.presenter.command("log", run_id=plan.run_id)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            event = self.presenter.next_event(0.5)
            if event is None or event.run_id != plan.run_id:
                continue
            if isinstance(event, LogReady):
                sink.event(
                    "info", "run.picked_up", f"run {plan.run_id} ended at the presenter; its log taken"
                )
                return event.log, False
            if isinstance(event, RunError):
                break
        sink.event("info", "run.resent", f"the presenter never showed run {plan.run_id}; sent again")
        sink.restart("the presenter never showed it to its end")
        self.presenter.send_plan(plan)
        return None, True


def _what_the_bridge_has(receiver: VolumeReceiver, choice: SeriesChoice) -> str:
    """Why no volume comes: the run's series is silent, or the bridge has no series that fits."""
    if receiver.series is not None:
        return f"its series {receiver.series} went silent; is the scanner still running?"
    has = "; ".join(info.describe() for info in receiver.catalog[-5:]) or "no series at all"
    return (
        f"none of the bridge's series is {choice.describe()} (it has: {has}). Check the sequence's "
        "geometry and TR against the session file, and that the export goes to the folder the bridge watches"
    )


# --- in this process -------------------------------------------------------------------------------


class InProcessAcquisition:
    """The virtual subject scanned here, as fast as the computer goes.

    Volumes go through the same files a bridge would read: the simulated
    scanner writes them (NIfTI or DICOM), :func:`read_volume` reads them.
    The scanner presents the plan itself (the window-less run loop), and
    its record of the run is what the presenter would have sent.
    """

    def __init__(self, scanner: Any, *, export_dir: Path) -> None:
        self.scanner = scanner  # a SimulatedScanner on a VirtualClock
        self.export_dir = export_dir

    def close(self) -> None:
        pass

    def acquire(
        self,
        plan: RunPlan,
        number: int,
        sink: RunSink,
        *,
        resume: bool = False,
        series: SeriesChoice = SeriesChoice(),  # noqa: B008 (frozen)
    ) -> RunLog:
        record = self.scanner.run(run=number, plan=plan)  # a resumed run is scanned again, identically
        presented: RunLog = record.log
        shown = [
            (t.index, t.actual_onset_s, t.actual_duration_s)
            for t in presented.trials
            if t.actual_onset_s is not None
        ]
        for index in range(plan.n_volumes):
            while shown and shown[0][1] < index * plan.tr_s:  # reported as the presenter would
                sink.onset(*shown.pop(0))
            names = record.files.get(index)
            if not names:
                sink.volume(index, VolumeStatus.MISSING, None)
                continue
            part = read_volume([self.export_dir / name for name in names])
            if index == 0:
                sink.event(
                    "info", "run.series", f"run {number} is series {part.series}", {"series": part.series}
                )
            sink.volume(index, VolumeStatus.OK, part.as_volume(index, {"received": time.time()}))
        return presented


def utc(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)
