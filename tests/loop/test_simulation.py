"""The virtual subject (ground truth, BOLD, noise ceiling) and the simulated scanner (files, pacing)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest

from db.base import ConfigError
from loop.analysis.hrf import hrf_integral
from loop.errors import SimulationError
from loop.plans import save_png
from loop.simulation.bold import BoldRun
from loop.simulation.scanner import SimulatedScanner
from loop.simulation.subject import ROI_NAMES, SubjectConfig, VirtualSubject
from scanner_bridge import DirectoryWatcher, ScaledClock, WatchConfig
from stimulus.natural import natural_image_set
from stimulus.present import PlannedTrial, RunPlan, VirtualClock
from stimulus.scores import noise_ceiling

QUICK = WatchConfig(incomplete_timeout_s=0.5, rescan_interval_s=0.2, poll_interval_s=0.02)
Array = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def subject() -> VirtualSubject:
    """The default virtual subject (seed 0), built once: it takes a few seconds."""
    return VirtualSubject(SubjectConfig())


@pytest.fixture(scope="module")
def images() -> object:
    return natural_image_set(150, size=128, seed=11)


def _voxel_signals(volumes: npt.NDArray[np.int16], subject: VirtualSubject) -> Array:
    """Percent signal change of every ROI voxel, (n_volumes, n_roi_voxels), from raw volumes."""
    flat = np.ravel_multi_index(tuple(subject.tuning.coords.T), subject.brain.shape)
    values = volumes.reshape(len(volumes), -1)[:, flat].astype(np.float64)
    return values / values.mean(0) * 100 - 100


def _single_trials(signals: Array, onsets: Array, duration_s: float, tr_s: float, delays: Array) -> Array:
    """Least-squares-all single-trial responses with cosine drift regressors, each voxel with its own HRF."""
    t = np.arange(len(signals)) * tr_s
    drift = np.stack([np.cos(np.pi * j * (t + tr_s / 2) / (len(t) * tr_s)) for j in range(6)], 1)
    betas = np.zeros((len(onsets), signals.shape[1]))
    groups = np.round(delays / 0.25) * 0.25
    for delay in np.unique(groups):
        columns = np.flatnonzero(groups == delay)
        trials = np.stack(
            [hrf_integral(t - o, delay) - hrf_integral(t - o - duration_s, delay) for o in onsets], 1
        )
        coef = np.linalg.lstsq(np.concatenate([trials, drift], 1), signals[:, columns], rcond=None)[0]
        betas[:, columns] = coef[: len(onsets)]
    return betas


def test_the_subject_has_six_disjoint_rois_written_as_an_atlas(
    subject: VirtualSubject, tmp_path: Path
) -> None:
    sizes = {name: int(subject.roi_mask(name).sum()) for name in ROI_NAMES}
    assert all(n >= 80 for n in sizes.values()), sizes
    assert sum(sizes.values()) == int((subject.labels > 0).sum())  # disjoint
    assert not np.any((subject.labels > 0) & ~subject.brain)
    labels_path, names_path = subject.write_atlas(tmp_path)
    image = nib.load(labels_path)
    assert np.array_equal(np.asarray(image.dataobj), subject.labels)
    assert np.allclose(image.affine, subject.affine)
    rows = [line.split("\t") for line in names_path.read_text().splitlines()]
    assert rows[0] == ["index", "name", "description"]
    assert [(int(r[0]), r[1]) for r in rows[1:]] == [(k + 1, n) for k, n in enumerate(ROI_NAMES)]


def test_category_areas_prefer_their_category_in_the_ground_truth(
    subject: VirtualSubject, images: object
) -> None:
    responses = subject.roi_responses(images.pixels)  # type: ignore[attr-defined]
    mean = {
        (roi, c): float(responses[roi][images.of(c)].mean())  # type: ignore[attr-defined]
        for roi in ROI_NAMES
        for c in ("face", "animal", "scene", "object", "texture")
    }
    for roi, preferred in (("FFA", ("face", "animal")), ("PPA", ("scene",)), ("LO", ("object",))):
        best_other = max(
            mean[roi, c] for c in ("face", "animal", "scene", "object", "texture") if c not in preferred
        )
        assert min(mean[roi, c] for c in preferred) > best_other, (roi, mean)


def _quadrant_patches(size: int) -> npt.NDArray[np.float32]:
    """A checkerboard patch per quadrant on grey: upper right, upper left, lower left, lower right."""
    yy, xx = np.mgrid[0:size, 0:size]
    board = np.sign(np.sin(2 * np.pi * 6 * xx / size) * np.sin(2 * np.pi * 6 * yy / size)) * 0.5
    patches = np.full((4, 3, size, size), 0.5, np.float32)
    half, q = size // 2, size // 4
    for k, (row, col) in enumerate([(0, 1), (0, 0), (1, 0), (1, 1)]):
        r0, c0 = row * half + q // 2, col * half + q // 2
        patches[k, :, r0 : r0 + q, c0 : c0 + q] = 0.5 + board[r0 : r0 + q, c0 : c0 + q]
    return patches


def test_early_areas_are_retinotopic(subject: VirtualSubject) -> None:
    responses = subject.voxel_responses(_quadrant_patches(128))  # (4 quadrants, voxels)
    prf = subject.tuning.prf
    for roi in ("V1", "V2"):
        rows = subject.roi_voxels(roi)
        rows = rows[(np.abs(prf[rows, 0]) > 0.2) & (np.abs(prf[rows, 1]) > 0.2)]  # off the meridians
        quadrant = np.select(
            [(prf[rows, 0] > 0) & (prf[rows, 1] > 0), (prf[rows, 0] < 0) & (prf[rows, 1] > 0),
             (prf[rows, 0] < 0) & (prf[rows, 1] < 0)], [0, 1, 2], 3,
        )  # fmt: skip
        agreement = np.mean(responses[:, rows].argmax(0) == quadrant)
        assert agreement > 0.8, f"{roi}: {agreement:.0%} of voxels prefer the quadrant of their pRF"
    # Receptive fields grow along the hierarchy.
    sizes = [np.median(prf[subject.roi_voxels(r), 2]) for r in ("V1", "V2", "V4")]
    assert sizes == sorted(sizes)


def _run_design(
    subject: VirtualSubject, pictures: npt.NDArray[np.float32], order: npt.NDArray[np.intp], gap_s: float,
    tr_s: float = 2.0, seed: int = 1,
) -> tuple[Array, Array]:  # fmt: skip
    """Isolated 1 s presentations of pictures[order], every gap_s; the ROI voxels' signals and the onsets."""
    responses = subject.voxel_responses(pictures)
    onsets = 4.0 + gap_s * np.arange(len(order))
    n_volumes = int((onsets[-1] + 30) / tr_s)
    run = BoldRun(subject, tr_s, n_volumes, seed=seed)
    for onset, k in zip(onsets, order, strict=True):
        run.present(onset, 1.0, str(k), responses[k])
    volumes = np.stack([run.volume() for _ in range(n_volumes)])
    return _voxel_signals(volumes, subject), onsets


