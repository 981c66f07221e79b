"""The envelope: what is signed, what is refused and why; key files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from scanner_bridge import KeyFileError, ProtocolError, RejectReason, Volume, generate_key_file, load_key
from scanner_bridge.protocol import MessageType, Signer, decode, encode, volume_from_wire, volume_to_wire

LIMIT = 1 << 24


@pytest.fixture
def volume(rng: np.random.Generator) -> Volume:
    data = np.asfortranarray(rng.integers(-500, 3000, size=(6, 7, 5), dtype=np.int16))
    affine = np.array([[-3.0, 0, 0, 90], [0, 3.0, 0, -120], [0, 0, 3.5, -60], [0, 0, 0, 1]])
    return Volume(index=7, data=data, affine=affine, series="5/1.2.3", tr_s=1.5, source="/x/vol_00007.nii")


def _frames(signer: Signer, volume: Volume) -> list[bytes]:
    content, buffers = volume_to_wire(volume)
    return [
        bytes(f) for f in encode(signer, MessageType.VOLUME, content, buffers, session="b", seq=1, to="r")
    ]


def test_a_volume_round_trips_exactly(key: bytes, volume: Volume) -> None:
    signer = Signer(key)
    received = volume_from_wire(decode(signer, _frames(signer, volume), max_bytes=LIMIT))
    np.testing.assert_array_equal(received.data, volume.data)
    np.testing.assert_array_equal(received.affine, volume.affine)
    assert (received.index, received.series, received.tr_s, received.source) == (
        7,
        "5/1.2.3",
        1.5,
        volume.source,
    )
    assert not received.data.flags.writeable


@pytest.mark.parametrize("frame", [2, 3, 4], ids=["header", "content", "voxels"])
def test_any_altered_byte_is_forged(key: bytes, volume: Volume, frame: int) -> None:
    signer = Signer(key)
    frames = _frames(signer, volume)
    altered = bytearray(frames[frame])
    altered[len(altered) // 2] ^= 0x01
    frames[frame] = bytes(altered)
    with pytest.raises(ProtocolError) as info:
        decode(signer, frames, max_bytes=LIMIT)
    assert info.value.reason is RejectReason.FORGED


def test_another_key_is_forged(key: bytes, volume: Volume) -> None:
    frames = _frames(Signer(os.urandom(32)), volume)
    with pytest.raises(ProtocolError) as info:
        decode(Signer(key), frames, max_bytes=LIMIT)
    assert info.value.reason is RejectReason.FORGED


def test_bytes_cannot_move_between_frames(key: bytes, volume: Volume) -> None:
    # Concatenating frames without lengths would let a header byte become a content byte.
    signer = Signer(key)
    frames = _frames(signer, volume)
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
        (lambda f: [*f, b"x" * (LIMIT + 1)], RejectReason.OVERSIZED),
    ],
    ids=["unsigned", "truncated", "wrong-tag", "oversized"],
)
def test_refusals_name_their_reason(key: bytes, volume: Volume, mutate, reason: RejectReason) -> None:
    signer = Signer(key)
    with pytest.raises(ProtocolError) as info:
        decode(signer, mutate(_frames(signer, volume)), max_bytes=LIMIT)
    assert info.value.reason is reason


def test_a_short_voxel_buffer_is_truncated_even_if_signed(key: bytes, volume: Volume) -> None:
    signer = Signer(key)
    content, buffers = volume_to_wire(volume)
    short = bytes(buffers[0])[:-2]
    message = decode(
        signer, encode(signer, MessageType.VOLUME, content, [short], session="b", seq=1), max_bytes=LIMIT
    )
    with pytest.raises(ProtocolError) as info:
        volume_from_wire(message)
    assert info.value.reason is RejectReason.TRUNCATED
    assert "418 bytes; shape and dtype need 420" in str(info.value)


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
