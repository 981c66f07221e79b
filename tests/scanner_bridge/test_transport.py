"""Delivery: index order, duplicates, missing and late volumes, restarts on either side, bad messages."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from db.base import MessageType, Signer, VolumeStatus, WireSession
from db.base.wire import decode, encode
from scanner_bridge import (
    BridgeEvent,
    EventCode,
    PublisherConfig,
    ReceiverConfig,
    ReceiveTimeoutError,
    ScaledClock,
    SeriesChoice,
    SeriesInfo,
    Spool,
    SpoolError,
    Volume,
    VolumePublisher,
    VolumeReceiver,
)
from scanner_bridge.transport import default_spool_dir

ANY_PORT = "tcp://127.0.0.1:*"
TR_S = 0.1
# Half a second before a gap is declared: short for a test, long against a loaded machine's hiccups.
FAST = ReceiverConfig(missing_after_trs=5.0, default_tr_s=TR_S, heartbeat_s=0.05)


def make_volume(index: int) -> Volume:
    data = np.full((4, 5, 3), index, dtype=np.int16)
    return Volume(index=index, data=data, affine=np.eye(4), series="s", tr_s=TR_S).stamped("seen")


@pytest.fixture
def publisher(tmp_path: Path, key: bytes) -> Iterator[VolumePublisher]:
    with VolumePublisher(ANY_PORT, key, Spool(tmp_path / "spool")) as pub:
        yield pub


def take(receiver: VolumeReceiver, n: int) -> list[tuple[int, str]]:
    return [(a.index, a.status.value) for a in (receiver.get(timeout_s=5) for _ in range(n))]


def test_volumes_come_out_in_index_order_whatever_the_sending_order(
    publisher: VolumePublisher, key: bytes
) -> None:
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        for i in (1, 0, 3, 2, 4):
            publisher.publish(make_volume(i))
        arrivals = [receiver.get(timeout_s=5) for _ in range(5)]
    assert [a.index for a in arrivals] == [0, 1, 2, 3, 4]
    assert all(a.status is VolumeStatus.OK for a in arrivals)
    assert [int(a.volume.data[0, 0, 0]) for a in arrivals if a.volume] == [0, 1, 2, 3, 4]
    assert all(a.volume and a.volume.latency_ms("seen", "received") is not None for a in arrivals)


def test_duplicates_are_dropped_and_counted(publisher: VolumePublisher, key: bytes) -> None:
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        publisher.publish(make_volume(0))
        assert take(receiver, 1) == [(0, "ok")]
        for i in (0, 1, 1, 2):
            publisher.publish(make_volume(i))
        assert take(receiver, 2) == [(1, "ok"), (2, "ok")]
        with pytest.raises(ReceiveTimeoutError):
            receiver.get(timeout_s=0.3)
        assert receiver.stats.duplicates == 2


def test_a_gap_is_declared_missing_then_a_late_arrival_is_still_delivered(
    publisher: VolumePublisher, key: bytes
) -> None:
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        for i in (0, 1, 3, 4):
            publisher.publish(make_volume(i))
        assert take(receiver, 5) == [(0, "ok"), (1, "ok"), (2, "missing"), (3, "ok"), (4, "ok")]
        publisher.publish(make_volume(2))
        late = receiver.get(timeout_s=5)
        assert (late.index, late.status) == (2, VolumeStatus.LATE)
        assert late.volume is not None
        assert int(late.volume.data[0, 0, 0]) == 2
        assert receiver.stats.as_dict() | {"rejected_by_reason": {}} == {
            "received": 5,
            "late": 1,
            "missing": 1,
            "duplicates": 0,
            "rejected": 0,
            "rejected_by_reason": {},
            "events": 0,
            "other_series": 0,
        }


def test_a_missing_volume_waits_for_its_deadline_on_the_session_clock(
    publisher: VolumePublisher, key: bytes
) -> None:
    # 2 TRs of 10 s at 100x speed: 0.2 s of real time, not 20 s.
    config = ReceiverConfig(missing_after_trs=2.0, default_tr_s=10.0, heartbeat_s=0.05)
    with VolumeReceiver(publisher.endpoint, key, config=config, clock=ScaledClock(100)) as receiver:
        publisher.publish(make_volume(0))
        publisher.publish(make_volume(2))
        assert take(receiver, 3) == [(0, "ok"), (1, "missing"), (2, "ok")]


def test_nothing_is_declared_missing_without_a_sign_the_run_went_on(
    publisher: VolumePublisher, key: bytes
) -> None:
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        publisher.publish(make_volume(0))
        assert take(receiver, 1) == [(0, "ok")]
        with pytest.raises(ReceiveTimeoutError, match="no volume 1"):
            receiver.get(timeout_s=10 * TR_S)
        assert receiver.stats.missing == 0


def test_a_restarted_receiver_gets_what_it_missed(publisher: VolumePublisher, key: bytes) -> None:
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        publisher.publish(make_volume(0))
        assert take(receiver, 1) == [(0, "ok")]
    for i in (1, 2, 3):  # sent while no receiver runs
        publisher.publish(make_volume(i))
    with VolumeReceiver(publisher.endpoint, key, start_index=1, config=FAST) as receiver:
        assert take(receiver, 3) == [(1, "ok"), (2, "ok"), (3, "ok")]
        assert receiver.stats.duplicates == 0


def test_a_restarted_bridge_serves_none_of_an_earlier_runs_volumes_of_the_same_names(
    tmp_path: Path, key: bytes
) -> None:
    # Probe case 3: an earlier session wrote the same series and file names into the same export folder.
    earlier = [
        dataclasses.replace(make_volume(i), data=np.full((4, 5, 3), 100 + i, np.int16)) for i in range(3)
    ]
    with VolumePublisher(ANY_PORT, key, Spool(tmp_path / "spool")) as first:
        for volume in earlier:
            first.publish(volume)
        endpoint = first.endpoint
        with VolumeReceiver(endpoint, key, config=FAST) as receiver:
            assert take(receiver, 3) == [(0, "ok"), (1, "ok"), (2, "ok")]
    # A new bridge (its watcher reads the run's files again after a restart; here a new session's).
    with VolumePublisher(endpoint, key, Spool(tmp_path / "spool")) as second:
        second.publish(make_volume(0))
        with VolumeReceiver(endpoint, key, config=FAST) as receiver:
            arrival = receiver.get(timeout_s=5)
            assert arrival.volume is not None
            assert int(arrival.volume.data[0, 0, 0]) == 0  # this session's
            with pytest.raises(ReceiveTimeoutError):
                receiver.get(timeout_s=0.3)  # nothing of the earlier session comes as volume 1 or 2
            assert receiver.stats.received == 1
    assert list((tmp_path / "spool").iterdir()) == []  # each run's spool is removed with its bridge


def test_a_volume_lost_on_the_way_is_asked_for_again(
    publisher: VolumePublisher, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = publisher._send_volume
    lost: list[int] = []

    def lossy(identity: bytes, content, buffers, digests, index: int) -> None:
        if index == 1 and not lost:  # the first send of volume 1 never arrives
            lost.append(index)
            return
        send(identity, content, buffers, digests, index)

    monkeypatch.setattr(publisher, "_send_volume", lossy)
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        publisher.publish(make_volume(0))
        assert take(receiver, 1) == [(0, "ok")]
        publisher.publish(make_volume(1))
        publisher.publish(make_volume(2))
        assert take(receiver, 2) == [(1, "ok"), (2, "ok")]
    assert lost == [1]


class FakeBridge:
    """A ROUTER socket speaking the protocol by hand, to send what a real bridge never would."""

    def __init__(self, key: bytes) -> None:
        self.signer = Signer(key)
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ANY_PORT)
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.seq = 0

    def wait_for_hello(self, *, announce: bool = True) -> tuple[bytes, str]:
        """The first hello's sender, told (``announce``) the bridge has series "s", which it then takes."""
        assert self.sock.poll(5000)
        identity, *frames = self.sock.recv_multipart()
        hello = decode(self.signer, frames, max_bytes=1 << 16)
        nonce = hello.header["session"]
        if not announce:
            return identity, nonce
        self.seq += 1
        status = {"series": "", "joined": True, "catalog": [SeriesInfo.of(make_volume(0)).to_wire()]}
        self.sock.send_multipart(
            [
                identity,
                *encode(self.signer, MessageType.STATUS, status, session="fake", seq=self.seq, to=nonce),
            ]
        )
        return identity, nonce

    def volume_frames(self, index: int, to: str, signer: Signer | None = None) -> list[bytes]:
        self.seq += 1
        content, buffers = make_volume(index).to_wire()
        frames = encode(
            signer or self.signer, MessageType.VOLUME, content, buffers, session="fake", seq=self.seq, to=to
        )
        return [bytes(f) for f in frames]

    def close(self) -> None:
        self.sock.close(linger=0)