def test_the_noise_ceiling_measured_from_repeats_is_the_configured_one(
    subject: VirtualSubject, images: object
) -> None:
    pictures = images.pixels[:30]  # type: ignore[attr-defined]
    order = np.random.default_rng(0).permutation(np.repeat(np.arange(30), 3))
    signals, onsets = _run_design(subject, pictures, order, gap_s=14.0)
    betas = _single_trials(signals, onsets, 1.0, 2.0, subject.tuning.hrf_delay_s)
    measured = noise_ceiling(betas, order).percent
    configured = subject.config.noise_ceiling
    assert abs(np.median(measured) - configured) < 6, (np.median(measured), configured)
    # Voxels differ, and the estimate follows each voxel's configured ceiling.
    assert np.corrcoef(measured, subject.noise_ceiling)[0, 1] > 0.3


def test_simulated_bold_shows_category_selectivity_and_crossed_hemifields(
    subject: VirtualSubject, images: object
) -> None:
    categories = ("face", "scene", "object", "texture")
    chosen = np.concatenate([images.of(c)[:8] for c in categories])  # type: ignore[attr-defined]
    order = np.random.default_rng(2).permutation(np.arange(len(chosen)))
    patches = _quadrant_patches(128)
    left_right = np.stack([patches[1] + patches[2] - 0.5, patches[0] + patches[3] - 0.5])  # left, right field
    pictures = np.concatenate([images.pixels[chosen], left_right, left_right])  # type: ignore[attr-defined]
    order = np.concatenate([order, len(chosen) + np.array([0, 1, 2, 3])])
    signals, onsets = _run_design(subject, pictures, order, gap_s=10.0, seed=3)
    betas = _single_trials(signals, onsets, 1.0, 2.0, subject.tuning.hrf_delay_s)
    shown = [images.categories[chosen[k]] if k < len(chosen) else "field" for k in order]  # type: ignore[attr-defined]
    label = np.array(shown)
    for roi, preferred in (("FFA", "face"), ("PPA", "scene")):
        roi_betas = betas[:, subject.roi_voxels(roi)].mean(1)
        by_category = {c: roi_betas[label == c].mean() for c in categories}
        assert max(by_category, key=by_category.get) == preferred, (roi, by_category)  # type: ignore[arg-type]
    # V1 in the left hemisphere (x < 0) answers the right visual field, and the other way round.
    v1 = subject.roi_voxels("V1")
    left_hemisphere = subject.tuning.coords[v1, 0] < subject.config.shape[0] / 2
    fields = betas[len(chosen) :][:, v1]  # left, right, left, right
    right_minus_left = fields[[1, 3]].mean(0) - fields[[0, 2]].mean(0)
    assert right_minus_left[left_hemisphere].mean() > 0 > right_minus_left[~left_hemisphere].mean()


