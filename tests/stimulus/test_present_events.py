"""The presenter's events: typed on both sides, the same on the wire as docs/protocol.md says."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from db.base import ProtocolError, RejectReason
from stimulus.present.events import (
    EVENT_TYPES,
    Aborted,
    Ack,
    Armed,
    AttentionScore,
    Done,
    LogReady,
    Offset,
    Onset,
    PresenterEvent,
    PresenterEventType,
    PresenterWarning,
    Refused,
    Response,
    RunError,
    RunLog,
    Served,
    StaleTriggers,
    TrialRecord,
    Triggered,
    TriggerTimeout,
    event_from_wire,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

LOG = RunLog(
    run_id="sub-01_ses-01_run-02",
    refresh_hz=60.0,
    trials=[TrialRecord(index=0, stimulus="a.png", sha256="ab" * 32, condition="synthesized",
                        target_roi="FFA", planned_onset_s=6.0, planned_duration_s=1.0, actual_onset_s=6.004,
                        actual_duration_s=1.0)],
    triggers_s=[0.0, 2.0],
    responses=[("1", 3.2)],
    attention=AttentionScore(changes=2, hits=1, false_alarms=0, reaction_times_s=(0.41,)),
)  # fmt: skip

ONE_OF_EACH: list[PresenterEvent] = [
    Armed(run_id="r", refresh_hz=60.0, tr_s=2.0, n_volumes=10, stimuli=("a.png", "b.png")),
    Triggered(run_id="r", index=3, time_s=6.0),
    Onset(run_id="r", trial=0, stimulus="a.png", planned_onset_s=6.0, actual_onset_s=6.004,
          planned_duration_s=1.0, onset_error_ms=4.0),
    Offset(run_id="r", trial=0, actual_duration_s=1.0, dropped_frames=0),
    Response(run_id="r", key="1", time_s=3.2),
    Aborted(run_id="r", time_s=None, before_first_trigger=True),
    Done(run_id="r", aborted=False, dropped_frames=0, attention=LOG.attention),
    TriggerTimeout(run_id="r", timeout_s=60.0, source="the network"),
    LogReady(run_id="r", log=LOG, events_tsv="/ev/r_events.tsv"),
    Refused(run_id="r", error="a.png: sha256 differs"),
    RunError(run_id="r", error="no trigger within 60 s"),
    StaleTriggers(run_id="r", count=2),
    PresenterWarning(run_id="r", warning="disk full"),
    Ack(command="quit"),
    Served(runs=("r",)),
]  # fmt: skip


def test_there_is_one_class_per_type() -> None:
    assert {type(e) for e in ONE_OF_EACH} == set(EVENT_TYPES.values())
    assert set(EVENT_TYPES) == set(PresenterEventType)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type.value)
def test_every_event_round_trips_through_json(event: PresenterEvent) -> None:
    content = json.loads(json.dumps(event.to_wire(), allow_nan=False))
    assert content["type"] == event.type.value
    assert event_from_wire(content) == event


def test_an_event_with_a_wrong_or_missing_field_is_malformed_and_named() -> None:
    onset = Onset(run_id="r", trial=0, stimulus="a.png", planned_onset_s=6.0, actual_onset_s=6.0,
                  planned_duration_s=1.0, onset_error_ms=0.0).to_wire()  # fmt: skip
    for content, named in (
        ({**onset, "trial": "0"}, "presenter onset event trial must be an integer"),
        ({k: v for k, v in onset.items() if k != "actual_onset_s"}, "lacks 'actual_onset_s'"),
        ({**onset, "type": "teleport"}, "presenter event of type 'teleport'"),
    ):
        with pytest.raises(ProtocolError, match=named) as info:
            event_from_wire(content)
        assert info.value.reason is RejectReason.MALFORMED


def test_the_protocol_page_lists_every_event_with_its_fields() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \|", DOC.read_text(), flags=re.MULTILINE))
    for kind, cls in EVENT_TYPES.items():
        assert kind.value in rows, f"docs/protocol.md has no row for {kind.value}"
        fields = {f.name for f in dataclasses.fields(cls)} - {"run_id"}
        named = set(re.findall(r"`(\w+)`", rows[kind.value]))
        assert fields <= named, f"{kind.value}: {sorted(fields - named)} missing from docs/protocol.md"
