"""The controller's analysis: designs and single-trial fits against nilearn, ROI signals, head motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from db.base import ConfigError
from loop.analysis.design import Trial, cosine_drifts, frame_times, trial_regressors
from loop.analysis.glm import IncrementalGLM, least_squares_all, least_squares_separate
from loop.analysis.motion import RigidRegistration, framewise_displacement
from loop.analysis.roi import RoiAtlas, RoiSignals

Array = npt.NDArray[np.float64]
TR = 2.0


def _trials(n: int, spacing: float, seed: int = 0) -> list[Trial]:
    rng = np.random.default_rng(seed)
    onsets = 6.0 + spacing * np.arange(n) + rng.uniform(0, 0.5, n)
    return [Trial(float(o), float(rng.choice([1.0, 2.0])), f"t{k:03d}") for k, o in enumerate(onsets)]


def _nilearn_design(trials: list[Trial], times: Array) -> pd.DataFrame:
    from nilearn.glm.first_level import make_first_level_design_matrix

    events = pd.DataFrame({"onset": [t.onset_s for t in trials], "duration": [t.duration_s for t in trials],
                           "trial_type": [t.label for t in trials]})  # fmt: skip
    # Oversampled 1000 times (2 ms steps at TR 2 s): on nilearn's default grid (40 ms) onsets move.
    return make_first_level_design_matrix(
        times, events, hrf_model="spm", drift_model="cosine", high_pass=0.01, oversampling=1000
    )


def test_trial_regressors_and_drifts_are_nilearns() -> None:
    trials = _trials(10, 9.0)
    times = frame_times(60, TR)
    theirs = _nilearn_design(trials, times)
    ours = trial_regressors(times, trials)
    for k, trial in enumerate(trials):
        column = theirs[trial.label].to_numpy()
        scale = (column @ ours[:, k]) / (ours[:, k] @ ours[:, k])  # nilearn scales its HRF to unit area
        assert np.abs(scale * ours[:, k] - column).max() < 0.002 * np.abs(column).max(), trial
    drift_columns = [c for c in theirs.columns if c.startswith("drift") or c == "constant"]
    assert np.allclose(cosine_drifts(times, 0.01), theirs[drift_columns].to_numpy(), atol=1e-12)


def test_least_squares_all_agrees_with_nilearns_glm_and_recovers_the_truth() -> None:
    from nilearn.glm.first_level import run_glm

    trials = _trials(12, 8.0, seed=1)
    times = frame_times(60, TR)
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.5, 2.0, (12, 40))
    clean = trial_regressors(times, trials) @ truth
    signals = (
        clean + 0.3 * rng.standard_normal(clean.shape) + 0.5 * np.cos(np.pi * times / times[-1])[:, None]
    )
    ours = least_squares_all(signals, trials, TR)
    design = _nilearn_design(trials, times)
    labels, results = run_glm(signals, design.to_numpy(), noise_model="ols")
    theirs = results[labels[0]].theta[: len(trials)]
    scale = np.array([(design[t.label].to_numpy() @ trial_regressors(times, [t])[:, 0])
                      / (trial_regressors(times, [t])[:, 0] ** 2).sum() for t in trials])  # fmt: skip
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.9995
    assert np.abs(ours - theirs * scale[:, None]).max() < 0.005  # responses are 0.5-2
    assert np.corrcoef(ours.ravel(), truth.ravel())[0, 1] > 0.8  # noise 0.3 per volume


def test_least_squares_separate_beats_all_when_trials_crowd() -> None:
    trials = _trials(60, 3.0, seed=3)  # a trial every 3 s: their responses overlap
    times = frame_times(int((trials[-1].onset_s + 30) / TR), TR)
    rng = np.random.default_rng(4)
    truth = rng.uniform(0.5, 2.0, (60, 200))
    signals = trial_regressors(times, trials) @ truth + 1.0 * rng.standard_normal((len(times), 200))
    lsa = least_squares_all(signals, trials, TR)
    lss = least_squares_separate(signals, trials, TR)
    error = {name: np.mean((est - truth) ** 2) for name, est in (("lsa", lsa), ("lss", lss))}
    assert error["lss"] < error["lsa"], error


def test_the_incremental_glm_ends_where_the_batch_fit_does() -> None:
    trials = _trials(15, 10.0, seed=5)
    n = int((trials[-1].onset_s + 30) / TR)
    rng = np.random.default_rng(6)
    truth = rng.uniform(0.5, 2.0, (15, 30))
    times = frame_times(n, TR)
    motion = rng.standard_normal((n, 6)) * 0.1
    signals = (
        trial_regressors(times, trials) @ truth
        + 0.2 * rng.standard_normal((n, 30))
        + motion @ rng.standard_normal((6, 30))
    )
    glm = IncrementalGLM(TR, n, 30, max_trials=20, n_confounds=6)
    pending = list(trials)
    halfway = None
    for k in range(n):
        while pending and pending[0].onset_s <= k * TR:  # the presenter reports each onset as it happens
            glm.add_trial(pending.pop(0))
        glm.add_volume(k, signals[k], motion[k])
        if k == n // 2:
            halfway = glm.responses()
    final = glm.responses()
    assert np.allclose(final, least_squares_all(signals, trials, TR, confounds=motion), atol=1e-8)
    assert halfway is not None
    early = len(halfway) // 2  # trials long finished by midway are already well estimated
    assert np.corrcoef(halfway[:early].ravel(), truth[:early].ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="volume 3 added out of order; the next is"):
        glm.add_volume(3, signals[3], motion[3])


# --- ROI signals and motion, on the virtual subject -------------------------------------------------


@pytest.fixture(scope="module")
def subject():  # type: ignore[no-untyped-def]
    from loop.simulation.subject import VirtualSubject

    return VirtualSubject()


def test_roi_signals_are_the_mask_means_of_the_atlas_a_session_loads(subject, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from loop.simulation.bold import BoldRun

    labels, names = subject.write_atlas(tmp_path)
    atlas = RoiAtlas.load(labels, names)
    signals = RoiSignals(atlas, voxels=subject.tuning.coords[:50])
    volume = BoldRun(subject, TR, 1).volume()
    signals.check(volume.shape, subject.affine)
    means, voxels = signals.extract(volume)
    assert signals.roi_names == ["V1", "V2", "V4", "LO", "FFA", "PPA"]
    assert means[0] == pytest.approx(volume[subject.roi_mask("V1")].mean())
    assert np.array_equal(voxels, volume[tuple(subject.tuning.coords[:50].T)])
    # The same voxels stacked the other way along z (as single-slice DICOM can be): the same values.
    flipped = subject.affine.copy()
    flipped[:3, 2], flipped[:3, 3] = -flipped[:3, 2], subject.affine[:3] @ [0, 0, volume.shape[2] - 1, 1]
    signals.check(volume.shape, flipped)
    flipped_means, flipped_voxels = signals.extract(volume[:, :, ::-1])
    assert np.array_equal(flipped_means, means)
    assert np.array_equal(flipped_voxels, voxels)
    with pytest.raises(ConfigError, match=r"not on the ROI atlas's grid \(64, 64, 36\)"):
        signals.check((64, 64, 35), subject.affine)
    shifted = subject.affine.copy()
    shifted[0, 3] += 1.5  # half a voxel: other voxels, which would need resampling
    with pytest.raises(ConfigError, match=r"not on the ROI atlas's grid"):
        signals.check(volume.shape, shifted)
    names.write_text("index\tname\n1\tV1\n")
    with pytest.raises(ConfigError, match=r"labels \[2, 3, 4, 5, 6\] .* have no name"):
        RoiAtlas.load(labels, names)


def test_registration_recovers_head_motion_and_framewise_displacement(subject) -> None:  # type: ignore[no-untyped-def]
    from loop.simulation.bold import BoldRun

    run = BoldRun(subject, TR, 25, seed=9, motion_mm=0.5)
    volumes = [run.volume() for _ in range(25)]
    registration = RigidRegistration(volumes[0], np.abs(np.diag(subject.affine)[:3]))
    params = np.array([registration.register(v) for v in volumes])
    truth_mm = run.motion_voxels * subject.config.voxel_mm
    assert np.abs(truth_mm).max() > 1.0  # the head did move
    assert np.abs(params[:, :3] - truth_mm).max() < 0.15
    assert np.abs(params[:, 3:]).max() < 0.002  # no rotation was applied
    fd = framewise_displacement(params)
    true_fd = np.concatenate([[0.0], np.abs(np.diff(truth_mm, axis=0)).sum(1)])
    assert np.abs(fd - true_fd).max() < 0.3
    still = BoldRun(subject, TR, 5, seed=9)
    still_volumes = [still.volume() for _ in range(5)]
    steady = RigidRegistration(still_volumes[0], [3.0, 3.0, 3.0])
    assert framewise_displacement([steady.register(v) for v in still_volumes]).max() < 0.05


def test_the_real_time_path_tracks_the_true_roi_responses_and_skips_a_missing_volume(  # type: ignore[no-untyped-def]
    subject, tmp_path: Path
) -> None:
    from loop.analysis.realtime import RunAnalyzer
    from loop.simulation.bold import BoldRun
    from stimulus.natural import natural_image_set

    images = natural_image_set(40, size=128, seed=21)
    truth = subject.voxel_responses(images.pixels)
    roi_truth = np.stack(
        [truth[:, subject.roi_voxels(name)].mean(1) for name in ("V1", "V2", "V4", "LO", "FFA", "PPA")], 1
    )
    trials = [Trial(4.0 + 8.0 * k, 1.0, str(k)) for k in range(40)]
    n = int((trials[-1].onset_s + 30) / TR)
    run = BoldRun(subject, TR, n, seed=12)
    for trial, response in zip(trials, truth, strict=True):
        run.present(trial.onset_s, trial.duration_s, trial.label, response)
    labels, names = subject.write_atlas(tmp_path)
    analyzer = RunAnalyzer(RoiSignals(RoiAtlas.load(labels, names)), TR, n, max_trials=40, voxel_mm=[3, 3, 3])
    pending = list(trials)
    for k in range(n):
        volume = run.volume()
        while pending and pending[0].onset_s < k * TR:
            analyzer.add_trial(pending.pop(0))
        if k == 50:
            continue  # lost on the way: the fit goes on without it
        result = analyzer.process(k, volume)
        assert result.index == k
    measured = analyzer.roi_responses()
    assert measured.shape == (40, 6)
    r = [np.corrcoef(measured[:, j], roi_truth[:, j])[0, 1] for j in range(6)]
    assert np.median(r) > 0.7, r
    assert [res.index for res in analyzer.results] == [k for k in range(n) if k != 50]
    assert max(res.fd_mm for res in analyzer.results) < 0.1  # this run has no head motion


def test_registration_recovers_a_known_rotation_and_shift_and_locates_voxels_in_the_moved_head(  # type: ignore[no-untyped-def]
    subject,
) -> None:
    from scipy.ndimage import map_coordinates

    from loop.analysis.motion import locate, rotation_matrix
    from loop.simulation.bold import BoldRun

    reference = BoldRun(subject, TR, 1, seed=3).volume().astype(np.float64)
    truth = np.array([1.5, -2.0, 1.0, *np.radians([2.0, -1.5, 3.0])])
    # The head moved: what sits at x (mm about the centre) in the reference sits at R x + t now.
    shape, mm = reference.shape, np.array([3.0, 3.0, 3.0])
    centre = (np.asarray(shape) - 1) / 2
    grid = (np.indices(shape).reshape(3, -1).T - centre) * mm
    before = (grid - truth[:3]) @ rotation_matrix(truth[3:])  # R^-1 (y - t), row vectors
    moved = map_coordinates(reference, (before / mm + centre).T, order=1, mode="nearest").reshape(shape)
    found = RigidRegistration(reference, mm, iterations=100).register(moved)  # as a run is placed
    print("translation (mm)", found[:3].round(3), "rotation (deg)", np.degrees(found[3:]).round(3))
    np.testing.assert_allclose(found[:3], truth[:3], atol=0.2)
    np.testing.assert_allclose(np.degrees(found[3:]), np.degrees(truth[3:]), atol=0.2)
    # Each bright voxel of the reference is found again in the moved head, at its nearest voxel.
    bright = np.flatnonzero(reference.ravel() > np.percentile(reference, 70))
    there, inside = locate(bright, shape, mm, found)
    assert inside.mean() > 0.99
    r = np.corrcoef(reference.ravel()[bright][inside], moved.ravel()[there[inside]])[0, 1]
    unplaced = np.corrcoef(reference.ravel()[bright], moved.ravel()[bright])[0, 1]
    print(f"reference against the moved head: r {r:.3f} where located, {unplaced:.3f} where it was")
    assert r > unplaced + 0.05


def test_a_run_that_begins_elsewhere_is_placed_against_the_sessions_reference(  # type: ignore[no-untyped-def]
    subject, tmp_path: Path
) -> None:
    """A later run (on another day: the head 4.1 mm away, turned 4.9 degrees) is found, its ROIs followed."""
    start, turn = (2.5, -2.5, 2.0), (3.0, -3.0, 2.5)
    from loop.recording import SessionReference, implausible_position
    from loop.simulation.bold import BoldRun
    from stimulus.natural import natural_image_set

    mm = np.array([3.0, 3.0, 3.0])
    first = BoldRun(subject, TR, 1, seed=1).volume()
    assert SessionReference(tmp_path / "reference.npz", mm).position(first, subject.affine) is None
    # A later run: the head starts elsewhere (and, on another day, turned) and watches 40 images.
    images = natural_image_set(40, size=128, seed=21)
    truth = subject.voxel_responses(images.pixels)
    n = int((4.0 + 8.0 * 39 + 30) / TR)
    run = BoldRun(subject, TR, n, seed=12, start_mm=start, rotation_deg=turn)
    for k, response in enumerate(truth):
        run.present(4.0 + 8.0 * k, 1.0, str(k), response)
    volumes = [run.volume() for _ in range(n)]
    signal = np.array([run.signal(k * TR) for k in range(n)])  # each ROI voxel's noise-free change
    # A resumed controller reads the reference back from its file.
    params = SessionReference(tmp_path / "reference.npz", mm).position(volumes[0], subject.affine)
    assert params is not None
    # A reference cut short (a full disk, a bad copy): said, with what to do, and nothing is placed wrongly.
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "reference.npz").read_bytes()[:1000])
    with pytest.raises(
        ConfigError, match=r"reference volume .*cut.npz cannot be read .* restore it, or move it"
    ):
        SessionReference(cut, mm).position(volumes[0], subject.affine)
    np.testing.assert_allclose(params[:3], start, atol=0.3)
    np.testing.assert_allclose(np.degrees(params[3:]), turn, atol=0.2)
    reference = SessionReference(tmp_path / "reference.npz", mm)
    reference.position(volumes[0], subject.affine)
    assert reference.match is not None
    assert reference.match > 0.9  # the placed head matches the reference: nothing to stop for
    assert implausible_position(params, label="a run", reference=reference) is None
    labels, names = subject.write_atlas(tmp_path)
    placed, where_it_was = RoiSignals(RoiAtlas.load(labels, names)), RoiSignals(RoiAtlas.load(labels, names))
    for signals in (placed, where_it_was):
        signals.check(volumes[0].shape, subject.affine)
    assert placed.place(params, mm) == 0  # no ROI voxel left the volume
    for j, name in enumerate(placed.roi_names):
        true = signal[:, subject.roi_voxels(name)].mean(1)
        r = {}
        for label, signals in (("placed", placed), ("unplaced", where_it_was)):
            means = np.array([signals.extract(v)[0][j] for v in volumes])
            r[label] = np.corrcoef(100 * (means / means[0] - 1), true)[0, 1]
        print(
            f"{name}: ROI mean against its truth, r {r['placed']:.3f} placed, "
            f"{r['unplaced']:.3f} where it was"
        )
        assert r["placed"] > 0.95
        assert r["placed"] > r["unplaced"]
    # The same day on another slice prescription (it followed the head: 4 degrees, 6 mm): its volumes are
    # resampled onto the reference's grid to register, and the atlas looked up on theirs.
    from scipy.ndimage import affine_transform

    from loop.analysis.motion import rotation_matrix

    prescribed = np.array(subject.affine)
    prescribed[:3, :3] = rotation_matrix(np.radians([4.0, 0.0, 0.0])) @ subject.affine[:3, :3]
    prescribed[:3, 3] += [6.0, 0.0, -3.0]
    to_reference = np.linalg.solve(subject.affine, prescribed)
    rewritten = [
        affine_transform(v.astype(np.float64), to_reference[:3, :3], offset=to_reference[:3, 3], order=1)
        for v in volumes
    ]
    elsewhere = SessionReference(tmp_path / "reference.npz", mm)
    params = elsewhere.position(rewritten[0], prescribed)
    assert params is not None
    assert elsewhere.across is not None
    np.testing.assert_allclose(params[:3], start, atol=0.3)  # the head's movement, in the reference's grid
    np.testing.assert_allclose(np.degrees(params[3:]), turn, atol=0.3)
    across = RoiSignals(RoiAtlas.load(labels, names))
    assert elsewhere.grid is not None
    assert across.place_across(params, mm, elsewhere.grid, (rewritten[0].shape, prescribed)) == 0
    for j, name in enumerate(across.roi_names):
        means = np.array([across.extract(v)[0][j] for v in rewritten])
        r_across = np.corrcoef(100 * (means / means[0] - 1), signal[:, subject.roi_voxels(name)].mean(1))[
            0, 1
        ]
        print(f"{name}: on another prescription, r {r_across:.3f}")
        assert r_across > 0.9