def test_runs_are_reproducible_from_their_seed(subject: VirtualSubject) -> None:
    first, again, other = (BoldRun(subject, 2.0, 3, seed=seed) for seed in (7, 7, 8))
    volumes = [[run.volume() for _ in range(3)] for run in (first, again, other)]
    assert all(np.array_equal(a, b) for a, b in zip(volumes[0], volumes[1], strict=True))
    assert not np.array_equal(volumes[0][2], volumes[2][2])
    assert volumes[0][0].dtype == np.int16
    assert 900 < np.median(volumes[0][0][subject.brain]) < 1100  # a baseline near 1000
    with pytest.raises(SimulationError, match="the run has 3 volumes; all were made"):
        first.volume()


def test_head_motion_moves_the_brain_by_the_recorded_amount(subject: VirtualSubject) -> None:
    run = BoldRun(subject, 2.0, 20, seed=4, motion_mm=0.6)
    volumes = [run.volume().astype(np.float64) for _ in range(20)]

    def centre(volume: Array) -> Array:
        from scipy.ndimage import center_of_mass

        return np.array(center_of_mass(np.where(volume > 300, volume, 0.0)))  # of the brain, not the air

    moved = np.array([centre(v) - centre(volumes[0]) for v in volumes])
    assert np.abs(run.motion_voxels).max() > 0.5  # it did move
    assert np.abs(moved - run.motion_voxels).max() < 0.15  # by what the truth says (voxels)
    assert not np.any(BoldRun(subject, 2.0, 2, seed=4).motion_voxels)


