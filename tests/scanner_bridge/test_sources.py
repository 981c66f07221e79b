"""One conformance suite every VolumeSource passes, then each fault a real export has."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from scanner_bridge import (
    BridgeEvent,
    DirectoryWatcher,
    EventCode,
    RecordedRun,
    ReplayFaults,
    ReplaySource,
    ScaledClock,
    Volume,
    VolumeSource,
    WatchConfig,
    replay_to_directory,
)
from scanner_bridge.transport import _source_changed as source_changed
from scanner_bridge.writers import dicom_slice_files, nifti_bytes

SPEED = 40.0  # a 2 s TR every 50 ms
QUICK = WatchConfig(incomplete_timeout_s=0.5, rescan_interval_s=0.2, poll_interval_s=0.02)


@dataclasses.dataclass
class Feed:
    """A source under test and what feeds it."""

    source: VolumeSource
    start: Callable[[], None]
    events: list[BridgeEvent]


def _watcher_feed(export_dir: Path, run: RecordedRun, polling: bool, **replay: object) -> Feed:
    events: list[BridgeEvent] = []
    watcher = DirectoryWatcher(
        export_dir, config=dataclasses.replace(QUICK, polling=polling), on_event=events.append
    )
    thread = threading.Thread(
        target=replay_to_directory,
        args=(run, export_dir),
        kwargs={"tr_s": 2.0, "clock": ScaledClock(SPEED), **replay},
        daemon=True,
    )
    return Feed(watcher, thread.start, events)


SOURCES: dict[str, Callable[[Path, RecordedRun], Feed]] = {
    "watch-inotify": lambda d, run: _watcher_feed(d, run, polling=False),
    "watch-polling": lambda d, run: _watcher_feed(d, run, polling=True),
    "watch-dicom": lambda d, run: _watcher_feed(d, run, polling=False, fmt="dicom"),
    "replay": lambda d, run: Feed(ReplaySource(run, clock=ScaledClock(SPEED)), lambda: None, []),
}


def collect(feed: Feed, n: int, timeout_s: float = 30.0) -> list[Volume]:
    """Take ``n`` volumes, then close the source from another thread (as a signal handler would)."""
    got: list[Volume] = []
    timer = threading.Timer(timeout_s, feed.source.close)
    timer.start()
    feed.start()
    try:
        for volume in feed.source:
            got.append(volume)
            if len(got) == n:
                threading.Thread(target=feed.source.close).start()
    finally:
        timer.cancel()
        feed.source.close()
    return got


@pytest.fixture(params=sorted(SOURCES))
def feed(request: pytest.FixtureRequest, export_dir: Path, functional_run: RecordedRun) -> Iterator[Feed]:
    made = SOURCES[request.param](export_dir, functional_run)
    yield made
    made.source.close()


def test_conformance_every_volume_once_in_order_with_the_recorded_values(
    feed: Feed, functional_run: RecordedRun
) -> None:
    assert isinstance(feed.source, VolumeSource)
    got = collect(feed, functional_run.n_volumes)
    assert [v.index for v in got] == list(range(functional_run.n_volumes))
    for volume in got:
        np.testing.assert_allclose(volume.data, functional_run.values(volume.index), rtol=1e-9)
        np.testing.assert_allclose(volume.affine, functional_run.affine, atol=1e-6)
        assert volume.tr_s == pytest.approx(2.0)
        assert volume.stamps["seen"] <= volume.stamps["read"]
        assert not volume.data.flags.writeable
        assert source_changed(volume) is None  # so the bridge will serve it again from its spool
    assert len({v.series for v in got}) == 1
    assert [e for e in feed.events if e.level == "error"] == []


def test_conformance_close_ends_iteration_and_is_idempotent(feed: Feed) -> None:
    got = collect(feed, 2)
    assert len(got) >= 2
    feed.source.close()
    assert list(feed.source) == []


# --- the watcher and the faults of real exports ----------------------------------------------------


def watch_replay(
    export_dir: Path, run: RecordedRun, *, polling: bool = False, series: str | None = None, **replay: object
):
    """Replay into a watched folder; collect until the replay is over and every deadline has passed."""
    events: list[BridgeEvent] = []
    watcher = DirectoryWatcher(
        export_dir, config=dataclasses.replace(QUICK, polling=polling, series=series), on_event=events.append
    )
    replayed = threading.Event()

    def replay_then_close() -> None:
        try:
            replay_to_directory(run, export_dir, tr_s=2.0, clock=ScaledClock(SPEED), **replay)  # type: ignore[arg-type]
            time.sleep(QUICK.incomplete_timeout_s + 0.5)  # let deadlines pass
            replayed.set()
        finally:
            watcher.close()

    threading.Thread(target=replay_then_close, daemon=True).start()
    got = list(watcher)
    assert replayed.is_set(), "the replay failed"
    return got, events


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_slow_chunked_writes_are_read_only_when_complete(
    export_dir: Path, functional_run: RecordedRun, polling: bool
) -> None:
    faults = ReplayFaults(chunks=4, chunk_delay_s=0.3)  # 0.3 s of session clock between pieces
    got, events = watch_replay(export_dir, functional_run, polling=polling, faults=faults, count=6)
    assert [v.index for v in got] == [0, 1, 2, 3, 4, 5]
    for v in got:
        np.testing.assert_array_equal(v.data, functional_run.values(v.index))
    assert {e.code for e in events} == {EventCode.SERIES_STARTED}


def test_a_shuffled_order_is_passed_on_as_it_comes(export_dir: Path, functional_run: RecordedRun) -> None:
    got, _ = watch_replay(export_dir, functional_run, faults=ReplayFaults(shuffle_window=4), count=12)
    assert sorted(v.index for v in got) == list(range(12))
    assert [v.index for v in got] != list(range(12))  # the receiver, not the source, puts them in order


def test_a_duplicate_file_is_passed_on_once_and_reported(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    got, events = watch_replay(
        export_dir, functional_run, faults=ReplayFaults(duplicate=frozenset({2})), count=5
    )
    assert [v.index for v in got] == [0, 1, 2, 3, 4]
    (dup,) = [e for e in events if e.code is EventCode.DUPLICATE]
    assert dup.index == 2
    assert "same data" in dup.message


def test_a_file_written_again_with_other_data_is_flagged_as_such(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    # Probe case 8: a rewrite with other data was logged as "same data ... ignored".
    raw = functional_run.raw

    def volume(values: np.ndarray) -> bytes:
        run = functional_run
        return nifti_bytes(values, run.affine, tr_s=2.0, slope=run.slope, inter=run.inter)

    events: list[BridgeEvent] = []
    with DirectoryWatcher(export_dir, config=QUICK, on_event=events.append) as watcher:
        (export_dir / "vol_00000.nii").write_bytes(volume(raw[..., 0]))
        threading.Timer(0.6, lambda: (export_dir / "vol_00000.nii").write_bytes(volume(raw[..., 1]))).start()
        threading.Timer(1.5, watcher.close).start()
        got = list(watcher)
    assert [v.index for v in got] == [0]
    np.testing.assert_array_equal(got[0].data, functional_run.values(0))  # the first data kept
    (flagged,) = [e for e in events if e.index == 0 and e.code is not EventCode.SERIES_STARTED]
    assert flagged.code is EventCode.REWRITTEN
    assert "written again with other data" in flagged.message


def test_a_corrupt_file_is_reported_after_its_deadline_and_skipped(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    got, events = watch_replay(
        export_dir, functional_run, faults=ReplayFaults(corrupt=frozenset({3})), count=6
    )
    assert [v.index for v in got] == [0, 1, 2, 4, 5]
    (bad,) = [e for e in events if e.code is EventCode.UNREADABLE]
    assert bad.level == "error"
    assert bad.path.endswith("vol_00003.nii")
    assert "of its" in bad.message  # says how much of the file there was


def test_a_dropped_volume_is_simply_absent(export_dir: Path, functional_run: RecordedRun) -> None:
    got, events = watch_replay(export_dir, functional_run, faults=ReplayFaults(drop=frozenset({1})), count=4)
    assert [v.index for v in got] == [0, 2, 3]
    assert [e for e in events if e.level == "error"] == []


def test_a_volume_short_of_slices_is_reported_at_its_deadline(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    events: list[BridgeEvent] = []
    uid = "1.2.826.0.1.3680043.8.498.1"
    with DirectoryWatcher(export_dir, config=QUICK, on_event=events.append) as watcher:
        for acquisition in (1, 2):
            files = dicom_slice_files(
                functional_run.raw[..., acquisition - 1],
                functional_run.affine,
                acquisition=acquisition,
                tr_s=2.0,
                series_uid=uid,
            )
            for name, data in files[: 3 if acquisition == 1 else 2]:  # the second loses a slice
                (export_dir / name).write_bytes(data)
        threading.Timer(QUICK.incomplete_timeout_s + 1.0, watcher.close).start()
        got = list(watcher)
    assert [v.index for v in got] == [0]
    (short,) = [e for e in events if e.code is EventCode.UNREADABLE]
    assert "acquisition 2" in short.message
    assert "2 of its 3 slices" in short.message


def test_files_of_earlier_series_are_not_served_and_are_reported_once(
    export_dir: Path, functional_run: RecordedRun, rng: np.random.Generator
) -> None:
    # Leftovers of an earlier run, named differently, are already there when the bridge starts.
    for i in range(3):
        (export_dir / f"old_run_{i:04d}.nii").write_bytes(
            nifti_bytes(rng.normal(size=(4, 4, 4)), np.eye(4), tr_s=2.0)
        )
    got, events = watch_replay(export_dir, functional_run, count=3)
    assert [(v.index, v.series) for v in got] == [
        (0, "vol_#####.nii"),
        (1, "vol_#####.nii"),
        (2, "vol_#####.nii"),
    ]
    others = [e for e in events if e.code is EventCode.OTHER_SERIES]
    assert len(others) == 1  # once, not once per file
    assert "3 volume file(s)" in others[0].message
    assert "before the bridge started" in others[0].message


def test_two_series_interleaved_in_one_folder_each_volume_goes_to_its_own(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    """A run and a reference scan written at once: indices by series, geometry checked by series."""
    raw, affine = functional_run.raw, functional_run.affine
    events: list[BridgeEvent] = []
    with DirectoryWatcher(export_dir, config=QUICK, on_event=events.append) as watcher:
        for i in range(3):
            (export_dir / f"run_{i:05d}.nii").write_bytes(nifti_bytes(raw[..., i], affine, tr_s=2.0))
            small = raw[:8, :8, :, 10 + i]  # another shape: no mismatch, it is another series
            (export_dir / f"ref_{i:05d}.nii").write_bytes(nifti_bytes(small, affine, tr_s=1.0))
        threading.Timer(1.0, watcher.close).start()
        got = list(watcher)
    by_series = {
        series: sorted((v.index, v.shape) for v in got if v.series == series)
        for series in ("run_#####.nii", "ref_#####.nii")
    }
    assert by_series["run_#####.nii"] == [(i, raw.shape[:3]) for i in range(3)]
    assert by_series["ref_#####.nii"] == [(i, (8, 8, raw.shape[2])) for i in range(3)]
    for v in got:
        expected = raw[..., v.index] if v.series == "run_#####.nii" else raw[:8, :8, :, 10 + v.index]
        np.testing.assert_array_equal(v.data, expected)
    started = [e for e in events if e.code is EventCode.SERIES_STARTED]
    assert len(started) == 2
    assert [e for e in events if e.level == "error"] == []


def test_a_bridge_told_one_series_ignores_the_others_and_says_how_to_serve_them(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    raw, affine = functional_run.raw, functional_run.affine
    events: list[BridgeEvent] = []
    config = dataclasses.replace(QUICK, series="run_#####.nii")
    with DirectoryWatcher(export_dir, config=config, on_event=events.append) as watcher:
        for i in range(3):
            (export_dir / f"run_{i:05d}.nii").write_bytes(nifti_bytes(raw[..., i], affine, tr_s=2.0))
            (export_dir / f"ref_{i:05d}.nii").write_bytes(nifti_bytes(raw[..., 10 + i], affine, tr_s=2.0))
        threading.Timer(1.0, watcher.close).start()
        got = list(watcher)
    assert sorted((v.index, v.series) for v in got) == [(i, "run_#####.nii") for i in range(3)]
    others = [e for e in events if e.code is EventCode.OTHER_SERIES]
    assert len(others) == 1  # once per series, not once per file
    assert "ref_#####.nii" in others[0].message
    assert "without --series" in others[0].message


def test_a_change_of_shape_is_an_error_event_not_a_crash(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    events: list[BridgeEvent] = []
    with DirectoryWatcher(export_dir, config=QUICK, on_event=events.append) as watcher:
        affine = functional_run.affine
        (export_dir / "vol_00000.nii").write_bytes(nifti_bytes(functional_run.raw[..., 0], affine, tr_s=2.0))
        (export_dir / "vol_00001.nii").write_bytes(
            nifti_bytes(functional_run.raw[:, :, :2, 1], affine, tr_s=2.0)
        )
        (export_dir / "vol_00002.nii").write_bytes(nifti_bytes(functional_run.raw[..., 2], affine, tr_s=2.0))
        threading.Timer(1.0, watcher.close).start()
        got = list(watcher)
    assert [v.index for v in got] == [0, 2]
    (mismatch,) = [e for e in events if e.code is EventCode.MISMATCH]
    assert "volume 1" in mismatch.message
    assert "(17, 21, 2)" in mismatch.message
    assert "(17, 21, 3)" in mismatch.message


def test_a_missing_export_directory_is_a_clear_error(tmp_path: Path) -> None:
    from scanner_bridge import BridgeError

    with pytest.raises(BridgeError, match=r"does not exist.*share mounted"):
        DirectoryWatcher(tmp_path / "nope")


def test_files_renamed_into_place_are_picked_up(export_dir: Path, functional_run: RecordedRun) -> None:
    got, _ = watch_replay(export_dir, functional_run, atomic=True, count=4)
    assert [v.index for v in got] == [0, 1, 2, 3]


def test_a_restarted_watcher_reads_the_runs_files_already_there(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    replay_to_directory(functional_run, export_dir, tr_s=2.0, clock=ScaledClock(1000), count=3)
    with DirectoryWatcher(export_dir, config=QUICK) as watcher:
        # The run goes on: the next file locks the series and the earlier ones are read too.
        (export_dir / "vol_00003.nii").write_bytes(
            nifti_bytes(
                functional_run.raw[..., 3],
                functional_run.affine,
                tr_s=2.0,
                slope=functional_run.slope,
                inter=functional_run.inter,
            )
        )
        threading.Timer(1.0, watcher.close).start()
        got = list(watcher)
    assert sorted(v.index for v in got) == [0, 1, 2, 3]


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_a_folder_written_by_replay_replays_again_as_the_same_run(
    tmp_path: Path, functional_run: RecordedRun, fmt: str
) -> None:
    replay_to_directory(functional_run, tmp_path / fmt, tr_s=2.0, clock=ScaledClock(1000), fmt=fmt, count=5)
    again = RecordedRun.load(tmp_path / fmt)
    assert again.n_volumes == 5
    assert again.tr_s == pytest.approx(2.0)
    for i in range(5):
        np.testing.assert_allclose(again.values(i), functional_run.values(i), rtol=1e-9)
    np.testing.assert_allclose(again.affine, functional_run.affine, atol=1e-6)


def test_a_series_from_before_the_start_is_served_when_asked_for_by_name(
    export_dir: Path, functional_run: RecordedRun
) -> None:
    """A bridge restarted after a run's last file: the resumed controller asks for the run by name."""
    raw, affine = functional_run.raw, functional_run.affine
    for i in range(3):
        (export_dir / f"run_{i:05d}.nii").write_bytes(nifti_bytes(raw[..., i], affine, tr_s=2.0))
        (export_dir / f"ref_{i:05d}.nii").write_bytes(nifti_bytes(raw[..., 10 + i], affine, tr_s=2.0))
    with DirectoryWatcher(export_dir, config=QUICK) as watcher:
        threading.Timer(0.5, watcher.want, args=("run_#####.nii",)).start()
        threading.Timer(1.5, watcher.close).start()
        got = list(watcher)
    assert sorted((v.series, v.index) for v in got) == [("run_#####.nii", i) for i in range(3)]
