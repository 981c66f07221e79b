"""`cortexloop model timeseries`: a movie watched by the virtual subject, fitted and scored TR by TR.

The subject watches six training movies once and a test movie three times; its
volumes (AR noise, physiology, drift) are made as a scan's are, and each ROI
voxel's detrended percent signal is what a lab would hand over. Only the
tests read the subject's truth (its voxels' noise ceilings).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from scipy.signal import detrend

from loop.simulation.bold import BoldRun
from loop.simulation.subject import ROI_NAMES, VirtualSubject
from stimulus import EncodingModel

from .conftest import Seen

Cli = Callable[..., subprocess.CompletedProcess[str]]
TR_S, FRAME_S = 2.0, 2.0
TRAIN_RUNS, TRAIN_TRS, TEST_TRS, TEST_REPEATS = 6, 150, 60, 3
ROIS = ("V1", "PPA")


def _watch(
    subject: VirtualSubject, responses: npt.NDArray[np.float64], n_trs: int, seed: int
) -> npt.NDArray[np.float64]:
    """The ROI voxels' detrended percent signal while the frames play, one per FRAME_S."""
    run = BoldRun(subject, TR_S, n_trs, seed=seed, motion_mm=0.0)
    for k, values in enumerate(responses):
        run.present(k * FRAME_S, FRAME_S, f"frame {k}", values)
    flat = np.ravel_multi_index(tuple(subject.tuning.coords.T), subject.labels.shape)
    raw = np.stack([run.volume().ravel()[flat] for _ in range(n_trs)]).astype(np.float64)
    percent: npt.NDArray[np.float64] = detrend(100 * (raw / raw.mean(axis=0) - 1), axis=0)
    return percent


@pytest.fixture(scope="module")
def movies(
    tmp_path_factory: pytest.TempPathFactory, seen: Seen
) -> tuple[Path, VirtualSubject, npt.NDArray[np.bool_]]:
    """A run table (six training runs, three showings of a test movie), the subject, the ROI voxels used."""
    folder = tmp_path_factory.mktemp("movies")
    subject = seen.subject
    chosen = np.isin(subject.tuning.roi, [ROI_NAMES.index(r) for r in ROIS])
    frames_per_run = {"train": int(TRAIN_TRS * TR_S / FRAME_S), "test": int(TEST_TRS * TR_S / FRAME_S)}
    n_frames = TRAIN_RUNS * frames_per_run["train"] + frames_per_run["test"]
    images, truth = seen.images[:n_frames], seen.truth[:n_frames]
    (folder / "frames").mkdir()
    for k, pixels in enumerate(images):
        Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            folder / "frames" / f"{k:04d}.png"
        )
    labels = np.array([ROI_NAMES[r] for r in subject.tuning.roi[chosen]])
    flat = np.ravel_multi_index(tuple(subject.tuning.coords[chosen].T), subject.labels.shape)
    runs = [("train", f"movie{k + 1}", k * frames_per_run["train"], TRAIN_TRS) for k in range(TRAIN_RUNS)]
    runs += [("test", "test movie", TRAIN_RUNS * frames_per_run["train"], TEST_TRS)] * TEST_REPEATS
    table = ["run\tevents\tresponses\tstimulus\tsplit"]
    for number, (split, stimulus, first, n_trs) in enumerate(runs, start=1):
        n = frames_per_run[split]
        events = ["onset\tduration\timage"] + [
            f"{j * FRAME_S:g}\t{FRAME_S:g}\tframes/{first + j:04d}.png" for j in range(n)
        ]
        (folder / f"run-{number}_events.tsv").write_text("\n".join(events) + "\n")
        bold = _watch(subject, truth[first : first + n], n_trs, seed=number)[:, chosen]
        np.savez(folder / f"run-{number}_bold.npz", responses=bold, roi_labels=labels, voxel_indices=flat)
        table.append(f"{number}\trun-{number}_events.tsv\trun-{number}_bold.npz\t{stimulus}\t{split}")
    (folder / "runs.tsv").write_text("\n".join(table) + "\n")
    return folder / "runs.tsv", subject, chosen


FAST = ("--image-size", "96", "--budget", "500", "--permutations", "50", "--no-layerwise")
MIN_CEILING = "90"  # percent, of the test movie's three showings averaged


