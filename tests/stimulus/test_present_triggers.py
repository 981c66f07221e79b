"""Triggers from a serial trigger box, through a pseudo-terminal as the box's port."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.base import ScaledClock
from stimulus import PresenterError
from stimulus.present import PlannedTrial, RunPlan, VirtualDisplay, present_run
from stimulus.present.triggers import SerialTriggers


@pytest.fixture
def trigger_box() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal: write to the first descriptor as the box does; the second's name is the port."""
    box, port = os.openpty()
    try:
        yield box, os.ttyname(port)
    finally:
        os.close(box)
        os.close(port)


def test_each_trigger_byte_is_stamped_when_it_comes_and_other_bytes_are_not_triggers(
    trigger_box: tuple[int, str],
) -> None:
    box, port = trigger_box
    clock = ScaledClock(1.0)
    os.write(box, b"5")  # before the run was armed: stale, dropped when the port opens
    time.sleep(0.05)
    triggers = SerialTriggers(port, clock, byte=b"5")
    try:
        assert triggers.wait(clock.now() + 0.2) == []
        sent = []
        for byte in (b"5", b"1", b"2", b"5"):  # the subject's button box shares the line: 1 and 2
            if byte == b"5":
                sent.append(clock.now())
            os.write(box, byte)
            time.sleep(0.1)
        got = triggers.wait(clock.now())
    finally:
        triggers.stop()
    assert len(got) == 2
    for came, stamped in zip(sent, got, strict=True):
        assert 0 <= stamped - came < 0.05  # stamped as read, not when the run loop looks (0.1-0.4 s later)


def test_a_run_is_locked_to_the_serial_triggers(
    trigger_box: tuple[int, str], stimuli: dict[str, str], tmp_path: Path
) -> None:
    box, port = trigger_box
    clock = ScaledClock(1.0)
    name = sorted(stimuli)[0]
    trials = (PlannedTrial(stimulus=name, sha256=stimuli[name], onset_s=0.4, duration_s=0.2),)
    plan = RunPlan(run_id="serial", tr_s=0.2, n_volumes=4, trials=trials)
    triggers = SerialTriggers(port, clock, byte=b"5")

    def box_pulses() -> None:
        for _ in range(plan.n_volumes):
            os.write(box, b"5")
            time.sleep(plan.tr_s)

    threading.Timer(0.3, box_pulses).start()
    try:
        log = present_run(
            plan, VirtualDisplay(clock, 60.0), triggers, clock, images=plan.load_images(tmp_path),
            trigger_timeout_s=5,
        )  # fmt: skip
    finally:
        triggers.stop()
    assert len(log.triggers_s) == plan.n_volumes
    assert all(0.1 < b - a < 0.35 for a, b in itertools.pairwise(log.triggers_s))  # one a TR
    (trial,) = log.trials
    assert trial.actual_onset_s == pytest.approx(0.4, abs=0.1)  # from the first trigger, on its clock


def test_a_port_that_cannot_be_opened_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(PresenterError, match=r"cannot open the trigger port .*ttyUSB"):
        SerialTriggers(str(tmp_path / "ttyUSB9"), ScaledClock(1.0))
