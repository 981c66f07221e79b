"""The one atomic write: whole or nothing, durable, with the permissions a new file gets."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from db.base import prepare_atomic, write_atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    write_atomic(path, b"version 1")

    def full_disk(fd: int) -> None:  # a full disk often shows only when the data are synced
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"version 2")
    assert path.read_bytes() == b"version 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_parts_are_written_one_after_the_other_and_the_folder_is_made(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "sub-01_run-02.vol"
    write_atomic(path, b"head", memoryview(b"-voxels"))
    assert path.read_bytes() == b"head-voxels"


def test_files_get_a_new_files_permissions_not_a_temporary_files(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        shared = write_atomic(tmp_path / "report.html", b"<html>")
        private = write_atomic(tmp_path / "spooled.vol", b"voxels", mode=0o600)
    finally:
        os.umask(old)
    assert shared.stat().st_mode & 0o777 == 0o644  # a colleague's browser can open the report
    assert private.stat().st_mode & 0o777 == 0o600


def test_a_prepared_file_is_hidden_until_committed_and_discarding_it_leaves_nothing(tmp_path: Path) -> None:
    pending = prepare_atomic(tmp_path / "vol_00001.nii", b"volume", sync=False)
    assert pending.temporary.name.startswith(".")  # watchers skip hidden names
    assert not (tmp_path / "vol_00001.nii").exists()
    assert pending.commit().read_bytes() == b"volume"
    prepare_atomic(tmp_path / "vol_00002.nii", b"half a TR").discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol_00001.nii"]
