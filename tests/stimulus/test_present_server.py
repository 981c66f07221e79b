"""The presenter as a server: signed plans and triggers over ZeroMQ, events back as they happen."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from db.base import MessageType, ScaledClock, Signer, WireSession
from db.base.wire import PROTOCOL_TAG, PROTOCOL_VERSION, encode
from stimulus import PresenterError
from stimulus.present import PlannedTrial, PresenterEvent, RunPlan, VirtualDisplay
from stimulus.present.channel import MAX_PEERS, ChannelTriggers, PresenterChannel, PresenterClient
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
        assert "img1.png: its contents differ from the plan's sha256" in refused.error
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


# --- the attack-and-fault probe: replays (case 1), plans that stopped the presenter (6, 7) ------------


class _Eavesdropped:
    """A controller's conversation with a presenter, every frame recorded as someone on the network would."""

    def __init__(self, endpoint: str) -> None:
        self.session = WireSession(
            KEY, takes={MessageType.STATUS, MessageType.PRESENTATION}, max_message_bytes=1 << 22, name="c"
        )
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.frames: list[list[bytes]] = []
        self.presenter = ""

    def send(self, kind: MessageType, content: dict[str, Any]) -> None:
        frames = [bytes(f) for f in self.session.encode(kind, content, to=self.presenter)]
        self.frames.append(frames)
        self.sock.send_multipart(frames)

    def status(self) -> dict[str, Any]:
        while self.sock.poll(5000):
            message = self.session.decode(self.sock.recv_multipart())
            if message.type is MessageType.STATUS:
                self.presenter = message.session
                return message.content
        raise AssertionError("no status from the presenter")


def _replay(endpoint: str, recorded: list[list[bytes]]) -> int:
    """Send recorded frames from a connection of their own; return how many messages came back."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for frames in recorded:
            sock.send_multipart(frames)
        answers = 0
        while sock.poll(500):
            sock.recv_multipart()
            answers += 1
        return answers
    finally:
        sock.close(linger=0)


def _send_as(client: PresenterClient, kind: MessageType, content: dict[str, Any]) -> None:
    """Send ``content`` from ``client``'s session, signed, as JSON allows it (NaN and Infinity included)."""
    session = client._session
    session._seq += 1
    fields = {"id": "x", "type": kind.value, "session": session.nonce, "seq": session._seq,
              "sent": "2026-12-01T00:00:00Z", "to": client.presenter,
              "version": PROTOCOL_VERSION}  # fmt: skip
    header = json.dumps(fields).encode()
    body = json.dumps(content).encode()  # allow_nan: a hostile sender's encoder
    client._socket._sock.send_multipart([PROTOCOL_TAG, Signer(KEY).signature(header, body, []), header, body])


def test_a_recorded_session_replayed_without_the_key_runs_nothing_here_or_on_a_restarted_presenter(
    server: Server, stimuli: dict[str, str], tmp_path: Path
) -> None:
    plan = _plan(stimuli, n_volumes=4)
    with PresenterClient(server.channel.endpoint, KEY) as observer:
        controller = _Eavesdropped(server.channel.endpoint)
        controller.send(MessageType.HELLO, {"role": "controller"})
        assert controller.status()["joined"] is False  # the challenge: the presenter's nonce, nothing more
        controller.send(MessageType.HELLO, {"role": "controller"})
        assert controller.status()["joined"] is True
        controller.send(MessageType.PLAN, {"plan": dataclasses.asdict(plan)})
        _events_until(observer, {"armed"})
        for k in range(plan.n_volumes):
            controller.send(MessageType.TRIGGER, {"index": k, "scanner_time_s": 2.0 * k})
        _events_until(observer, {"log"})
        controller.sock.close(linger=0)
        events_file = tmp_path / "events" / "run-1_events.tsv"
        written = events_file.stat().st_mtime_ns
        triggers = server.channel.triggers_received

        # The whole recording again, from a new connection, to the same presenter: all of it refused.
        before = server.channel.rejected["replayed"]
        assert _replay(server.channel.endpoint, controller.frames) == 0
        assert server.channel.rejected["replayed"] - before == len(controller.frames)
        assert observer.next_event(1.0) is None  # nothing armed, nothing run
        assert server.channel.triggers_received == triggers
        assert events_file.stat().st_mtime_ns == written

    # The same recording to a presenter started since (a new nonce): each of the two hellos earns a
    # status (the new challenge), and nothing else is taken.
    restarted = Server(tmp_path / "restarted")
    try:
        assert _replay(restarted.channel.endpoint, controller.frames) == 2
        assert restarted.channel.rejected["replayed"] == len(controller.frames) - 2
        assert restarted.channel.triggers_received == 0
        with PresenterClient(restarted.channel.endpoint, KEY) as client:
            assert client.status["peers"] == 1  # itself: the replayed hello joined nobody
            assert client.status["state"] == "idle"
            client.command("quit")
        restarted.thread.join(timeout=10)
    finally:
        restarted.channel.close()


