"""A volume on the wire: its content and voxels round-trip exactly, and an inconsistent one is refused."""

from __future__ import annotations

import numpy as np
import pytest

from db.base import MessageType, ProtocolError, RejectReason, Signer
from db.base.wire import decode, encode
from scanner_bridge import Volume

LIMIT = 1 << 24


@pytest.fixture
def volume(rng: np.random.Generator) -> Volume:
    data = np.asfortranarray(rng.integers(-500, 3000, size=(6, 7, 5), dtype=np.int16))
    affine = np.array([[-3.0, 0, 0, 90], [0, 3.0, 0, -120], [0, 0, 3.5, -60], [0, 0, 0, 1]])
    return Volume(index=7, data=data, affine=affine, series="5/1.2.3", tr_s=1.5, source="/x/vol_00007.nii")


def test_a_volume_round_trips_exactly(key: bytes, volume: Volume) -> None:
    signer = Signer(key)
    content, buffers = volume.to_wire()
    frames = [
        bytes(f) for f in encode(signer, MessageType.VOLUME, content, buffers, session="b", seq=1, to="r")
    ]
    received = Volume.from_wire(decode(signer, frames, max_bytes=LIMIT))
    np.testing.assert_array_equal(received.data, volume.data)
    np.testing.assert_array_equal(received.affine, volume.affine)
    assert (received.index, received.series, received.tr_s, received.source) == (
        7,
        "5/1.2.3",
        1.5,
        volume.source,
    )
    assert not received.data.flags.writeable


def test_a_short_voxel_buffer_is_truncated_even_if_signed(key: bytes, volume: Volume) -> None:
    signer = Signer(key)
    content, buffers = volume.to_wire()
    short = bytes(buffers[0])[:-2]
    message = decode(
        signer, encode(signer, MessageType.VOLUME, content, [short], session="b", seq=1), max_bytes=LIMIT
    )
    with pytest.raises(ProtocolError) as info:
        Volume.from_wire(message)
    assert info.value.reason is RejectReason.TRUNCATED
    assert "418 bytes; shape and dtype need 420" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("index", -1), ("shape", [6, 7]), ("dtype", "<c16"), ("affine", [[1.0]])],
    ids=["negative-index", "2d-shape", "complex-dtype", "bad-affine"],
)
def test_inconsistent_content_is_malformed(key: bytes, volume: Volume, field: str, value: object) -> None:
    signer = Signer(key)
    content, buffers = volume.to_wire()
    frames = encode(signer, MessageType.VOLUME, {**content, field: value}, buffers, session="b", seq=1)
    with pytest.raises(ProtocolError) as info:
        Volume.from_wire(decode(signer, frames, max_bytes=LIMIT))
    assert info.value.reason is RejectReason.MALFORMED
