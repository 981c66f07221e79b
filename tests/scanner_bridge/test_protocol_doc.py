"""The annotated example in docs/protocol.md is a real, verifiable message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from db.base import Signer
from db.base.wire import decode
from scanner_bridge import Volume

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_documented_example_verifies_and_reads_as_described() -> None:
    block = DOC.read_text().split("<!-- example-frames -->", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    frames = dict(re.findall(r"^frame (\d)  (.*)$", block, flags=re.MULTILINE))
    voxels = np.arange(24, dtype="<i2").tobytes()
    message = decode(
        Signer(bytes(32)),
        [frames["0"].encode(), frames["1"].encode(), frames["2"].encode(), frames["3"].encode(), voxels],
        max_bytes=1 << 20,
    )
    volume = Volume.from_wire(message)
    assert (volume.index, volume.shape, volume.tr_s) == (17, (2, 3, 4), 1.5)
    i, j, k = 1, 2, 3
    assert volume.data[i, j, k] == 12 * i + 4 * j + k
    assert round((volume.stamps["seen"] - volume.stamps["written"]) * 1000, 1) == 0.7


def test_the_handshakes_documented_bounds_are_the_codes() -> None:
    from db.base import channel, wire
    from scanner_bridge import volume
    from stimulus.present.channel import MAX_PEERS

    text = " ".join(DOC.read_text().split("### The handshake", 1)[1].split("## ", 1)[0].split())
    assert f"the last {channel.MAX_SENDERS} sender sessions" in text
    assert f"at most {channel.RATE_PER_S:g} messages a second (bursts of {channel.RATE_BURST:g})" in text
    assert "a server (the bridge, the presenter) takes" in text
    assert f"the presenter holds at most {MAX_PEERS} peers" in text
    table = " ".join(DOC.read_text().split("## What a receiver refuses", 1)[1].split("## ", 1)[0].split())
    assert f"nests more than {wire.MAX_JSON_DEPTH} deep" in table
    assert f"an index above {volume.MAX_INDEX:,}".replace(",", " ") in table