def test_a_subject_spec_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "subject.toml"
    spec.write_text("seed = 3\nnoise_ceilng = 30\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) noise_ceilng; known: .*noise_ceiling"):
        SubjectConfig.from_spec(str(spec))
    spec.write_text("seed = 3\nnoise_ceiling = 30\n")
    assert SubjectConfig.from_spec(str(spec), seed=5) == SubjectConfig(seed=5, noise_ceiling=30)
    with pytest.raises(ConfigError, match="noise_ceiling 120 must be between 0 and 100"):
        SubjectConfig(noise_ceiling=120)


# --- the scanner -----------------------------------------------------------------------------------


def _stimuli(folder: Path, images: object, n: int) -> list[tuple[str, str]]:
    return [save_png(images.pixels[k], folder, f"img{k:03d}.png") for k in range(n)]  # type: ignore[attr-defined]


def _plan(stimuli: list[tuple[str, str]], n_volumes: int, tr_s: float = 2.0) -> RunPlan:
    trials = tuple(
        PlannedTrial(stimulus=name, sha256=sha, onset_s=2.0 + 5.0 * k, duration_s=2.0)
        for k, (name, sha) in enumerate(stimuli)
    )
    return RunPlan(run_id="sim", tr_s=tr_s, n_volumes=n_volumes, trials=trials)


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_volumes_are_files_the_bridge_reads(
    subject: VirtualSubject, images: object, tmp_path: Path, fmt: str
) -> None:
    stimuli = _stimuli(tmp_path / "stim", images, 2)
    scanner = SimulatedScanner(subject, tmp_path / "export", tr_s=2.0, clock=VirtualClock(), fmt=fmt,
                               stimulus_dir=tmp_path / "stim")  # fmt: skip
    volumes = []
    with DirectoryWatcher(tmp_path / "export", config=QUICK) as watcher:  # watching before the run
        record = scanner.run(6, plan=_plan(stimuli, 6))
        timer = threading.Timer(30, watcher.close)
        timer.start()
        for volume in watcher:
            volumes.append(volume)
            if len(volumes) == 6:
                break
        timer.cancel()
    assert sorted(record.files) == list(range(6))
    assert [v.index for v in volumes] == list(range(6))
    assert volumes[0].shape == subject.config.shape
    data, affine = np.asarray(volumes[0].data), volumes[0].affine
    if fmt == "dicom":  # DICOM stacks the slices from the other end: the same voxels in the same places
        flip = np.diag([1.0, 1.0, -1.0, 1.0])
        flip[2, 3] = subject.config.shape[2] - 1
        data, affine = data[:, :, ::-1], affine @ flip
    assert np.allclose(affine, subject.affine, atol=1e-3)
    assert data[subject.brain].mean() > 10 * data[~subject.brain].mean()  # the brain is where the atlas says
    assert volumes[0].tr_s == pytest.approx(2.0)
    truth = json.loads(record.truth.read_text())  # type: ignore[union-attr]
    assert [p["stimulus"] for p in truth["presentations"]] == ["img000.png", "img001.png"]
    assert set(truth["presentations"][0]["roi_responses"]) == set(ROI_NAMES)


@pytest.mark.parametrize(("speed", "tr_s"), [(1.0, 0.4), (20.0, 2.0)])
def test_volumes_are_written_as_each_tr_ends(
    subject: VirtualSubject, images: object, tmp_path: Path, speed: float, tr_s: float
) -> None:
    stimuli = _stimuli(tmp_path / "stim", images, 1)
    trial = PlannedTrial(stimulus=stimuli[0][0], sha256=stimuli[0][1], onset_s=tr_s, duration_s=tr_s)
    plan = RunPlan(run_id="pace", tr_s=tr_s, n_volumes=8, trials=(trial,))
    scanner = SimulatedScanner(subject, tmp_path / "export", tr_s=tr_s, clock=ScaledClock(speed),
                               stimulus_dir=tmp_path / "stim")  # fmt: skip
    record = scanner.run(8, plan=plan)
    times = [record.written_at[k] for k in range(8)]
    intervals = np.diff(times)
    assert np.median(intervals) == pytest.approx(tr_s / speed, rel=0.05)
    assert np.abs(intervals - tr_s / speed).max() < 0.03


