"""The presenter as a server: run plans from the controller, one after another, until told to quit.

For each plan: check it and every image (a refusal names the files, before
any trigger), arm, wait for the first trigger, present, and send every
event to the peers as it happens; then write the run's BIDS events file and
send the whole run log. Between runs the window shows the fixation point.

Rules, each logged and sent to the peers:

- A plan that cannot be armed is answered ``refused`` with the reason; the
  presenter stays idle and serves the next plan.
- Triggers that came while no run was armed are dropped (``stale_triggers``):
  the scanner was started too early, and they cannot belong to the run.
- A first trigger that does not come within the timeout ends the run
  attempt with ``error``; the plan can be sent again.
- ``abort`` (a command, or escape at the stimulus computer) ends the run at
  once; everything measured so far is kept, written and sent.
- ``quit`` ends a run in progress the same way, then stops the server; so
  does SIGTERM or Ctrl-C (:meth:`Presenter.stop`).
- An events file that cannot be written (a full disk) is reported; the log
  still goes to the peers, who keep it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from db.base import Clock, MessageType
from stimulus.errors import PlanError, PresenterError, TriggerTimeoutError
from stimulus.present.bids import write_bids_events
from stimulus.present.channel import PresenterChannel, Request
from stimulus.present.events import (
    Ack,
    LogReady,
    PresenterEvent,
    PresenterWarning,
    Refused,
    RunError,
    RunLog,
    Served,
    StaleTriggers,
    Triggered,
)
from stimulus.present.plan import RunPlan
from stimulus.present.schedule import Display, TriggerSource, present_run

__all__ = ["Presenter"]

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.05
IDLE_FLIP_S = 0.25


class Presenter:
    """Serves the channel's plans on one display.

    Parameters
    ----------
    channel : PresenterChannel
    display : Display
    clock : Clock
        The display's clock (the one its flips are stamped on).
    triggers : callable
        Makes the trigger source for a plan (keyboard, emulator, network).
    stimulus_dir : Path
        Where the plans' relative image paths point.
    events_dir : Path
        Where each run's ``<run_id>_events.tsv`` and sidecar are written.
    """

    def __init__(
        self,
        channel: PresenterChannel,
        display: Display,
        clock: Clock,
        *,
        triggers: Callable[[RunPlan], TriggerSource],
        stimulus_dir: Path,
        events_dir: Path,
        trigger_timeout_s: float = 60.0,
        abort_keys: tuple[str, ...] = ("escape",),
    ) -> None:
        self.channel, self.display, self.clock = channel, display, clock
        self.make_triggers = triggers
        self.stimulus_dir, self.events_dir = stimulus_dir, events_dir
        self.trigger_timeout_s, self.abort_keys = trigger_timeout_s, abort_keys
        self.logs: dict[str, LogReady] = {}  # run_id -> the final log message, for `log` requests
        self._last_idle_flip = float("-inf")
        self._stopping = False
        warning = getattr(display, "refresh_warning", None)
        channel.set_status(state="idle", run_id=None, refresh_hz=display.refresh_hz, refresh_warning=warning)

    def stop(self) -> None:
        """Stop serving (from a signal handler): a run in progress ends as if aborted, and is reported."""
        self._stopping = True
        self.channel.abort.set()

    def serve(self) -> None:
        """Handle plans and commands until ``quit`` or :meth:`stop`."""
        log.info("presenter serving at %s (refresh %.2f Hz)", self.channel.endpoint, self.display.refresh_hz)
        while not self._stopping:
            request = self.channel.next_request(IDLE_POLL_S)
            if request is None:
                self._idle()
            elif request.kind is MessageType.PLAN:
                self.run(request)
            elif not self._command(request):
                return

    def _idle(self) -> None:
        self.display.pressed_keys()  # an escape between runs must not abort the next one
        if self.clock.now() - self._last_idle_flip >= IDLE_FLIP_S:
            self.display.draw_fixation((1.0, -1.0, -1.0))
            self._last_idle_flip = self.display.flip()

    def _command(self, request: Request) -> bool:
        """Answer a command; False when it is ``quit``."""
        command = str(request.content["command"])
        if command in ("abort", "quit"):
            self.channel.abort.clear()  # any run it was meant for has ended by now
            self.channel.reply(request.peer, Ack(command=command))
            return command != "quit"
        if command == "log":
            run_id = str(request.content.get("run_id"))
            missing = RunError(run_id=run_id, error=f"no run {run_id!r} has been presented")
            self.channel.reply(request.peer, self.logs.get(run_id) or missing)
            return True
        self.channel.reply(request.peer, Served(runs=tuple(sorted(self.logs))))
        return True

    def run(self, request: Request) -> RunLog | None:
        """Arm, present and report one plan; None when it could not be armed or no trigger came."""
        raw = request.content.get("plan")
        try:
            plan = RunPlan.from_dict(raw)
            images = plan.load_images(self.stimulus_dir)
        except PlanError as exc:
            run_id = raw.get("run_id") if isinstance(raw, dict) else None
            log.error("plan refused: %s", exc)
            named = run_id if isinstance(run_id, str) else None
            self.channel.reply(request.peer, Refused(run_id=named, error=str(exc)))
            return None
        stale = self.channel.clear_triggers()
        if stale:
            log.warning("%d trigger(s) came before run %s was armed; ignored", stale, plan.run_id)
            self.channel.broadcast(StaleTriggers(run_id=plan.run_id, count=stale))
        self.display.pressed_keys()
        try:
            triggers = self.make_triggers(plan)
        except PresenterError as exc:  # e.g. the trigger box's port gone since the last run
            log.error("plan %s refused: %s", plan.run_id, exc)
            self.channel.reply(request.peer, Refused(run_id=plan.run_id, error=str(exc)))
            return None
        self.channel.set_status(state="armed", run_id=plan.run_id)

        def send(event: PresenterEvent) -> None:
            self.channel.broadcast(event)
            if isinstance(event, Triggered) and event.index == 0:
                self.channel.set_status(state="running")

        try:
            run = present_run(
                plan, self.display, triggers, self.clock, images=images,
                trigger_timeout_s=self.trigger_timeout_s, abort_keys=self.abort_keys, on_event=send,
                should_abort=self.channel.abort.is_set,
            )  # fmt: skip
        except TriggerTimeoutError as exc:
            log.error("%s", exc)
            self.channel.broadcast(RunError(run_id=plan.run_id, error=str(exc)))
            return None
        finally:
            stop = getattr(triggers, "stop", None)
            if stop is not None:
                stop()
            self.channel.set_status(state="idle", run_id=None)
        path = self.events_dir / f"{plan.run_id}_events.tsv"
        written: str | None = None
        try:
            write_bids_events(run, plan, path)
            written = str(path)
        except OSError as exc:
            message = (
                f"the events of run {plan.run_id} could not be written to {path}: {exc}; the log was sent"
            )
            log.error("%s", message)
            self.channel.broadcast(PresenterWarning(run_id=plan.run_id, warning=message))
        final = LogReady(run_id=plan.run_id, log=run, events_tsv=written)
        self.logs[plan.run_id] = final
        self.channel.broadcast(final)
        return run