def test_bad_messages_are_dropped_with_their_reason_and_the_receiver_goes_on(key: bytes) -> None:
    bridge = FakeBridge(key)
    try:
        with VolumeReceiver(bridge.endpoint, key, config=FAST) as receiver:
            identity, nonce = bridge.wait_for_hello()
            good = bridge.volume_frames(0, nonce)
            bridge.sock.send_multipart([identity, *good])
            assert take(receiver, 1) == [(0, "ok")]
            forged = bridge.volume_frames(1, nonce, signer=Signer(b"x" * 32))
            unsigned = bridge.volume_frames(1, nonce)
            unsigned[1] = b""
            truncated = bridge.volume_frames(1, nonce)[:3]
            # Without its voxels a message no longer matches its signature, which covers their hash.
            no_voxels = bridge.volume_frames(1, nonce)[:4]
            other_receiver = bridge.volume_frames(1, "somebody-else")
            garbage_content = bridge.volume_frames(1, nonce)
            garbage_content[3] = b"{not json"
            for frames in (good, forged, unsigned, truncated, no_voxels, other_receiver, garbage_content):
                bridge.sock.send_multipart([identity, *frames])
            bridge.sock.send_multipart([identity, *bridge.volume_frames(1, nonce)])
            assert take(receiver, 1) == [(1, "ok")]
            assert dict(receiver.stats.rejected) == {
                "replayed": 2,
                "forged": 3,
                "unsigned": 1,
                "truncated": 1,
            }
    finally:
        bridge.close()


