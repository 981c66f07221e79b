"""``cortexloop bridge`` end to end, as an operator runs it: separate processes, real files."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from scanner_bridge import RecordedRun
from scanner_bridge.readers import read_volume
from scanner_bridge.writers import dicom_slice_files

CORTEXLOOP = str(Path(sys.executable).with_name("cortexloop"))
FUNCTIONAL = Path(nib.__file__).parent / "tests" / "data" / "functional.nii"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CORTEXLOOP, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "bridge.key"
    result = run("bridge", "keygen", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def bridge(
    tmp_path: Path, key_file: Path, installed_only: Callable[..., dict[str, str]]
) -> Iterator[tuple[str, Path]]:
    """A running `cortexloop bridge watch` on an ipc endpoint in tmp_path (no fixed port).

    It runs as on a scanner's computer that ran pip install '.[bridge]': no torch, no PsychoPy.
    """
    export = tmp_path / "export"
    export.mkdir()
    endpoint = f"ipc://{tmp_path}/bridge.sock"
    process = subprocess.Popen(
        [
            CORTEXLOOP,
            "bridge",
            "watch",
            str(export),
            "--endpoint",
            endpoint,
            "--key-file",
            str(key_file),
            "--spool",
            str(tmp_path / "spool"),
            "--incomplete-timeout",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=installed_only("bridge"),
    )
    try:
        _wait_until_watching(process)
        yield endpoint, export
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "Traceback" not in err


def _wait_until_watching(
    process: subprocess.Popen[str], timeout_s: float = 30, word: str = "watching"
) -> None:
    # Files written before the bridge watches count as leftovers of an earlier run (until the run
    # goes on), so a test must not start writing before the bridge says it is watching.
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], timeout_s)
    assert ready, "the bridge did not start"
    line = process.stderr.readline()
    assert word in line, line


def listen(endpoint: str, key_file: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            CORTEXLOOP,
            "bridge",
            "listen",
            "--endpoint",
            endpoint,
            "--key-file",
            str(key_file),
            "--out",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_a_real_bold_run_arrives_complete_in_order_and_identical(
    tmp_path: Path, key_file: Path, bridge: tuple[str, Path], fmt: str
) -> None:
    endpoint, export = bridge
    out = tmp_path / "received"
    listener = listen(endpoint, key_file, out, "--count", "20", "--timeout", "60")
    replay = run(
        "bridge", "replay", str(FUNCTIONAL), str(export), "--tr", "2", "--speed", "20", "--format", fmt
    )
    assert replay.returncode == 0, replay.stderr
    stdout, stderr = listener.communicate(timeout=90)
    assert listener.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["index"] for line in lines[:-1]] == list(range(20))
    assert {line["status"] for line in lines[:-1]} == {"ok"}
    assert all(line["shape"] == [17, 21, 3] and line["latency_ms"] >= 0 for line in lines[:-1])
    summary = lines[-1]["summary"]
    counts = {k: summary[k] for k in ("received", "late", "missing", "duplicates", "rejected")}
    assert counts == {"received": 20, "late": 0, "missing": 0, "duplicates": 0, "rejected": 0}
    source = nib.load(FUNCTIONAL)
    values = np.asanyarray(source.dataobj)
    for i in range(20):
        got = nib.load(out / f"vol_{i:05d}.nii.gz")
        if fmt == "nifti":
            np.testing.assert_array_equal(got.get_fdata(), values[..., i])
        else:  # DICOM stores 16-bit integers and a decimal-string rescale
            np.testing.assert_allclose(got.get_fdata(), values[..., i], rtol=1e-9)
        np.testing.assert_allclose(got.affine, source.affine, atol=1e-5)


@pytest.mark.slow
def test_faults_end_as_missing_volumes_and_a_listener_restart_loses_nothing(
    tmp_path: Path, key_file: Path, bridge: tuple[str, Path]
) -> None:
    endpoint, export = bridge
    first = listen(endpoint, key_file, tmp_path / "a", "--count", "5", "--timeout", "60")
    replay = run(
        "bridge",
        "replay",
        str(FUNCTIONAL),
        str(export),
        "--tr",
        "2",
        "--speed",
        "20",
        "--drop",
        "7",
        "--corrupt",
        "12",
        "--duplicate",
        "3",
        "--shuffle-window",
        "3",
        "--chunks",
        "3",
        "--chunk-delay",
        "0.05",
    )
    assert replay.returncode == 0, replay.stderr
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    first_lines = [json.loads(line) for line in out.splitlines()][:-1]
    assert [line["index"] for line in first_lines] == [0, 1, 2, 3, 4]
    # A second listener starts where the first stopped, after the run is over: the bridge serves it all.
    second = listen(
        endpoint,
        key_file,
        tmp_path / "b",
        "--start-index",
        "5",
        "--count",
        "13",
        "--timeout",
        "60",
        "--missing-after-trs",
        "1",
        "--speed",
        "4",  # TRs of the replay's clock: a gap is declared after 0.5 s, not 2 s
    )
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    statuses = {line["index"]: line["status"] for line in lines[:-1]}
    assert statuses == {i: ("missing" if i in (7, 12) else "ok") for i in range(5, 20)}
    assert lines[-1]["summary"]["received"] == 13
    assert lines[-1]["summary"]["missing"] == 2


def test_an_insecure_key_file_is_refused_in_one_line(tmp_path: Path, key_file: Path) -> None:
    key_file.chmod(0o644)
    result = run(
        "bridge",
        "listen",
        "--endpoint",
        "ipc:///nowhere",
        "--key-file",
        str(key_file),
        "--out",
        str(tmp_path),
        "--count",
        "1",
        "--timeout",
        "1",
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"cortexloop: error: key file {key_file} is readable by others (mode 0644); "
        f"run `chmod 600 {key_file}`"
    )


def test_watch_refuses_a_spool_others_can_write_in_one_line(tmp_path: Path, key_file: Path) -> None:
    # Probe case 4: the spool was a predictable folder in the world-writable temporary directory.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (tmp_path / "export").mkdir()
    result = run("bridge", "watch", str(tmp_path / "export"), "--endpoint", "tcp://127.0.0.1:0",
                 "--key-file", str(key_file), "--spool", str(shared))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"cortexloop: error: spool folder {shared} can be written by others "
        f"(mode 0777; `chmod 700 {shared}`): another user could plant volumes there; "
        "choose a folder of your own with --spool"
    )


def test_keygen_makes_a_private_file_and_will_not_overwrite_it(tmp_path: Path, key_file: Path) -> None:
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    again = run("bridge", "keygen", str(key_file))
    assert again.returncode == 1
    assert "exists" in again.stderr


def test_listen_exits_nonzero_when_the_volumes_do_not_come(tmp_path: Path, key_file: Path) -> None:
    result = run(
        "bridge",
        "listen",
        "--endpoint",
        f"ipc://{tmp_path}/nobody",
        "--key-file",
        str(key_file),
        "--out",
        str(tmp_path / "out"),
        "--count",
        "3",
        "--timeout",
        "1",
    )
    assert result.returncode == 1
    summary = json.loads(result.stdout.splitlines()[-1])["summary"]
    assert summary["received"] == 0
    assert "timed out after 1 s with 0 of 3 volumes" in result.stderr


def test_replay_refuses_a_source_that_is_not_a_run(tmp_path: Path) -> None:
    result = run("bridge", "replay", str(tmp_path / "none.nii"), str(tmp_path / "x"), "--tr", "2")
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_listen_cannot_write_names_the_volume_to_start_from_next(
    tmp_path: Path, key_file: Path, bridge: tuple[str, Path]
) -> None:
    endpoint, export = bridge
    out = tmp_path / "out"
    (out / "vol_00000.nii.gz").mkdir(parents=True)  # a write that fails even for root, as a full disk would
    listener = listen(endpoint, key_file, out, "--count", "2", "--timeout", "30")
    run("bridge", "replay", str(FUNCTIONAL), str(export), "--tr", "2", "--speed", "20", "--count", "2")
    _, err = listener.communicate(timeout=60)
    assert listener.returncode == 1
    assert "cannot write volume 0" in err
    assert "--start-index 0" in err


def test_listen_that_received_nothing_says_so_and_exits_nonzero(tmp_path: Path, key_file: Path) -> None:
    result = run(
        "bridge", "listen", "--endpoint", f"ipc://{tmp_path}/nobody", "--key-file", str(key_file),
        "--out", str(tmp_path / "out"), "--timeout", "1",
    )  # fmt: skip
    assert result.returncode == 1
    assert "received no volume from" in result.stderr
    assert "is a bridge serving there" in result.stderr


def test_replay_refuses_an_unknown_format_before_it_reads_the_run(tmp_path: Path) -> None:
    result = run("bridge", "replay", str(tmp_path / "none.nii"), str(tmp_path / "x"), "--tr", "2",
                 "--format", "mp4")  # fmt: skip
    assert result.returncode == 2
    assert "'mp4' is not one of" in result.stderr
    assert "'dicom'" in result.stderr
    assert "does not exist" not in result.stderr  # refused before the source was looked at
    assert not (tmp_path / "x").exists()


def test_a_run_pushed_to_bridge_receive_reaches_a_listener_as_read_from_its_files(
    tmp_path: Path, key_file: Path, installed_only: Callable[..., dict[str, str]]
) -> None:
    run_ = RecordedRun.load(FUNCTIONAL)
    files: dict[int, list[Path]] = {}
    (tmp_path / "files").mkdir()
    for k in range(3):
        slices = dicom_slice_files(
            run_.raw[..., k], run_.affine, acquisition=k + 1, tr_s=2.0,
            series_uid="1.2.826.0.1.3680043.8.498.5", slope=run_.slope, inter=run_.inter,
        )  # fmt: skip
        files[k] = [tmp_path / "files" / name for name, _ in slices]
        for (_, data), path in zip(slices, files[k], strict=True):
            path.write_bytes(data)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"ipc://{tmp_path}/bridge.sock"
    node = subprocess.Popen(
        [CORTEXLOOP, "bridge", "receive", "--endpoint", endpoint, "--key-file", str(key_file),
         "--store", str(tmp_path / "store"), "--port", str(port), "--spool", str(tmp_path / "spool")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=installed_only("bridge"),
    )  # fmt: skip
    try:
        _wait_until_watching(node, word="receiving DICOM")
        listener = listen(endpoint, key_file, tmp_path / "received", "--count", "3", "--timeout", "60")
        scu = AE(ae_title="SCANNER")
        scu.add_requested_context(MRImageStorage)
        association = scu.associate("127.0.0.1", port, ae_title="CORTEXLOOP")
        assert association.is_established
        statuses = [association.send_c_store(pydicom.dcmread(p)).Status for k in range(3) for p in files[k]]
        association.release()
        assert set(statuses) == {0}
        stdout, stderr = listener.communicate(timeout=90)
        assert listener.returncode == 0, stderr
    finally:
        node.send_signal(signal.SIGTERM)
        _, err = node.communicate(timeout=20)
    assert node.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [(line["index"], line["status"]) for line in lines[:-1]] == [(0, "ok"), (1, "ok"), (2, "ok")]
    for k in range(3):
        received = nib.load(tmp_path / "received" / f"vol_{k:05d}.nii.gz")
        from_files = read_volume(files[k])
        np.testing.assert_array_equal(received.get_fdata(), from_files.data)
        np.testing.assert_allclose(received.affine, from_files.affine, atol=1e-5)
    assert len(list((tmp_path / "store").glob("*.dcm"))) == 3 * len(files[0])


def test_a_controller_command_on_the_scanners_computer_names_the_line_that_installs_it(
    tmp_path: Path, installed_only: Callable[..., dict[str, str]]
) -> None:
    (tmp_path / "images").mkdir()
    result = subprocess.run(
        [CORTEXLOOP, "model", "predict", str(tmp_path / "model.cortexloop"), str(tmp_path / "images"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, env=installed_only("bridge"),
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("cortexloop: error: this command needs ")
    assert "pip install -c constraints.txt '.[controller]'" in line
