"""One run as a session runs it: presenter, simulated scanner and bridge in processes of their own.

The controller's side runs here: it sends the plan, takes the presenter's
events and the bridge's volumes, and analyses each volume as it arrives.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from loop.analysis.design import Trial
from loop.analysis.realtime import RunAnalyzer
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.plans import save_png
from scanner_bridge import ScaledClock, VolumeReceiver, generate_key_file, load_key
from stimulus.natural import natural_image_set
from stimulus.present import PlannedTrial, RunPlan
from stimulus.present.channel import PresenterClient

from .conftest import CORTEXLOOP, free_port

SPEED = "10"


def test_a_run_flows_from_plan_to_analysed_volumes_across_processes(tmp_path: Path) -> None:
    key_file = generate_key_file(tmp_path / "key")
    key = load_key(key_file)
    images = natural_image_set(16, size=128, seed=3)
    trials = []
    for k in range(16):
        name, sha = save_png(images.pixels[k], tmp_path / "stim", f"i{k:02d}.png")
        trials.append(PlannedTrial(stimulus=name, sha256=sha, onset_s=4.0 + 8.0 * k, duration_s=1.0))
    plan = RunPlan(run_id="run-01", tr_s=2.0, n_volumes=80, trials=tuple(trials))
    presenter_at, bridge_at = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    export = tmp_path / "export"
    export.mkdir()
    common = ("--key-file", str(key_file))
    commands = {
        "presenter": ["present", "--no-window", "--speed", SPEED, "--endpoint", presenter_at, *common,
                      "--stimulus-dir", str(tmp_path / "stim"), "--events-dir", str(tmp_path / "events")],
        "bridge": ["bridge", "watch", str(export), "--endpoint", bridge_at, *common,
                   "--series", "run01_vol_#####.nii", "--spool", str(tmp_path / "spool")],
        "scanner": ["bridge", "simulate", str(export), "--tr", "2", "--presenter", presenter_at, *common,
                    "--speed", SPEED, "--stimulus-dir", str(tmp_path / "stim")],
    }  # fmt: skip
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in commands}  # noqa: SIM115 (closed below)
    processes = {
        name: subprocess.Popen([str(CORTEXLOOP), *args], stdout=logs[name], stderr=subprocess.STDOUT)
        for name, args in commands.items()
    }
    arrivals, events = [], []
    try:
        with PresenterClient(presenter_at, key, timeout_s=60) as controller, \
                VolumeReceiver(bridge_at, key, clock=ScaledClock(float(SPEED))) as receiver:  # fmt: skip
            # The scanner's subject must be listening before the run is armed.
            while controller.hello()["peers"] < 2:
                controller.next_event(0.5)
            controller.send_plan(plan)
            while len(arrivals) < plan.n_volumes:
                arrivals.append(receiver.get(timeout_s=60))
                while (event := controller.next_event(0)) is not None:
                    events.append(event)
            while not events or events[-1]["type"] != "log":
                event = controller.next_event(30)
                assert event is not None
                events.append(event)
            controller.command("quit")
        assert processes["scanner"].wait(60) == 0  # it stops after its run
        assert processes["presenter"].wait(30) == 0
        processes["bridge"].terminate()
        assert processes["bridge"].wait(30) == 0
    finally:
        for process in processes.values():
            process.kill()
        for log in logs.values():
            log.close()
    # Every volume came, in order; the subject saw exactly what the presenter showed, when it showed it.
    assert [a.index for a in arrivals] == list(range(plan.n_volumes))
    assert all(a.status.value == "ok" for a in arrivals)
    log = events[-1]["log"]
    truth = json.loads((tmp_path / "export-truth" / "run01_truth.json").read_text())
    shown = [(t["stimulus"], t["actual_onset_s"]) for t in log["trials"]]
    assert [(p["stimulus"], p["onset_s"]) for p in truth["presentations"]] == shown
    # Analysed as they arrived, the volumes give ROI responses that follow the subject's true ones.
    atlas = RoiAtlas.load(tmp_path / "export-truth" / "rois.nii.gz", tmp_path / "export-truth" / "rois.tsv")
    analyzer = RunAnalyzer(RoiSignals(atlas), plan.tr_s, plan.n_volumes, max_trials=16, voxel_mm=[3, 3, 3])
    onsets = [Trial(t["actual_onset_s"], t["actual_duration_s"], t["stimulus"]) for t in log["trials"]]
    for arrival in arrivals:
        while onsets and onsets[0].onset_s < arrival.index * plan.tr_s:
            analyzer.add_trial(onsets.pop(0))
        assert arrival.volume is not None
        analyzer.process(arrival.index, arrival.volume.data)
    measured = analyzer.roi_responses()
    expected = np.array([[p["roi_responses"][name] for name in analyzer.signals.roi_names]
                         for p in truth["presentations"]])  # fmt: skip
    r = [np.corrcoef(measured[:, j], expected[:, j])[0, 1] for j in range(expected.shape[1])]
    assert np.median(r) > 0.5, r