def test_oversized_messages_are_dropped(key: bytes) -> None:
    bridge = FakeBridge(key)
    try:
        config = ReceiverConfig(default_tr_s=TR_S, heartbeat_s=0.05, max_message_bytes=200)
        with VolumeReceiver(bridge.endpoint, key, config=config) as receiver:
            identity, nonce = bridge.wait_for_hello(announce=False)
            bridge.sock.send_multipart([identity, *bridge.volume_frames(0, nonce)])
            with pytest.raises(ReceiveTimeoutError):
                receiver.get(timeout_s=0.3)
            assert dict(receiver.stats.rejected) == {"oversized": 1}
    finally:
        bridge.close()


def test_the_bridge_drops_forged_hellos(publisher: VolumePublisher, key: bytes) -> None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(publisher.endpoint)
    try:
        content = {"next_index": 0, "wanted": []}
        sock.send_multipart(encode(Signer(b"y" * 32), MessageType.HELLO, content, session="n", seq=1))
        publisher.publish(make_volume(0))
        assert not sock.poll(300), "a forged hello must not subscribe"
        assert publisher.subscriber_count == 0
        assert dict(publisher.rejected) == {"forged": 1}
    finally:
        sock.close(linger=0)


def test_spool_files_are_whole_or_absent(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(make_volume(5))
    spool.put(dataclasses.replace(make_volume(5), series="t", data=np.full((4, 5, 3), 50, np.int16)))
    assert spool.indices("s") == [5]
    assert not list(spool.run_dir.rglob("*.tmp"))
    np.testing.assert_array_equal(spool.get("s", 5).data, make_volume(5).data)
    assert int(spool.get("t", 5).data[0, 0, 0]) == 50  # each series its own volume 5
    (entry,) = [p for p in spool.run_dir.rglob("00005.vol") if (p.parent / "series.txt").read_text() == "s\n"]
    content_length = int.from_bytes(entry.read_bytes()[:4], "big")
    assert json.loads(entry.read_bytes()[4 : 4 + content_length])["index"] == 5


def in_series(series: str, index: int, value: int | None = None) -> Volume:
    data = np.full((4, 5, 3), index if value is None else value, np.int16)
    return dataclasses.replace(make_volume(index), series=series, data=data)


def test_one_bridge_serves_each_receiver_the_series_it_takes_and_no_other(
    publisher: VolumePublisher, key: bytes
) -> None:
    """A session's series on one bridge: an earlier run, a localizer of another shape, the run."""
    for i in range(3):
        publisher.publish(in_series("run1", i, 100 + i))
    localizer = dataclasses.replace(in_series("localizer", 0), data=np.zeros((8, 8, 3), np.int16))
    publisher.publish(localizer)
    run2 = SeriesChoice(shape=(4, 5, 3), exclude=frozenset({"run1"}))
    with (
        VolumeReceiver(publisher.endpoint, key, config=FAST, choice=run2) as receiver,
        VolumeReceiver(publisher.endpoint, key, config=FAST, choice=SeriesChoice(name="run1")) as again,
    ):
        assert [s.series for s in receiver.wait_joined(5)] == ["run1", "localizer"]
        with pytest.raises(ReceiveTimeoutError):
            receiver.get(timeout_s=0.3)  # neither the earlier run nor the localizer is this run
        for i in range(3):  # the run, its volumes interleaved with another series' of the same names
            publisher.publish(in_series("run2", i, 200 + i))
            publisher.publish(in_series("other", i, 900 + i))
        arrivals = [receiver.get(timeout_s=5) for _ in range(3)]
        earlier = [again.get(timeout_s=5) for _ in range(3)]
        assert receiver.series == "run2"
        assert [s.series for s in receiver.catalog] == ["run1", "localizer", "run2", "other"]
        assert receiver.catalog[2].highest_index == 2
    assert [(a.index, int(a.volume.data[0, 0, 0])) for a in arrivals if a.volume] == [
        (0, 200),
        (1, 201),
        (2, 202),
    ]
    assert [int(a.volume.data[0, 0, 0]) for a in earlier if a.volume] == [100, 101, 102]


# --- the attack-and-fault probe: replayed hellos (case 2), the spool (cases 3 and 4) ---------------


def test_a_recorded_hello_replayed_to_a_restarted_bridge_earns_a_status_and_no_volume(
    tmp_path: Path, key: bytes
) -> None:
    receiver_side = WireSession(key, takes={MessageType.STATUS}, max_message_bytes=1 << 20, name="r")
    recorded = [  # a receiver's hellos as an eavesdropper keeps them: unaddressed, then answering a bridge
        [bytes(f) for f in receiver_side.encode(MessageType.HELLO, {"next_index": 0, "wanted": []}, to=to)]
        for to in ("", "nonce-of-the-bridge-before")
        for _ in range(8)
    ]
    with VolumePublisher(
        ANY_PORT, key, Spool(tmp_path / "spool"), config=PublisherConfig(max_subscribers=2)
    ) as bridge:
        for i in range(20):
            bridge.publish(make_volume(i))
        with VolumeReceiver(bridge.endpoint, key, config=FAST) as receiver:
            assert len(take(receiver, 20)) == 20  # all of it is in the spool
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(bridge.endpoint)
        try:
            for frames in recorded:
                sock.send_multipart(frames)
            answers: list[str] = []
            received = 0
            while sock.poll(500):
                frames = sock.recv_multipart()
                received += sum(len(f) for f in frames)
                answers.append(json.loads(frames[2])["type"])
        finally:
            sock.close(linger=0)
        assert answers == ["status"] * len(recorded)
        assert received < 400 * len(recorded)  # a status each, of a few hundred bytes: no amplification
        assert bridge.subscriber_count <= 1  # no slot taken: a real receiver still joins
        with VolumeReceiver(bridge.endpoint, key, config=FAST) as late:
            assert len(take(late, 20)) == 20


def test_a_spool_folder_others_can_write_or_a_link_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(
        SpoolError, match=r"can be written by others \(mode 0777.*choose a folder of your own"
    ):
        Spool(shared)
    (tmp_path / "own").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "own")
    with pytest.raises(SpoolError, match="is a symbolic link"):
        Spool(tmp_path / "link")
    with pytest.raises(SpoolError, match="which anyone can write"):
        Spool(shared / "inside")
    spool = Spool(tmp_path / "own")
    assert stat.S_IMODE(spool.run_dir.stat().st_mode) == 0o700
    spool.close()


