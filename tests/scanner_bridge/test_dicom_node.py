"""The DICOM node (``cortexloop bridge receive``): runs pushed by pynetdicom's SCU, as a scanner does."""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from scanner_bridge import BridgeError, BridgeEvent, EventCode, RecordedRun, Volume, WatchConfig
from scanner_bridge.dicom_node import DicomNode
from scanner_bridge.readers import read_volume
from scanner_bridge.writers import dicom_slice_files

UID = "1.2.826.0.1.3680043.8.498.77"
N_VOLUMES = 5


@pytest.fixture
def run_files(tmp_path: Path, functional_run: RecordedRun) -> dict[int, list[Path]]:
    """The first volumes of nibabel's BOLD run as single-slice MR DICOM files, by volume index."""
    folder = tmp_path / "files"
    folder.mkdir()
    files: dict[int, list[Path]] = {}
    for k in range(N_VOLUMES):
        slices = dicom_slice_files(
            functional_run.raw[..., k], functional_run.affine, acquisition=k + 1, tr_s=2.0,
            series_uid=UID, series_number=7, slope=functional_run.slope, inter=functional_run.inter,
        )  # fmt: skip
        for name, data in slices:
            (folder / name).write_bytes(data)
        files[k] = [folder / name for name, _ in slices]
    return files


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[DicomNode, list[BridgeEvent]]]:
    events: list[BridgeEvent] = []
    config = WatchConfig(incomplete_timeout_s=0.5)
    with DicomNode(tmp_path / "store", port=0, config=config, on_event=events.append) as made:
        yield made, events


def push(port: int, paths: list[Path], *, ae_title: str = "CORTEXLOOP") -> list[int]:
    """Send ``paths`` in one association, as a scanner does; the status of each C-STORE."""
    scu = AE(ae_title="SCANNER")
    scu.add_requested_context(MRImageStorage)
    association = scu.associate("127.0.0.1", port, ae_title=ae_title)
    if not association.is_established:
        return []
    try:
        return [int(association.send_c_store(pydicom.dcmread(p)).Status) for p in paths]
    finally:
        association.release()


def collect(node: DicomNode, n: int, timeout_s: float = 10.0) -> list[Volume]:
    got: list[Volume] = []
    timer = threading.Timer(timeout_s, node.close)
    timer.start()
    try:
        for volume in node:
            got.append(volume)
            if len(got) == n:
                break
    finally:
        timer.cancel()
    return got


def test_a_run_pushed_over_the_network_arrives_whole_and_as_read_from_its_files(
    node: tuple[DicomNode, list[BridgeEvent]], run_files: dict[int, list[Path]]
) -> None:
    dicom_node, events = node
    paths = [p for k in range(N_VOLUMES) for p in run_files[k]]
    random.Random(0).shuffle(paths)  # slices of several volumes in any order
    statuses = push(dicom_node.port, paths)
    assert statuses == [0] * len(paths)
    got = sorted(collect(dicom_node, N_VOLUMES), key=lambda v: v.index)
    assert [v.index for v in got] == list(range(N_VOLUMES))
    for volume in got:
        from_files = read_volume(run_files[volume.index])
        np.testing.assert_array_equal(volume.data, from_files.data)
        np.testing.assert_allclose(volume.affine, from_files.affine, atol=1e-6)
        assert volume.series == from_files.series == f"7/{UID}"
        assert volume.tr_s == 2.0
        assert Path(volume.source).parent == dicom_node.store  # the record points at a stored file
    stored = sorted(dicom_node.store.glob("*.dcm"))
    assert len(stored) == len(paths)
    assert {e.code for e in events} == {EventCode.SERIES_STARTED}


def test_a_volume_short_of_a_slice_is_reported_and_the_others_come(
    node: tuple[DicomNode, list[BridgeEvent]], run_files: dict[int, list[Path]]
) -> None:
    dicom_node, events = node
    paths = run_files[0] + run_files[1][:-1] + run_files[2]
    assert push(dicom_node.port, paths) == [0] * len(paths)
    got = collect(dicom_node, 3, timeout_s=2.0)  # volume 1 never completes
    assert sorted(v.index for v in got) == [0, 2]
    (short,) = [e for e in events if e.code is EventCode.UNREADABLE]
    assert "acquisition 2" in short.message


def test_an_association_calling_another_ae_title_is_refused(
    node: tuple[DicomNode, list[BridgeEvent]], run_files: dict[int, list[Path]]
) -> None:
    dicom_node, _ = node
    assert push(dicom_node.port, run_files[0], ae_title="SOMEONE_ELSE") == []
    assert list(dicom_node.store.iterdir()) == []


def test_an_object_that_is_no_volume_is_stored_acknowledged_and_reported(
    node: tuple[DicomNode, list[BridgeEvent]], run_files: dict[int, list[Path]], tmp_path: Path
) -> None:
    dicom_node, events = node
    ds = pydicom.dcmread(run_files[0][0])
    del ds.PixelData  # e.g. a header-only object: stored (it was sent), not a volume
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (tmp_path / "no-pixels.dcm").write_bytes(buffer.getvalue())
    assert push(dicom_node.port, [tmp_path / "no-pixels.dcm"]) == [0]
    assert len(list(dicom_node.store.glob("*.dcm"))) == 1
    (refused,) = [e for e in events if e.code is EventCode.UNREADABLE]
    assert "stored, not passed on" in refused.message


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with DicomNode(tmp_path / "a", port=0) as first, pytest.raises(BridgeError, match="another --port"):
        DicomNode(tmp_path / "b", port=first.port)


PHILIPS_LOCALIZERS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892003"


def test_real_localizers_pushed_before_a_run_stay_out_of_it(
    node: tuple[DicomNode, list[BridgeEvent]], run_files: dict[int, list[Path]]
) -> None:
    """pydicom's Philips survey scans: single slices, tri-plane and radial localizers, then the run."""
    dicom_node, events = node
    localizers = sorted(p for p in PHILIPS_LOCALIZERS.rglob("*") if p.is_file() and p.name.isdigit())
    assert len(localizers) == 17
    run_paths = [p for k in range(N_VOLUMES) for p in run_files[k]]
    assert set(push(dicom_node.port, localizers + run_paths)) == {0}
    got = collect(dicom_node, N_VOLUMES + 5, timeout_s=2.0)  # one fewer comes: until the slice deadline
    run = sorted((v.index, v.shape) for v in got if v.series == f"7/{UID}")
    assert run == [(k, (17, 21, 3)) for k in range(N_VOLUMES)]
    others = [v for v in got if v.series != f"7/{UID}"]
    assert sorted(v.shape for v in others) == [(16, 16, 1)] * 4  # the single-slice surveys, each its own
    not_stacked = [e for e in events if "do not stack into a volume" in e.message]
    assert len(not_stacked) == 2  # the two tri-plane localizers: three planes are no volume
    assert any("7 of its 12 slices" in e.message for e in events)  # the radial one, short of slices
