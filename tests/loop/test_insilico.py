"""In-silico experiments through a model fitted on the virtual subject: retinotopy and category contrasts.

The virtual subject's pRF centres and ROI labels are the ground truth; only the tests read them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from loop.simulation.subject import ROI_NAMES, VirtualSubject
from stimulus import EncodingConfig, EncodingModel
from stimulus.insilico import sine_cosine_fit
from stimulus.natural import natural_image_set

from .conftest import Seen

Cli = Callable[..., subprocess.CompletedProcess[str]]
N_IMAGES, REPEATS = 1000, 2  # a few hours of a lab's data, each image's two trials averaged


def fisher_lee(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """Fisher and Lee's (1983) circular correlation, which needs no mean direction (V1 spans both sides)."""
    da, db = np.sin(a[:, None] - a[None, :]), np.sin(b[:, None] - b[None, :])
    return float((da * db).sum() / np.sqrt((da**2).sum() * (db**2).sum()))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, seen: Seen) -> tuple[Path, Path, VirtualSubject]:
    """A model of every ROI voxel of the subject, fitted on noisy measured responses; its file, the atlas."""
    folder = tmp_path_factory.mktemp("insilico")
    subject, images, truth = seen.subject, seen.images, seen.truth
    assert len(images) == N_IMAGES
    ceiling = subject.noise_ceiling  # single-trial, percent
    noise_sd = subject.signal_sd / np.sqrt(ceiling / (100 - ceiling)) / np.sqrt(REPEATS)
    measured = truth + np.random.default_rng(0).standard_normal(truth.shape) * noise_sd
    config = EncodingConfig(image_size=96, layerwise=False, n_permutations=50)
    model = EncodingModel(replace(config, reduction=replace(config.reduction, budget=2000)))
    flat = np.ravel_multi_index(tuple(subject.tuning.coords.T), subject.labels.shape)
    model.fit(images, measured, roi_labels=[ROI_NAMES[r] for r in subject.tuning.roi], voxel_indices=flat)
    model.save(folder / "subject.cortexloop")
    atlas, _ = subject.write_atlas(folder / "atlas")
    return folder / "subject.cortexloop", atlas, subject


@pytest.mark.timeout(400)  # the fixture's fit included
def test_retinotopy_through_the_model_recovers_v1s_polar_angles_and_eccentricities(
    cortexloop: Cli, fitted: tuple[Path, Path, VirtualSubject], tmp_path: Path
) -> None:
    model_file, atlas, subject = fitted
    result = cortexloop(
        "insilico", "retinotopy", model_file, "--reference", atlas, "--out", tmp_path / "maps", "--json"
    )
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "maps" / "retinotopy.tsv").read_text().splitlines()[1:]
    rows = [line.split("\t") for line in lines if line.split("\t")[1] == "V1"]
    prf = subject.tuning.prf[subject.roi_voxels("V1")]  # the model's voxels are the subject's, in order
    angle = np.radians([float(row[2]) for row in rows])
    eccentricity = np.array([float(row[3]) for row in rows])
    cv_r = np.array([float(row[6]) for row in rows])
    well = cv_r >= np.median(cv_r)  # the voxels the model predicts well
    true_angle, true_eccentricity = np.arctan2(prf[:, 1], prf[:, 0]), np.hypot(prf[:, 0], prf[:, 1])
    circular = fisher_lee(angle[well], true_angle[well])
    print(f"V1 polar angle, circular r {circular:.3f} on {well.sum()} voxels")
    assert circular > 0.8
    assert np.corrcoef(eccentricity[well], true_eccentricity[well])[0, 1] > 0.8
    # The same angles, placed on the session's grid.
    volume = np.asarray(nib.load(tmp_path / "maps" / "polar_angle.nii.gz").dataobj)
    where = np.unravel_index([int(row[0]) for row in rows], volume.shape)
    np.testing.assert_allclose(volume[where], np.degrees(angle), atol=0.01)
    summary = json.loads(result.stdout)["rois"]["V1"]
    assert summary["n_voxels"] == len(rows)
    assert summary["angle_resultant_length"] < 0.5  # V1 covers the visual field, not one direction of it


def _precision_recall(folder: Path, area: npt.NDArray[np.bool_]) -> tuple[float, float]:
    rows = [line.split("\t") for line in (folder / "contrast.tsv").read_text().splitlines()[1:]]
    found = np.array([float(row[2]) for row in rows]) > 3.0
    return float((found & area).sum() / found.sum()), float((found & area).sum() / area.sum())


@pytest.mark.timeout(400)  # the fixture's fit included
def test_face_and_place_localizers_through_the_model_find_the_subjects_face_and_place_areas(
    cortexloop: Cli, fitted: tuple[Path, Path, VirtualSubject], tmp_path: Path
) -> None:
    model_file, atlas, subject = fitted
    shown = natural_image_set(200, size=128, seed=78)  # images the model was not fitted on
    for k, (pixels, category) in enumerate(zip(shown.pixels, shown.categories, strict=True)):
        (tmp_path / "localizer" / category).mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8))
        image.save(tmp_path / "localizer" / category / f"{k:03d}.png")
    # Places: scenes above every other category of the set.
    places = cortexloop(
        "insilico", "contrast", model_file, tmp_path / "localizer", "--a", "scene",
        "--out", tmp_path / "places", "--reference", atlas, "--json",
    )  # fmt: skip
    assert places.returncode == 0, places.stderr
    said = json.loads(places.stdout)
    assert said["contrast"] == "scene > animal & face & object & texture"  # every other category
    place_area = subject.tuning.roi == ROI_NAMES.index("PPA")
    precision, recall = _precision_recall(tmp_path / "places", place_area)
    print(f"scenes above every other category, t > 3: PPA precision {precision:.2f}, recall {recall:.2f}")
    assert precision > 0.7
    assert recall > 0.7
    assert said["rois"]["PPA"]["above"] == round(recall * place_area.sum())
    # Faces: above places, objects and textures, as a face localizer contrasts them. Not above animals:
    # this subject's face area answers animals too (docs/encoding.md), as a fusiform face area answers
    # animal faces.
    faces = cortexloop(
        "insilico", "contrast", model_file, tmp_path / "localizer", "--a", "face",
        "--b", "scene", "--b", "object", "--b", "texture", "--out", tmp_path / "faces", "--json",
    )  # fmt: skip
    assert faces.returncode == 0, faces.stderr
    face_area = subject.tuning.roi == ROI_NAMES.index("FFA")
    precision, recall = _precision_recall(tmp_path / "faces", face_area)
    print(
        f"faces above scenes, objects and textures, t > 3: FFA precision {precision:.2f}, recall {recall:.2f}"
    )
    assert precision > 0.7
    assert recall > 0.7


def test_the_sine_cosine_fit_finds_a_known_preferred_phase() -> None:
    phase = np.arange(16) * 2 * np.pi / 16
    preferred = np.array([0.3, -2.0, 2.9])
    responses = 1.0 + 0.5 * np.cos(phase[:, None] - preferred[None, :])
    found, amplitude = sine_cosine_fit(responses, phase)
    np.testing.assert_allclose(found, preferred, atol=1e-9)
    np.testing.assert_allclose(amplitude, 0.5)