def test_the_presenters_peers_are_bounded(server: Server) -> None:
    clients = [PresenterClient(server.channel.endpoint, KEY) for _ in range(MAX_PEERS + 8)]
    try:
        assert clients[-1].status["peers"] == MAX_PEERS
    finally:
        for client in clients:
            client.close()


BAD_PLANS = {  # what is changed in a good plan, and what the refusal must say
    "nan-onset": (lambda p: p["trials"][0].update(onset_s=math.nan), r"trials\[0\] onset_s must be a finite"),
    "infinite-tr": (lambda p: p.update(tr_s=math.inf), "tr_s must be a finite number"),
    "huge-tr": (lambda p: p.update(tr_s=1e9), r"tr_s \(1000000000.0\) must be a number of seconds"),
    "string-volumes": (lambda p: p.update(n_volumes="6"), "n_volumes must be an integer"),
    "list-duration": (lambda p: p["trials"][1].update(duration_s=[1.0]), r"trials\[1\] duration_s must be"),
    "trials-object": (lambda p: p.update(trials={"a": 1}), "trials must be a list"),
    "short-colour": (lambda p: p["fixation"].update(colour=[1, 2]), "colour must have 3 items"),
    "run-id-path": (lambda p: p.update(run_id="../../../x"), "run_id '../../../x' must be letters, digits"),
    "stimulus-up": (lambda p: p["trials"][0].update(stimulus="../x.png"), "must be a path relative to"),
    "stimulus-absolute": (lambda p: p["trials"][0].update(stimulus="/etc/passwd"), "must be a path relative"),
}


@pytest.mark.parametrize("bad", sorted(BAD_PLANS))
def test_a_plan_with_bad_values_is_refused_by_name_and_the_presenter_serves_on(
    server: Server, stimuli: dict[str, str], tmp_path: Path, bad: str
) -> None:
    change, named = BAD_PLANS[bad]
    raw = json.loads(_plan(stimuli).to_json())
    change(raw)
    with PresenterClient(server.channel.endpoint, KEY) as client:
        _send_as(client, MessageType.PLAN, {"plan": raw})
        refused = _events_until(client, {"refused"})[-1]
        assert isinstance(refused, Refused)
        assert re.search(named, refused.error), refused.error
        assert client.hello()["state"] == "idle"  # the network thread and the run loop both serve on
        client.send_plan(_plan(stimuli, run_id="after"))
        _events_until(client, {"armed"})
        client.command("abort")
        _events_until(client, {"error", "log"})
    assert not (tmp_path.parent / "x_events.tsv").exists()


def test_a_stimulus_linked_outside_the_folder_is_refused_without_a_word_of_its_contents(
    server: Server, stimuli: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.png"
    secret.write_bytes(b"the contents of a file the presenter can read")
    (tmp_path / "link.png").symlink_to(secret)
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    trial = PlannedTrial(stimulus="link.png", sha256="0" * 64, onset_s=1.0, duration_s=1.0)
    with PresenterClient(server.channel.endpoint, KEY) as client:
        client.send_plan(RunPlan(run_id="linked", tr_s=2.0, n_volumes=2, trials=(trial,)))
        refused = _events_until(client, {"refused"})[-1]
        assert isinstance(refused, Refused)
        assert "resolves outside the stimulus folder" in refused.error
        img = PlannedTrial(stimulus="img0.png", sha256="0" * 64, onset_s=1.0, duration_s=1.0)
        client.send_plan(RunPlan(run_id="altered", tr_s=2.0, n_volumes=2, trials=(img,)))
        refused = _events_until(client, {"refused"})[-1]
        assert isinstance(refused, Refused)
        assert "contents differ from the plan's sha256" in refused.error
        actual = stimuli["img0.png"]
        assert all(actual[k : k + 8] not in refused.error for k in range(0, 64, 8))
    assert digest[:8] not in refused.error
