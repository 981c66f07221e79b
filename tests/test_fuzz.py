"""The wire's decoder, a volume's and a plan's parsers fuzzed: nothing comes out but the documented errors.

(The file readers are fuzzed beside them, in tests/scanner_bridge/test_hostile_files.py.)

Bounded in time: a few hundred examples each (hypothesis), seconds in all.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from db.base import Message, MessageType, ProtocolError, WireSession
from db.base.wire import PROTOCOL_TAG, PROTOCOL_VERSION, Signer, buffer_digests, decode
from scanner_bridge import Volume
from stimulus.errors import PlanError
from stimulus.present.plan import RunPlan

KEY = bytes(range(1, 33))
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _signed(
    content: bytes, header: dict[str, Any] | None = None, buffers: list[bytes] | None = None
) -> list[bytes]:
    """Frames signed with the right key: what only a key holder (or a bug) could send."""
    fields = {"id": "x", "type": "volume", "session": "s", "seq": 1, "sent": "", "to": ""}
    fields["version"] = PROTOCOL_VERSION
    header_b = json.dumps({**fields, **(header or {})}).encode()
    digests = buffer_digests(buffers or [])
    return [
        PROTOCOL_TAG,
        Signer(KEY).signature(header_b, content, digests),
        header_b,
        content,
        *(buffers or []),
    ]


def _receiver() -> WireSession:
    return WireSession(KEY, takes=set(MessageType), max_message_bytes=1 << 20, name="the fuzzed side")


def _verified(frames: list[bytes]) -> Message:
    """The envelope's checks only (signature, JSON, header): what every content parser then gets."""
    return decode(Signer(KEY), frames, max_bytes=1 << 20)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=7))
def test_any_frames_are_refused_as_a_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        _receiver().decode(frames)


@FUZZ
@given(
    content=json_values,
    header=st.dictionaries(
        st.sampled_from(["type", "seq", "to", "version", "session"]), json_values, max_size=3
    ),
    buffers=st.lists(st.binary(max_size=64), max_size=2),
)
def test_signed_content_of_any_shape_decodes_or_is_refused_and_a_volume_parses_or_is_refused(
    content: Any, header: dict[str, Any], buffers: list[bytes]
) -> None:
    frames = _signed(json.dumps(content).encode(), header, buffers)
    try:
        message = _verified(frames)
    except ProtocolError:
        return
    if message.type is MessageType.VOLUME:
        with contextlib.suppress(ProtocolError):
            Volume.from_wire(message)


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ProtocolError, match="malformed"):
        _verified(_signed(b'{"a":' + deep + b"}"))
    nested = b'{"a":' + b"[" * 40 + b"]" * 40 + b"}"
    with pytest.raises(ProtocolError, match="nested more than"):
        _verified(_signed(nested))


def test_a_volume_with_a_huge_index_is_refused() -> None:
    content = {"index": 10**15, "series": "s", "shape": [1, 1, 1], "dtype": "<i2", "order": "C",
               "affine": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "tr_s": 2.0,
               "acquisition_time": None, "source": "", "stamps": {}}  # fmt: skip
    message = _verified(_signed(json.dumps(content).encode(), buffers=[b"\0\0"]))
    with pytest.raises(ProtocolError, match=r"not an integer in 0\.\."):
        Volume.from_wire(message)


GOOD_PLAN = {
    "run_id": "run-1", "tr_s": 2.0, "n_volumes": 10, "seed": 0, "size_deg": 8.0, "background": [0, 0, 0],
    "trials": [{"stimulus": "a.png", "sha256": "ab" * 32, "onset_s": 1.0, "duration_s": 1.0,
                "condition": "target", "target_roi": "V1"}],
    "fixation": {"size_deg": 0.3, "task": True, "changes_per_minute": 6.0},
}  # fmt: skip


@FUZZ
@given(
    path=st.lists(
        st.sampled_from(["trials", 0, "fixation", "run_id", "tr_s", "onset_s", "colour"]), max_size=3
    ),
    value=json_values,
)
def test_a_plan_with_any_value_anywhere_parses_or_is_a_plan_error(path: list[Any], value: Any) -> None:
    plan: Any = json.loads(json.dumps(GOOD_PLAN))
    target = plan
    for step in path[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            break
    with contextlib.suppress(TypeError, IndexError):
        target[path[-1] if path else "run_id"] = value
    with contextlib.suppress(PlanError):
        RunPlan.from_dict(plan)
