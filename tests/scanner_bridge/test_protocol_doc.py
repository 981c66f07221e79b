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
