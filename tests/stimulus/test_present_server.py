"""The presenter as a server: signed plans and triggers over ZeroMQ, events back as they happen."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from db.base import MessageType, ScaledClock, Signer
from db.base.wire import encode
from stimulus import PresenterError
from stimulus.present import PlannedTrial, PresenterEvent, RunPlan, VirtualDisplay
from stimulus.present.channel import ChannelTriggers, PresenterChannel, PresenterClient
from stimulus.present.events import LogReady, Onset, Refused, RunError, StaleTriggers, Triggered
from stimulus.present.server import Presenter

KEY = b"k" * 32
SPEED = 5.0  # clock seconds per real second: a 12 s run takes 2.4 s
REFRESH_HZ = 60.0


def _plan(stimuli: dict[str, str], run_id: str = "run-1", n_volumes: int = 6) -> RunPlan:
    names = sorted(stimuli)
    trials = tuple(
        PlannedTrial(stimulus=names[k], sha256=stimuli[names[k]], onset_s=1.0 + 3.0 * k, duration_s=1.0,
                     condition="target", target_roi="V1")
        for k in range(3)
    )  # fmt: skip
    return RunPlan(run_id=run_id, tr_s=2.0, n_volumes=n_volumes, trials=trials)


class Server:
    def __init__(self, root: Path, trigger_timeout_s: float = 20.0) -> None:
        self.clock = ScaledClock(SPEED)
        self.display = VirtualDisplay(self.clock, REFRESH_HZ)
        self.channel = PresenterChannel("tcp://127.0.0.1:0", KEY, self.clock)
        self.presenter = Presenter(
            self.channel, self.display, self.clock, triggers=lambda plan: ChannelTriggers(self.channel),
            stimulus_dir=root, events_dir=root / "events", trigger_timeout_s=trigger_timeout_s,
        )  # fmt: skip
        self.thread = threading.Thread(target=self.presenter.serve, daemon=True)
        self.thread.start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path)
    yield server
    if server.thread.is_alive():
        with PresenterClient(server.channel.endpoint, KEY) as client:
            client.command("quit")
        server.thread.join(timeout=10)
    server.channel.close()


def _events_until(client: PresenterClient, kinds: set[str], timeout_s: float = 20.0) -> list[PresenterEvent]:
    events = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        event = client.next_event(deadline - time.monotonic())
        if event is None:
            break
        events.append(event)
        if event.type in kinds:
            return events
    raise AssertionError(f"no {kinds} event within {timeout_s} s; got {[e.type for e in events]}")


def _scan(endpoint: str, plan: RunPlan, stop: threading.Event | None = None) -> threading.Thread:
    """Send the plan's triggers at its TR on the scaled clock from a peer of their own, as a scanner does."""
    scanner = PresenterClient(endpoint, KEY, role="scanner")

    def send() -> None:
        with scanner:
            start = time.monotonic()
            for k in range(plan.n_volumes):
                if stop is not None and stop.is_set():
                    return
                time.sleep(max(0.0, start + k * plan.tr_s / SPEED - time.monotonic()))
                scanner.trigger(k, k * plan.tr_s)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_signed_plan_is_presented_on_network_triggers_and_reported_as_it_happens(
    server: Server, stimuli: dict[str, str], tmp_path: Path
) -> None:
    plan = _plan(stimuli)
    with PresenterClient(server.channel.endpoint, KEY) as client:
        assert client.status["state"] == "idle"
        assert client.status["refresh_hz"] == REFRESH_HZ
        client.send_plan(plan)
        armed = _events_until(client, {"armed"})
        _scan(server.channel.endpoint, plan)
        events = armed + _events_until(client, {"log"})
    kinds = [e.type for e in events]
    assert kinds[0] == "armed"
    assert kinds[-2:] == ["done", "log"]
    assert all(e.run_id == "run-1" for e in events)
    onsets = [e for e in events if isinstance(e, Onset)]
    assert [e.trial for e in onsets] == [0, 1, 2]
    assert kinds.index("onset") < kinds.index("offset")  # events arrive in the order they happened
    # Within a frame of the plan, give or take what a busy machine adds on a clock 5 times real time.
    errors = sorted(abs(e.onset_error_ms) for e in onsets)
    assert errors[1] < 2e3 / REFRESH_HZ + 1.0
    assert errors[-1] < 100.0
    triggers = [e.time_s for e in events if isinstance(e, Triggered)]
    assert triggers == pytest.approx([2.0 * k for k in range(6)], abs=0.05)
    last = events[-1]
    assert isinstance(last, LogReady)
    assert [t.actual_onset_s for t in last.log.trials] == [e.actual_onset_s for e in onsets]
    assert not last.log.aborted
    assert (tmp_path / "events" / "run-1_events.tsv").exists()
    assert last.events_tsv == str(tmp_path / "events" / "run-1_events.tsv")


