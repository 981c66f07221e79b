"""Files that must not stop the bridge (the attack-and-fault probe's case 5), and the readers fuzzed.

Every failure of a file is the reader's error naming the file; only regular
files in the export folder are opened, up to a size; the watcher reports and
goes on.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner_bridge import BridgeEvent, DirectoryWatcher, EventCode, VolumeReadError, WatchConfig
from scanner_bridge.readers import read_part
from scanner_bridge.writers import dicom_slice_files, nifti_bytes

QUICK = WatchConfig(incomplete_timeout_s=0.3, rescan_interval_s=0.1, retry_interval_s=0.02)
DATA = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
AFFINE = np.diag([3.0, 3.0, 3.5, 1.0])


def _nifti(**fields: float) -> bytes:
    image = nib.Nifti1Image.from_bytes(nifti_bytes(DATA, AFFINE, tr_s=2.0))
    for name, value in fields.items():
        image.header[name] = value
    return bytes(image.header.binaryblock) + bytes(4) + DATA.tobytes(order="F")


def _dicom(drop: str | None = None) -> bytes:
    files = dicom_slice_files(DATA, AFFINE, acquisition=1, tr_s=2.0, series_uid="1.2.3", series_number=7)
    raw = files[0][1]
    if drop is None:
        return raw
    ds = pydicom.dcmread(io.BytesIO(raw))
    delattr(ds, drop)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _patched(offset: int, value: int) -> bytes:
    """A scanner-plain volume (the readers' fast path) with one header byte changed."""
    raw = bytearray(nifti_bytes(DATA, AFFINE, tr_s=2.0))
    raw[offset] = value
    return bytes(raw)


HOSTILE = {
    "vol_00001.nii": _nifti(xyzt_units=7),
    "vol_00006.nii": _patched(123, 7),  # xyzt_units: no unit NIfTI defines, on the plain path
    "vol_00002.nii": _nifti(vox_offset=float("nan")),
    "MR.7.1.1.dcm": _dicom(drop="Rows"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_malformed_file_is_the_readers_error_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    with pytest.raises(VolumeReadError, match=str(path)):
        read_part(path)


def _moved_in(folder: Path, outside: Path, name: str) -> None:
    hidden = (
        folder / f".{name}.partial"
    )  # as a scanner's export puts a file in place: renamed from a hidden name
    os.rename(outside, hidden)
    os.rename(hidden, folder / name)


def test_the_watcher_reports_every_hostile_file_by_name_and_goes_on(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for name, raw in HOSTILE.items():
        (export / name).write_bytes(raw)
    events: list[BridgeEvent] = []
    with DirectoryWatcher(export, config=QUICK, on_event=events.append) as watcher:
        os.mkfifo(tmp_path / "fifo")
        _moved_in(export, tmp_path / "fifo", "vol_00003.nii")  # would block a reader forever
        (tmp_path / "zero").symlink_to("/dev/zero")
        _moved_in(export, tmp_path / "zero", "vol_00004.nii")  # would read until memory runs out
        (export / "vol_00000.nii").write_bytes(nifti_bytes(DATA, AFFINE, tr_s=2.0))
        (export / "vol_00005.nii").write_bytes(nifti_bytes(DATA + 5, AFFINE, tr_s=2.0))
        threading.Timer(2.0, watcher.close).start()
        got = list(watcher)
    assert sorted(v.index for v in got) == [0, 5]
    reported = {Path(e.path).name: e.message for e in events if e.code is EventCode.UNREADABLE}
    assert set(reported) >= {"vol_00001.nii", "vol_00002.nii", "vol_00003.nii", "vol_00004.nii"}
    assert "not a regular file" in reported["vol_00003.nii"]
    assert "symbolic link" in reported["vol_00004.nii"]
    assert all(str(export / name) in message for name, message in reported.items())


def test_a_file_over_the_size_limit_is_not_read(tmp_path: Path) -> None:
    events: list[BridgeEvent] = []
    small = WatchConfig(incomplete_timeout_s=0.3, max_file_bytes=100)
    with DirectoryWatcher(tmp_path, config=small, on_event=events.append) as watcher:
        (tmp_path / "vol_00000.nii").write_bytes(nifti_bytes(DATA, AFFINE, tr_s=2.0))
        threading.Timer(0.5, watcher.close).start()
        assert list(watcher) == []
    assert any("more than" in e.message for e in events)


GOOD = {"vol_00000.nii": nifti_bytes(DATA, AFFINE, tr_s=2.0), "MR.7.1.1.dcm": _dicom()}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(GOOD)),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.none() | st.integers(0, 1 << 16),
)
def test_mutated_files_raise_nothing_but_the_readers_error(
    tmp_path: Path, name: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    raw = bytearray(GOOD[name])
    for position, value in edits:
        raw[position % len(raw)] = value
    path = tmp_path / name
    path.write_bytes(bytes(raw[:cut]))
    with contextlib.suppress(VolumeReadError):  # nothing else may come out
        read_part(path)
