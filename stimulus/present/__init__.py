"""Presentation: run plans checked before arming, and the frame-locked run loop.

- :mod:`~stimulus.present.plan`: :class:`RunPlan`, what to show and when.
- :mod:`~stimulus.present.schedule`: :func:`present_run`, the one run loop, with
  the window-less :class:`VirtualDisplay`, :class:`VirtualClock` and
  :class:`VirtualTriggers`.
- :mod:`~stimulus.present.window`: the PsychoPy window (imports PsychoPy).
- :mod:`~stimulus.present.triggers`: the scanner's key and launchScan's metronome.
- :mod:`~stimulus.present.channel`: plans, triggers and events over ZeroMQ,
  and :class:`~stimulus.present.channel.PresenterClient` for the controller
  and the simulated scanner.
- :mod:`~stimulus.present.server`: ``cortexloop present``'s serve loop.
- :mod:`~stimulus.present.events`: BIDS ``*_events.tsv``.
"""

from __future__ import annotations

from db.base import VirtualClock
from stimulus.present.events import write_bids_events
from stimulus.present.plan import FixationSettings, PlannedTrial, RunPlan
from stimulus.present.schedule import (
    AttentionScore,
    Display,
    RunLog,
    TrialRecord,
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
    "RunLog",
    "RunPlan",
    "TrialRecord",
    "TriggerSource",
    "VirtualClock",
    "VirtualDisplay",
    "VirtualTriggers",
    "present_run",
    "write_bids_events",
]
