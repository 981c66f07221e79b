"""Presentation: run plans checked before arming, the frame-locked run loop, and what it reports.

- :mod:`~stimulus.present.plan`: :class:`RunPlan`, what to show and when.
- :mod:`~stimulus.present.schedule`: :func:`present_run`, the one run loop, with
  the window-less :class:`VirtualDisplay` and :class:`VirtualTriggers`
  (and :class:`VirtualClock`, from :mod:`db.base`).
- :mod:`~stimulus.present.events`: the presenter's events as types, and
  :class:`RunLog`, the record of a presented run.
- :mod:`~stimulus.present.window`: the PsychoPy window (imports PsychoPy).
- :mod:`~stimulus.present.triggers`: the scanner's key and launchScan's metronome.
- :mod:`~stimulus.present.channel`: plans, triggers and events over the wire,
  and :class:`~stimulus.present.channel.PresenterClient` for the controller
  and the simulated scanner.
- :mod:`~stimulus.present.server`: ``cortexloop present``'s serve loop.
- :mod:`~stimulus.present.bids`: BIDS ``*_events.tsv``.

None of it loads torch or the session database's ORM: the stimulus computer
imports this package alone.
"""

from __future__ import annotations

from db.base import VirtualClock
from stimulus.present.bids import write_bids_events
from stimulus.present.events import (
    AttentionScore,
    PresenterEvent,
    PresenterEventType,
    RunLog,
    TrialRecord,
    event_from_wire,
)
from stimulus.present.plan import FixationSettings, PlannedTrial, RunPlan
from stimulus.present.schedule import (
    Display,
    TriggerSource,
    VirtualDisplay,
    VirtualTriggers,
    present_run,
)

__all__ = [
    "AttentionScore",
    "Display",
    "FixationSettings",
    "PlannedTrial",
    "PresenterEvent",
    "PresenterEventType",
    "RunLog",
    "RunPlan",
    "TrialRecord",
    "TriggerSource",
    "VirtualClock",
    "VirtualDisplay",
    "VirtualTriggers",
    "event_from_wire",
    "present_run",
    "write_bids_events",
]