def test_a_plan_that_cannot_be_armed_is_refused_by_name_and_the_next_one_is_served(
    server: Server, stimuli: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "img1.png").write_bytes(b"altered")
    with PresenterClient(server.channel.endpoint, KEY) as client:
        client.send_plan(_plan(stimuli, "bad"))
        refused = _events_until(client, {"refused"})[-1]
        assert isinstance(refused, Refused)
        assert refused.run_id == "bad"
        assert "img1.png: sha256" in refused.error
        client.command("log", run_id="bad")
        error = _events_until(client, {"error"})[-1]
        assert isinstance(error, RunError)
        assert "no run 'bad' has been presented" in error.error
        plan = RunPlan(run_id="good", tr_s=2.0, n_volumes=3, trials=_plan(stimuli).trials[:1])  # img0 only
        client.send_plan(plan)
        _events_until(client, {"armed"})
        _scan(server.channel.endpoint, plan)
        final = _events_until(client, {"log"})[-1]
        assert isinstance(final, LogReady)
        assert final.log.trials[0].actual_onset_s is not None
        client.command("log", run_id="good")  # a controller that missed the events asks again
        assert _events_until(client, {"log"})[-1].run_id == "good"


def test_forged_replayed_and_misaddressed_messages_are_dropped(
    server: Server, stimuli: dict[str, str]
) -> None:
    plan = _plan(stimuli)
    with PresenterClient(server.channel.endpoint, KEY) as client:
        ctx = zmq.Context.instance()
        rogue = ctx.socket(zmq.DEALER)
        rogue.connect(server.channel.endpoint)
        try:
            # Signed with another key.
            forged = encode(Signer(b"x" * 32), MessageType.PLAN, {"plan": {}}, session=client.nonce, seq=99,
                            to=client.presenter)  # fmt: skip
            rogue.send_multipart(forged)
            # A hello then a plan addressed to another presenter session.
            rogue.send_multipart(
                encode(Signer(KEY), MessageType.HELLO, {"role": "controller"}, session="r", seq=1)
            )
            rogue.send_multipart(
                encode(Signer(KEY), MessageType.PLAN, {"plan": {}}, session="r", seq=2, to="old")
            )
            # A scanner may send triggers, not plans.
            scanner = PresenterClient(server.channel.endpoint, KEY, role="scanner")
            scanner.send_plan(plan)
            scanner.close()
            time.sleep(0.3)
            assert server.channel.rejected == {"forged": 1, "replayed": 1, "unsupported": 1}
            assert client.next_event(0.2) is None  # nothing was armed
        finally:
            rogue.close(linger=0)


def test_abort_ends_the_run_and_keeps_what_was_shown(server: Server, stimuli: dict[str, str]) -> None:
    plan = _plan(stimuli)
    with PresenterClient(server.channel.endpoint, KEY) as client:
        client.send_plan(plan)
        _events_until(client, {"armed"})
        stop = threading.Event()
        _scan(server.channel.endpoint, plan, stop).join(timeout=0)
        _events_until(client, {"offset"})  # the first trial has been shown
        client.command("abort")
        events = _events_until(client, {"log"})
        stop.set()
    last = events[-1]
    assert isinstance(last, LogReady)
    assert last.log.aborted
    shown = [t.shown for t in last.log.trials]
    assert shown[0]
    assert not shown[2]
    assert any(e.type == "aborted" for e in events)


def test_triggers_before_arming_are_dropped_and_a_missing_trigger_times_out(
    stimuli: dict[str, str], tmp_path: Path
) -> None:
    server = Server(tmp_path, trigger_timeout_s=1.0)
    try:
        with PresenterClient(server.channel.endpoint, KEY) as client:
            client.trigger(0, 0.0)
            client.trigger(1, 2.0)
            time.sleep(0.2)
            client.send_plan(_plan(stimuli))
            events = _events_until(client, {"error"}, timeout_s=10)
            client.command("quit")
            _events_until(client, {"ack"})
    finally:
        server.thread.join(timeout=10)
        server.channel.close()
    assert not server.thread.is_alive()  # quit stops the server
    assert StaleTriggers(run_id="run-1", count=2) in events
    error = events[-1]
    assert isinstance(error, RunError)
    assert "no trigger within 1 s from the network" in error.error
    assert any(e.type == "trigger_timeout" for e in events)


def test_a_client_with_no_presenter_is_told_where_it_looked() -> None:
    with pytest.raises(PresenterError, match=r"no presenter answered at tcp://127.0.0.1:1 within 0.2 s"):
        PresenterClient("tcp://127.0.0.1:1", KEY, timeout_s=0.2)