def test_the_default_spool_is_not_in_the_world_writable_temporary_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_spool_dir() == Path.home() / ".cache" / "cortexloop" / "spool"
    assert not default_spool_dir().is_relative_to(tempfile.gettempdir())


def test_a_volume_whose_file_is_gone_or_rewritten_is_not_served_again(tmp_path: Path, key: bytes) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"vol_{i:05d}.nii"
        path.write_bytes(b"as read")
        files.append(path)
    volumes = [
        dataclasses.replace(make_volume(i), source=str(files[i])).stamped("written", files[i].stat().st_mtime)
        for i in range(3)
    ]
    events: list[BridgeEvent] = []
    with VolumePublisher(ANY_PORT, key, Spool(tmp_path / "spool")) as bridge:
        for volume in volumes:
            bridge.publish(volume)
        files[1].unlink()
        files[2].write_bytes(b"another session's volume")
        os.utime(files[2], (1, 1))
        with VolumeReceiver(bridge.endpoint, key, config=FAST, on_event=events.append) as receiver:
            assert take(receiver, 1) == [(0, "ok")]
            with pytest.raises(ReceiveTimeoutError):
                receiver.get(timeout_s=0.5)
    said = {e.index: e.message for e in events if e.code is EventCode.REWRITTEN}
    assert "is gone since it was read" in said[1]
    assert "was written again since it was read" in said[2]


