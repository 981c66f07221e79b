"""Records from hostile JSON: every field checked against the dataclass, every refusal naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from db.base import EventLevel, ProtocolError, RejectReason, from_wire


@dataclass(frozen=True)
class Inner:
    key: str
    time_s: float


@dataclass(frozen=True)
class Record:
    level: EventLevel
    count: int
    names: tuple[str, ...]
    pairs: list[tuple[str, float]]
    inner: Inner | None = None
    note: str = ""
    times: list[float] = field(default_factory=list)


GOOD = {
    "level": "warning",
    "count": 3,
    "names": ["a", "b"],
    "pairs": [["1", 0.5]],
    "inner": {"key": "5", "time_s": 2},
    "from_a_newer_sender": True,
}


def test_a_good_record_is_built_with_its_types() -> None:
    record = from_wire(Record, GOOD, what="record")
    assert record == Record(
        level=EventLevel.WARNING, count=3, names=("a", "b"), pairs=[("1", 0.5)], inner=Inner("5", 2.0)
    )
    assert isinstance(record.inner, Inner)
    assert isinstance(record.inner.time_s, float)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"count": None}, "record count must be an integer"),
        ({"count": True}, "record count must be an integer"),
        ({"level": "loud"}, "record level is 'loud'; one of debug, info"),
        ({"names": "ab"}, "record names must be a list"),
        ({"pairs": [["1", "x"]]}, r"record pairs\[0\]\[1\] must be a finite number"),
        ({"inner": {"key": 5, "time_s": 1}}, "record inner key must be a string"),
        ({"times": [json.loads("NaN")]}, r"record times\[0\] must be a finite number, got nan"),
    ],
)
def test_a_bad_field_is_malformed_and_named(change: dict[str, object], named: str) -> None:
    with pytest.raises(ProtocolError, match=named) as info:
        from_wire(Record, {**GOOD, **change}, what="record")
    assert info.value.reason is RejectReason.MALFORMED


def test_a_missing_field_without_a_default_is_named() -> None:
    with pytest.raises(ProtocolError, match="record lacks 'count'"):
        from_wire(Record, {k: v for k, v in GOOD.items() if k != "count"}, what="record")
    assert from_wire(Record, {k: v for k, v in GOOD.items() if k != "inner"}, what="record").inner is None


def test_something_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(ProtocolError, match="record is not a JSON object"):
        from_wire(Record, [1, 2], what="record")
