"""The wire every process speaks: what is signed, what is refused and why, one freshness rule, key files."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest
import zmq

from db.base import (
    EndpointError,
    KeyFileError,
    MessageType,
    ProtocolError,
    RejectReason,
    RouterService,
    Signer,
    WireSession,
    generate_key_file,
    load_key,
)
from db.base.channel import MAX_SENDERS, RATE_BURST
from db.base.wire import decode, encode

LIMIT = 1 << 24
VOXELS = bytes(range(256)) * 4


def _frames(signer: Signer) -> list[bytes]:
    content = {"index": 7, "series": "5/1.2.3"}
    return [
        bytes(f) for f in encode(signer, MessageType.VOLUME, content, [VOXELS], session="b", seq=1, to="r")
    ]


def test_a_message_round_trips_with_its_buffers(key: bytes) -> None:
    signer = Signer(key)
    message = decode(signer, _frames(signer), max_bytes=LIMIT)
    assert (message.type, message.session, message.header["to"]) == (MessageType.VOLUME, "b", "r")
    assert message.content == {"index": 7, "series": "5/1.2.3"}
    assert bytes(message.buffers[0]) == VOXELS
    assert message.received_at > 0


@pytest.mark.parametrize("frame", [2, 3, 4], ids=["header", "content", "buffer"])
def test_any_altered_byte_is_forged(key: bytes, frame: int) -> None:
    signer = Signer(key)
    frames = _frames(signer)
    altered = bytearray(frames[frame])
    altered[len(altered) // 2] ^= 0x01
    frames[frame] = bytes(altered)
    with pytest.raises(ProtocolError) as info:
        decode(signer, frames, max_bytes=LIMIT)
    assert info.value.reason is RejectReason.FORGED


def test_another_key_is_forged(key: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(Signer(key), _frames(Signer(os.urandom(32))), max_bytes=LIMIT)
    assert info.value.reason is RejectReason.FORGED


def test_bytes_cannot_move_between_frames(key: bytes) -> None:
    # Concatenating frames without lengths would let a header byte become a content byte.
    signer = Signer(key)
    frames = _frames(signer)
    frames[2], frames[3] = frames[2][:-1], frames[2][-1:] + frames[3]
    with pytest.raises(ProtocolError) as info:
        decode(signer, frames, max_bytes=LIMIT)
    assert info.value.reason is RejectReason.FORGED


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: [f[0], b"", *f[2:]], RejectReason.UNSIGNED),
        (lambda f: f[:3], RejectReason.TRUNCATED),
        (lambda f: [b"zmtp/1", *f[1:]], RejectReason.MALFORMED),
        (lambda f: [b"cortexloop/1", *f[1:]], RejectReason.UNSUPPORTED),  # an older cortexloop
        (lambda f: [*f, b"x" * (LIMIT + 1)], RejectReason.OVERSIZED),
    ],
    ids=["unsigned", "truncated", "wrong-tag", "older-version", "oversized"],
)
def test_refusals_name_their_reason(key: bytes, mutate, reason: RejectReason) -> None:
    signer = Signer(key)
    with pytest.raises(ProtocolError) as info:
        decode(signer, mutate(_frames(signer)), max_bytes=LIMIT)
    assert info.value.reason is reason


# --- the one freshness rule ------------------------------------------------------------------------


def _session(key: bytes) -> WireSession:
    return WireSession(key, takes={MessageType.HELLO, MessageType.PLAN}, max_message_bytes=LIMIT, name="here")


def _refusal(session: WireSession, frames: list[bytes]) -> RejectReason:
    with pytest.raises(ProtocolError) as info:
        session.decode(frames)
    return info.value.reason


def test_a_peer_numbers_upward_and_a_number_seen_before_is_a_replay_whoever_sends_it(key: bytes) -> None:
    server, peer = _session(key), _session(key)
    hello = [bytes(f) for f in peer.encode(MessageType.HELLO, {"role": "controller"})]
    plan = [bytes(f) for f in peer.encode(MessageType.PLAN, {"plan": {}}, to=server.nonce)]
    assert server.decode(hello).type is MessageType.HELLO  # a hello may be unaddressed
    assert server.decode(plan).type is MessageType.PLAN
    # The same frames again, as a recording replayed from another connection would bring them.
    assert _refusal(server, hello) is RejectReason.REPLAYED
    assert _refusal(server, plan) is RejectReason.REPLAYED
    assert server.decode([bytes(f) for f in peer.encode(MessageType.PLAN, {}, to=server.nonce)])


def test_only_a_hello_may_be_unaddressed_and_nothing_is_taken_for_another_session(key: bytes) -> None:
    server, peer = _session(key), _session(key)
    unaddressed = [bytes(f) for f in peer.encode(MessageType.PLAN, {"plan": {}})]
    elsewhere = [bytes(f) for f in peer.encode(MessageType.PLAN, {"plan": {}}, to="another-presenter")]
    assert _refusal(server, unaddressed) is RejectReason.REPLAYED
    assert _refusal(server, elsewhere) is RejectReason.REPLAYED


def test_a_side_refuses_the_types_it_does_not_take(key: bytes) -> None:
    server, peer = _session(key), _session(key)
    assert _refusal(server, peer.encode(MessageType.VOLUME, {}, to=server.nonce)) is RejectReason.UNSUPPORTED


def test_the_senders_remembered_are_bounded(key: bytes) -> None:
    server = _session(key)
    signer = Signer(key)
    for n in range(MAX_SENDERS + 10):
        server.decode(encode(signer, MessageType.HELLO, {}, session=f"peer-{n}", seq=1))
    assert len(server._senders) == MAX_SENDERS


# --- endpoints and key files -----------------------------------------------------------------------


class _Idle(RouterService):
    def __init__(self, endpoint: str, key: bytes) -> None:
        super().__init__(endpoint, _session(key), role="presenter")
        self._start()


def test_a_taken_endpoint_and_a_malformed_one_say_different_things(key: bytes) -> None:
    first = _Idle("tcp://127.0.0.1:0", key)
    try:
        with pytest.raises(EndpointError, match="is another presenter running there"):
            _Idle(first.endpoint, key)
    finally:
        first.close()
    with pytest.raises(EndpointError, match="give an endpoint such as tcp://"):
        _Idle("tcp//127.0.0.1:5555", key)
    assert zmq.Context.instance().closed is False


def test_keygen_writes_a_private_key_and_never_overwrites(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(load_key(path)) == 32
    with pytest.raises(KeyFileError, match="exists"):
        generate_key_file(path)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"readable by others \(mode 0644\); run `chmod 600"):
        load_key(path)


@pytest.mark.parametrize("text", ["", "not hex\n", "abcd\n"], ids=["empty", "not-hex", "too-short"])
def test_a_malformed_key_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="keygen"):
        load_key(path)


def test_a_missing_key_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="bridge keygen"):
        load_key(tmp_path / "nope")


# Attack-and-fault probe, case 9: key files that must not be taken for a key.
GOOD_HEX = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"


def test_an_indented_comment_is_a_comment_not_a_second_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(f"# cortexloop shared key\n  # rotated 2026-11-30\n{GOOD_HEX}\n")
    path.chmod(0o600)
    assert load_key(path) == bytes.fromhex(GOOD_HEX)


def test_the_all_zero_key_of_the_examples_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("00" * 32 + "\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"one byte repeated.*keygen"):
        load_key(path)


def test_a_binary_key_file_or_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "k.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    binary.chmod(0o600)
    with pytest.raises(KeyFileError, match="not text"):
        load_key(binary)
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key(folder)


def test_a_server_refuses_a_flood_from_one_sender_and_a_peer_takes_its_servers_burst(key: bytes) -> None:
    sender = _session(key)
    server = WireSession(key, takes={MessageType.PLAN}, max_message_bytes=LIMIT, name="s", limit_rate=True)
    peer = WireSession(key, takes={MessageType.PLAN}, max_message_bytes=LIMIT, name="p")
    to_server = [sender.encode(MessageType.PLAN, {}, to=server.nonce) for _ in range(1000)]
    refused = collections.Counter()
    for frames in to_server:
        try:
            server.decode(frames)
        except ProtocolError as exc:
            refused[exc.reason] += 1
    assert 500 <= refused[RejectReason.FLOODED] <= 1000 - RATE_BURST  # the burst, then 200 a second
    for frames in [sender.encode(MessageType.PLAN, {}, to=peer.nonce) for _ in range(1000)]:
        peer.decode(frames)  # a bridge catching its receiver up sends this many at once