@pytest.mark.timeout(400)  # the fixture's movie included
def test_a_movie_model_learns_the_haemodynamic_delay_and_predicts_held_out_runs_tr_by_tr(
    cortexloop: Cli, movies: tuple[Path, VirtualSubject, npt.NDArray[np.bool_]], tmp_path: Path
) -> None:
    runs, subject, chosen = movies
    fit = ("model", "timeseries", "fit", runs, "--tr", "2", "--min-ceiling", MIN_CEILING, *FAST, "--json")
    lagged = cortexloop(*fit, "--out", tmp_path / "movie.cortexloop")
    unlagged = cortexloop(*fit, "--lags", "0", "--out", tmp_path / "now.cortexloop")
    assert lagged.returncode == 0, lagged.stderr
    assert unlagged.returncode == 0, unlagged.stderr
    with_lags, without = json.loads(lagged.stdout)["test"], json.loads(unlagged.stdout)["test"]
    assert with_lags["n_trs"] == TEST_TRS  # the three showings of the test movie, averaged TR by TR
    for roi in ROIS:
        r, r_now = with_lags["rois"][roi]["median_r"], without["rois"][roi]["median_r"]
        print(f"{roi}: held-out median r per TR {r:.2f} with lags of 4, 6 and 8 s, {r_now:.2f} without")
        assert r > 0.35
        assert r > r_now + 0.3  # the haemodynamic delay, learned
    assert with_lags["normalized_accuracy_all_voxels"] > 10

    # Only the voxels that answer the repeated movie alike are fitted: the reliable ones, by the subject's
    # own (hidden) noise ceilings.
    offered = np.load(runs.parent / "run-1_bold.npz")["voxel_indices"]
    fitted = EncodingModel.load(tmp_path / "movie.cortexloop", device="cpu").voxel_indices_
    kept = np.isin(offered, fitted)
    true_ceiling = subject.noise_ceiling[chosen]
    print(f"kept {kept.sum()} of {len(kept)} voxels: true noise ceiling {true_ceiling[kept].mean():.1f} % "
          f"against {true_ceiling[~kept].mean():.1f} % for those left out")  # fmt: skip
    assert 0 < kept.sum() < len(kept)
    assert true_ceiling[kept].mean() > true_ceiling[~kept].mean() + 5

    # Scored again from the file: each ROI's measured mean is the three showings' average, TR by TR.
    scored = cortexloop(
        "model", "timeseries", "score", tmp_path / "movie.cortexloop", runs, "--out", tmp_path / "s"
    )
    assert scored.returncode == 0, scored.stderr
    assert f"{TEST_TRS} TRs of 1 stimulus" in scored.stdout
    lines = [line.split("\t") for line in (tmp_path / "s" / "timeseries.tsv").read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    assert len(rows) == TEST_TRS
    assert {row[3] for row in rows} == {str(TEST_REPEATS)}
    showings = [np.load(runs.parent / f"run-{TRAIN_RUNS + k}_bold.npz") for k in range(1, TEST_REPEATS + 1)]
    v1 = np.isin(showings[0]["voxel_indices"], fitted) & (showings[0]["roi_labels"] == "V1")
    expected = np.mean([s["responses"][:, v1].mean(axis=1) for s in showings], axis=0)
    np.testing.assert_allclose([float(row[header.index("V1_measured")]) for row in rows], expected, rtol=1e-4)
    assert (tmp_path / "s" / "timeseries.png").stat().st_size > 10_000


def test_a_wrong_run_table_or_threshold_is_one_line_that_says_what_to_do(
    cortexloop: Cli, movies: tuple[Path, VirtualSubject, npt.NDArray[np.bool_]], tmp_path: Path
) -> None:
    runs, _, _ = movies
    none = cortexloop(
        "model", "timeseries", "fit", runs, "--tr", "2", "--min-ceiling", "99.99", "--out", tmp_path / "x"
    )
    assert none.returncode == 1
    assert "lower --min-ceiling" in none.stderr
    broken = runs.with_name("broken_runs.tsv")  # beside the frames, which the events name
    broken.write_text(runs.read_text().replace("run-2_events.tsv", "bad_events.tsv"))
    events = (runs.parent / "run-2_events.tsv").read_text()
    runs.with_name("bad_events.tsv").write_text(events.replace("\n4\t", "\nsoon\t", 1))
    bad = cortexloop("model", "timeseries", "fit", broken, "--tr", "2", "--out", tmp_path / "y")
    assert bad.returncode == 1
    assert "line 4 of" in bad.stderr
    assert "bad_events.tsv" in bad.stderr
    assert "must be numbers" in bad.stderr
    assert not (tmp_path / "y").exists()