def test_the_scanner_follows_the_presenters_actual_onsets(
    subject: VirtualSubject, images: object, tmp_path: Path
) -> None:
    from stimulus.present import VirtualDisplay
    from stimulus.present.channel import ChannelTriggers, PresenterChannel, PresenterClient
    from stimulus.present.events import LogReady
    from stimulus.present.server import Presenter

    speed, key = 10.0, b"s" * 32
    stimuli = _stimuli(tmp_path / "stim", images, 3)
    clock = ScaledClock(speed)
    channel = PresenterChannel("tcp://127.0.0.1:0", key, clock)
    presenter = Presenter(
        channel, VirtualDisplay(clock, history=0), clock, triggers=lambda plan: ChannelTriggers(channel),
        stimulus_dir=tmp_path / "stim", events_dir=tmp_path / "events",
    )  # fmt: skip
    serving = threading.Thread(target=presenter.serve, daemon=True)
    serving.start()
    try:
        with PresenterClient(channel.endpoint, key) as controller, \
                PresenterClient(channel.endpoint, key, role="scanner") as scanner_peer:  # fmt: skip
            scanner = SimulatedScanner(subject, tmp_path / "export", tr_s=2.0, clock=ScaledClock(speed),
                                       stimulus_dir=tmp_path / "stim")  # fmt: skip
            controller.send_plan(_plan(stimuli, 10))
            record = scanner.run(10, presenter=scanner_peer)
            log = None
            while log is None:
                event = controller.next_event(10)
                assert event is not None
                log = event.log if isinstance(event, LogReady) else None
            controller.command("quit")
    finally:
        serving.join(timeout=10)
        channel.close()
    truth = json.loads(record.truth.read_text())  # type: ignore[union-attr]
    assert record.run_id == "sim"
    shown = [(t.stimulus, t.actual_onset_s) for t in log.trials]
    assert [(p["stimulus"], p["onset_s"]) for p in truth["presentations"]] == shown
    # Triggers are stamped as they reach the presenter, on its clock. Against when the scanner sent each
    # (when it sends them is its own business: a loaded machine wakes it late from its sleep), a stamp is
    # late by the network and, here, by the GIL: scanner and presenter share this process, and the
    # presenter's thread may wait one switch interval (5 ms of real time, 50 ms at 10 times) while the
    # scanner writes a volume. In the scanner they are separate processes on separate computers.
    sent = np.array([record.triggered_at[k] for k in range(10)])
    lateness = np.abs(np.array(log.triggers_s) - speed * (sent - sent[0]))
    assert np.median(lateness) < speed * (sys.getswitchinterval() + 0.003), log.triggers_s
    assert lateness.max() < 0.4, log.triggers_s


def test_a_stopped_run_leaves_only_whole_volumes(
    subject: VirtualSubject, images: object, tmp_path: Path
) -> None:
    stimuli = _stimuli(tmp_path / "stim", images, 1)
    stop = threading.Event()
    scanner = SimulatedScanner(subject, tmp_path / "export", tr_s=2.0, clock=ScaledClock(20.0),
                               stimulus_dir=tmp_path / "stim")  # fmt: skip

    def stop_after_three() -> None:  # stop mid-run, however long the start took
        while not (tmp_path / "export" / "run01_vol_00002.nii").exists():
            time.sleep(0.005)
        stop.set()

    threading.Thread(target=stop_after_three, daemon=True).start()
    record = scanner.run(plan=_plan(stimuli, 20), stop=stop)
    names = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert 3 <= len(names) < 20
    assert names == [f"run01_vol_{k:05d}.nii" for k in range(len(names))]  # no temporary file left
    assert sorted(record.files) == list(range(len(names)))