def test_volumes_a_frozen_bridge_sends_after_their_deadline_are_late_and_the_next_on_time_are_not(
    publisher: VolumePublisher, key: bytes
) -> None:
    # Probe case 8: a bridge frozen for 20 s delivered its volumes as `ok`.
    with VolumeReceiver(publisher.endpoint, key, config=FAST) as receiver:
        for i in range(3):
            publisher.publish(make_volume(i))
            time.sleep(TR_S)
        assert take(receiver, 3) == [(0, "ok"), (1, "ok"), (2, "ok")]
        time.sleep(20 * TR_S)  # the bridge froze; then it sends what the scanner wrote meanwhile, at once
        for i in range(3, 30):
            publisher.publish(make_volume(i))
        statuses = dict(take(receiver, 27))
    # Volume i was due (i - 2) TRs after volume 2 and is late 5 TRs (FAST) after that: those written
    # early in the freeze are late, those written at its end (within 5 TRs of it) are not.
    assert {statuses[i] for i in range(3, 15)} == {"late"}
    assert {statuses[i] for i in range(27, 30)} == {"ok"}
    assert receiver.stats.late == sum(s == "late" for s in statuses.values())


def test_a_receiver_naming_a_series_the_bridge_lacks_has_it_asked_for(tmp_path: Path, key: bytes) -> None:
    asked: list[str] = []
    with VolumePublisher(ANY_PORT, key, Spool(tmp_path / "spool"), on_wanted=asked.append) as publisher:
        choice = SeriesChoice(name="run2")
        with VolumeReceiver(publisher.endpoint, key, config=FAST, choice=choice) as receiver:
            receiver.wait_joined(5)
            deadline = time.monotonic() + 5
            while not asked and time.monotonic() < deadline:
                time.sleep(0.01)
            assert asked == ["run2"]  # the watcher then reads its files
            publisher.publish(in_series("run2", 0, 7))
            arrival = receiver.get(timeout_s=5)
    assert arrival.volume is not None
    assert int(arrival.volume.data[0, 0, 0]) == 7
