"""Presentation: run plans checked before arming, and the frame-locked run loop.

:class:`RunPlan` (:mod:`stimulus.present.plan`) and :func:`present_run`
(:mod:`stimulus.present.schedule`) with the window-less
:class:`VirtualDisplay`; BIDS events in :mod:`stimulus.present.events`.
The PsychoPy window, the trigger sources and the ``cortexloop present``
server build on these.
"""

from __future__ import annotations

from stimulus.present.events import write_bids_events
from stimulus.present.plan import FixationSettings, PlannedTrial, RunPlan
from stimulus.present.schedule import (
    Display,
    RunLog,
    TrialRecord,
    TriggerSource,
    VirtualClock,
    VirtualDisplay,
    VirtualTriggers,
    present_run,
)

__all__ = [
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
