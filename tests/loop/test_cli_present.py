"""``cortexloop present`` as the stimulus computer runs it: a server in its own process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from scanner_bridge import generate_key_file, load_key
from stimulus.present import PlannedTrial, RunPlan
from stimulus.present.channel import PresenterClient
from stimulus.present.events import Ack, Armed, LogReady

from .conftest import CORTEXLOOP, free_port

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _serve(
    tmp_path: Path, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, bytes]:
    """``cortexloop present OPTIONS`` on a free port, serving tmp_path's images: (process, endpoint, key).

    ``env``: the environment it runs in (the tests' own by default).
    """
    key_file = generate_key_file(tmp_path / "key")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen(
        [str(CORTEXLOOP), "present", *options, "--endpoint", endpoint, "--key-file", str(key_file),
         "--stimulus-dir", str(tmp_path), "--events-dir", str(tmp_path / "ev")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    return server, endpoint, load_key(key_file)


def test_present_no_window_serves_a_plan_on_network_triggers_then_quits(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (0, 200, 0)).save(tmp_path / "a.png")
    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    plan = RunPlan(run_id="sub-01_run-1", tr_s=2.0, n_volumes=4, trials=(
        PlannedTrial(stimulus="a.png", sha256=sha, onset_s=2.0, duration_s=2.0),
        PlannedTrial(stimulus="a.png", sha256=sha, onset_s=5.0, duration_s=1.0),
    ))  # fmt: skip
    server, endpoint, key = _serve(tmp_path, "--no-window", "--speed", "10")
    try:
        with PresenterClient(endpoint, key, timeout_s=60) as client, \
                PresenterClient(endpoint, key, role="scanner") as scanner:  # fmt: skip
            client.send_plan(plan)
            events = [client.next_event(10)]
            assert events[0] is not None
            assert events[0].type == "armed"
            for k in range(plan.n_volumes):
                scanner.trigger(k, k * plan.tr_s)
                time.sleep(plan.tr_s / 10)
            while events[-1] is not None and events[-1].type != "log":
                events.append(client.next_event(10))
            client.command("quit")
            assert client.next_event(10) == Ack(command="quit")
        out, err = server.communicate(timeout=20)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert f"presenter at {endpoint} (no window, triggers: network)" in out
    final = events[-1]
    assert isinstance(final, LogReady)
    assert [t.planned_onset_s for t in final.log.trials] == [2.0, 5.0]
    # Within a few frames of the plan (the clock runs 10 times real time: 0.1 s here is 10 ms of real time).
    assert all(t.onset_error_ms is not None and abs(t.onset_error_ms) < 100 for t in final.log.trials)
    assert (tmp_path / "ev" / "sub-01_run-1_events.tsv").read_text().count("a.png") == 2


def test_present_refuses_a_window_option_it_cannot_honour(cortexloop: Cli, tmp_path: Path) -> None:
    key_file = generate_key_file(tmp_path / "key")
    result = cortexloop("present", "--no-window", "--triggers", "keyboard", "--endpoint", "tcp://127.0.0.1:0",
                        "--key-file", key_file)  # fmt: skip
    assert result.returncode != 0
    assert "--no-window has no keyboard: use --triggers network" in result.stderr
    (tmp_path / "open").write_text("00" * 32)
    (tmp_path / "open").chmod(0o644)
    result = cortexloop(
        "present", "--no-window", "--endpoint", "tcp://127.0.0.1:0", "--key-file", tmp_path / "open"
    )
    assert result.returncode == 1
    assert "readable by others" in result.stderr
    assert "chmod 600" in result.stderr
    result = cortexloop("present", "--triggers", "serial", "--endpoint", "tcp://127.0.0.1:0",
                        "--key-file", key_file)  # fmt: skip
    assert result.returncode != 0
    assert "--triggers serial and --serial-port go together" in " ".join(result.stderr.split())


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (Xvfb)")
def test_present_in_a_window_runs_a_plan_on_launchscan_triggers_with_only_the_stimulus_computers_packages(
    tmp_path: Path, installed_only: Callable[..., dict[str, str]]
) -> None:
    # As on a stimulus computer that ran pip install '.[presenter]': no torch, no scikit-image, no report.
    Image.new("RGB", (64, 64), (200, 0, 0)).save(tmp_path / "a.png")
    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    plan = RunPlan(run_id="window", tr_s=0.5, n_volumes=6, trials=(
        PlannedTrial(stimulus="a.png", sha256=sha, onset_s=0.5, duration_s=0.5),
        PlannedTrial(stimulus="a.png", sha256=sha, onset_s=1.5, duration_s=0.5),
    ))  # fmt: skip
    server, endpoint, key = _serve(
        tmp_path, "--triggers", "emulator", "--size", "320x240", env=installed_only("presenter")
    )
    try:
        with PresenterClient(endpoint, key, timeout_s=60) as client:
            assert client.status["state"] == "idle"
            client.send_plan(plan)
            events = []
            while not events or events[-1].type not in ("log", "error", "refused"):
                event = client.next_event(30)
                assert event is not None, [e.type for e in events]
                events.append(event)
            client.command("quit")
            assert client.next_event(10) == Ack(command="quit")
        out, err = server.communicate(timeout=20)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "triggers: emulator" in out
    final = events[-1]
    assert isinstance(final, LogReady), final
    assert len(final.log.triggers_s) == 6
    assert [t.shown for t in final.log.trials] == [True, True]
    assert (tmp_path / "ev" / "window_events.tsv").exists()


def test_sigterm_mid_run_ends_the_run_aborted_and_still_reports_it(tmp_path: Path) -> None:
    Image.new("RGB", (16, 16), (0, 0, 200)).save(tmp_path / "a.png")
    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    trials = tuple(
        PlannedTrial(stimulus="a.png", sha256=sha, onset_s=1.0 + 2.0 * k, duration_s=1.0) for k in range(20)
    )
    plan = RunPlan(run_id="stopped", tr_s=2.0, n_volumes=22, trials=trials)
    server, endpoint, key = _serve(tmp_path, "--no-window", "--speed", "10")
    try:
        with PresenterClient(endpoint, key, timeout_s=60) as client, \
                PresenterClient(endpoint, key, role="scanner") as scanner:  # fmt: skip
            client.send_plan(plan)
            assert isinstance(client.next_event(10), Armed)
            for k in range(4):
                scanner.trigger(k, 2.0 * k)
                time.sleep(0.2)
            server.terminate()  # SIGTERM, as a process manager (or the controller) sends it
            events = []
            while not events or events[-1].type != "log":
                event = client.next_event(10)
                assert event is not None, [e.type for e in events]
                events.append(event)
        out, err = server.communicate(timeout=20)
    finally:
        server.kill()
    assert server.returncode == 0, err
    assert "presenter stopped" in out
    final = events[-1]
    assert isinstance(final, LogReady)
    assert final.log.aborted
    shown = sum(t.shown for t in final.log.trials)
    assert 1 <= shown < 20
    assert (tmp_path / "ev" / "stopped_events.tsv").exists()  # written before the process ended
