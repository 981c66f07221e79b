"""`cortexloop model ...` as an operator uses it: fit from files, inspect, score, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stimulus import EncodingModel, natural_crops

# The `cortexloop` fixture (tests/loop/conftest.py) runs the command in its own process.
Cli = Callable[..., subprocess.CompletedProcess[str]]

N_IMAGES, N_VOXELS = 60, 12


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stimulus table of 60 PNGs in 5 runs and responses that follow the images' brightness."""
    folder = tmp_path_factory.mktemp("training")
    images = natural_crops(N_IMAGES, size=64, seed=11)
    (folder / "images").mkdir()
    lines = ["image\tgroup\tstimulus"]
    for i, image in enumerate(images):
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            folder / "images" / f"{i:03d}.png"
        )
        lines.append(f"images/{i:03d}.png\trun-{i // 12 + 1}\tnat{i:03d}")
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(2)
    brightness = images.mean(axis=(1, 2, 3))
    responses = brightness[:, None] * rng.uniform(2, 4, N_VOXELS) + 0.05 * rng.standard_normal(
        (N_IMAGES, N_VOXELS)
    )
    np.savez(
        folder / "responses.npz",
        responses=responses,
        roi_labels=np.array(["V1"] * 6 + ["V4"] * 6),
        voxel_indices=np.arange(N_VOXELS) * 7,
    )
    return folder


@pytest.fixture(scope="module")
def fitted(cortexloop: Cli, training: Path) -> tuple[Path, dict[str, object]]:
    out = training / "model.cortexloop"
    result = cortexloop(
        "model", "fit", training / "train.tsv", training / "responses.npz", "--out", out,
        "--image-size", "64", "--permutations", "200", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


def test_fit_writes_a_model_that_predicts_and_says_so(fitted: tuple[Path, dict[str, object]]) -> None:
    path, summary = fitted
    assert summary["n_voxels"] == N_VOXELS
    assert summary["n_training_images"] == N_IMAGES
    assert summary["median_cv_r"] > 0.8  # type: ignore[operator]
    assert summary["n_selected"] == N_VOXELS
    model = EncodingModel.load(path, expected_sha256=str(summary["sha256"]))
    assert model.roi_labels_.tolist() == ["V1"] * 6 + ["V4"] * 6
    assert model.voxel_indices_.tolist() == [7 * i for i in range(N_VOXELS)]


def test_info_reads_the_file_without_the_backbone(
    cortexloop: Cli, fitted: tuple[Path, dict[str, object]]
) -> None:
    path, summary = fitted
    result = cortexloop("model", "info", path, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["sha256"] == summary["sha256"]
    assert list(info["layers"]) == ["_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15", "_fc"]
    assert info["n_features"] == sum(info["features_per_layer"])
    text = cortexloop("model", "info", path).stdout
    assert "_blocks.2" in text
    assert "864 features" in text


def test_score_on_repeats_reports_the_noise_ceiling(
    cortexloop: Cli, training: Path, fitted: tuple[Path, dict[str, object]]
) -> None:
    path, _ = fitted
    table = (training / "train.tsv").read_text().splitlines()
    rows = table[1:25]
    (training / "repeats.tsv").write_text("\n".join([table[0], *rows, *rows]) + "\n")
    measured = np.load(training / "responses.npz")["responses"][:24]
    rng = np.random.default_rng(4)
    np.save(
        training / "repeats.npy", np.concatenate([measured, measured]) + 0.01 * rng.standard_normal((48, 12))
    )
    result = cortexloop("model", "score", path, training / "repeats.tsv", training / "repeats.npy", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert scores["n_stimuli"] == 24
    assert scores["noise_ceiling_percent_median"] > 90
    assert scores["rois"]["V1"]["median_r"] > 0.8
    # The dataset's own noise ceiling instead, and paper 003's accuracy over all voxels.
    ceiling = np.linspace(20, 80, 12)
    np.save(training / "ceiling.npy", ceiling)
    given = cortexloop(
        "model", "score", path, training / "repeats.tsv", training / "repeats.npy",
        "--noise-ceiling", training / "ceiling.npy", "--json",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    said = json.loads(given.stdout)
    assert said["noise_ceiling_percent_median"] == pytest.approx(np.median(ceiling))
    model = EncodingModel.load(path)
    table_rows = [line.split("\t")[0] for line in (training / "repeats.tsv").read_text().splitlines()[1:25]]
    r = model.score([training / name for name in table_rows], measured).r
    assert said["normalized_accuracy_all_voxels"] == pytest.approx(
        np.median(100 * r**2 / (ceiling / 100)), rel=1e-3
    )
    wrong = cortexloop(
        "model", "score", path, training / "repeats.tsv", training / "repeats.npy",
        "--noise-ceiling", training / "repeats.npy",
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "has shape (48, 12); give one value per voxel" in wrong.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("short", r"responses in .* have 59 rows but the stimulus table has 60"),
        ("nan", r"NaN .*first: column 3"),
        ("layer", r"no layer named '_block.4'; did you mean _blocks.4"),
        ("folds", r"5 groups .* too few for 8 folds"),
        ("missing", r"1 image\(s\) listed in .* do not exist"),
        ("fdr", r"fdr_q must be between 0 and 1, not 2"),
    ],
)
def test_unusable_input_is_one_line_saying_what_to_change(
    cortexloop: Cli, training: Path, tmp_path: Path, change: str, message: str
) -> None:
    table, responses = training / "train.tsv", training / "responses.npz"
    extra: list[str] = []
    values = np.load(responses)["responses"]
    if change == "short":
        np.save(tmp_path / "r.npy", values[:59])
        responses = tmp_path / "r.npy"
    elif change == "nan":
        values = values.copy()
        values[10, 3] = np.nan
        np.save(tmp_path / "r.npy", values)
        responses = tmp_path / "r.npy"
    elif change == "layer":
        extra = ["--layer", "_block.4"]
    elif change == "folds":
        extra = ["--folds", "8"]
    elif change == "fdr":
        extra = ["--fdr-q", "2"]
    elif change == "missing":
        lines = table.read_text().splitlines()
        lines[5] = lines[5].replace(".png", ".jpg")
        table = training / "broken.tsv"
        table.write_text("\n".join(lines) + "\n")
    result = cortexloop(
        "model", "fit", table, responses, "--out", tmp_path / "m", "--image-size", "64", *extra
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cortexloop: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "m").exists()


def test_predict_gives_each_new_image_the_models_response_per_roi_and_voxel(
    cortexloop: Cli, fitted: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    path, _ = fitted
    images = natural_crops(20, size=64, seed=12)  # images the model never saw
    folder = tmp_path / "lab-set"
    for i, image in enumerate(images):
        category = folder / ("dark" if image.mean() < np.median(images.mean(axis=(1, 2, 3))) else "bright")
        category.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            category / f"{i:02d}.png"
        )
    result = cortexloop("model", "predict", path, folder, "--out", tmp_path / "out" / "pred", "--json")
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    assert said["n_images"] == 20
    rows = [line.split("\t") for line in (tmp_path / "out" / "pred.tsv").read_text().splitlines()]
    assert rows[0] == ["image", "category", "sha256", "V1", "V4"]
    by_name = {row[0]: row for row in rows[1:]}
    assert len(by_name) == 20
    arrays = np.load(tmp_path / "out" / "pred.npz")
    assert arrays["predicted"].shape == (20, N_VOXELS)
    assert arrays["voxel_indices"].tolist() == [7 * i for i in range(N_VOXELS)]
    # What the Python API predicts for the same files, and what the responses it was fitted on follow.
    model = EncodingModel.load(path)
    files = [folder / name for name in arrays["images"]]
    expected = model.predict(files)
    np.testing.assert_allclose(arrays["predicted"], expected, rtol=1e-5, atol=1e-6)
    v1 = np.array([float(by_name[name][3]) for name in arrays["images"]])
    np.testing.assert_allclose(v1, expected[:, :6].mean(axis=1), rtol=1e-4, atol=1e-5)
    brightness = np.array([np.asarray(Image.open(f), dtype=np.float64).mean() for f in files])
    assert np.corrcoef(v1, brightness)[0, 1] > 0.8
    assert {by_name[name][1] for name in by_name} == {"bright", "dark"}
    assert said["highest"]["V1"][0].startswith("bright/")


def test_predict_names_every_unusable_image_and_writes_nothing(
    cortexloop: Cli, fitted: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    Image.new("RGB", (80, 80), (10, 20, 30)).save(folder / "fine.png")
    (folder / "notes.png").write_text("not an image")
    Image.new("RGB", (20, 20)).save(folder / "tiny.png")
    result = cortexloop("model", "predict", fitted[0], folder, "--out", tmp_path / "pred")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert "notes.png cannot be read as an image" in line
    assert "tiny.png is 20x20 pixels" in line
    assert not list(tmp_path.glob("pred*"))


def test_fingerprints_place_early_and_late_tuned_voxels_at_their_layers(
    cortexloop: Cli, tmp_path: Path
) -> None:
    # Voxels tuned to the first layer's features ("early") and to the last layer's ("late"), as paper 001
    # found V1 and the ventral areas: each ROI's fingerprint must peak where its tuning lives.
    from stimulus import EncodingConfig, EncodingModel, extract_features

    images = natural_crops(120, size=64, seed=21)
    layers = extract_features(
        EncodingModel(EncodingConfig(image_size=64)).extractor, images, standardized=False
    )
    rng = np.random.default_rng(5)

    def tuned(features: np.ndarray, n: int) -> np.ndarray:
        x = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)
        signal = x @ rng.standard_normal((x.shape[1], n))
        return signal + 0.3 * signal.std(axis=0) * rng.standard_normal(signal.shape)

    responses = np.hstack([tuned(layers[0], 8), tuned(layers[-1], 8)])
    lines = ["image\tgroup\tstimulus"]
    (tmp_path / "images").mkdir()
    for i, image in enumerate(images):
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            tmp_path / "images" / f"{i:03d}.png"
        )
        lines.append(f"images/{i:03d}.png\trun-{i // 24 + 1}\tnat{i:03d}")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    np.savez(
        tmp_path / "responses.npz", responses=responses, roi_labels=np.array(["early"] * 8 + ["late"] * 8)
    )
    fitted = cortexloop(
        "model", "fit", tmp_path / "train.tsv", tmp_path / "responses.npz",
        "--out", tmp_path / "m.cortexloop", "--image-size", "64", "--permutations", "100",
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    result = cortexloop(
        "model", "fingerprints", tmp_path / "m.cortexloop", "--plot", tmp_path / "prints.png", "--json"
    )
    assert result.returncode == 0, result.stderr
    said = json.loads(result.stdout)
    rois = {row["roi"]: row for row in said["rois"]}
    assert [rois[r]["n_voxels"] for r in ("early", "late")] == [2, 2]  # the best quarter of 8
    assert max(rois["early"]["fingerprint"]) == pytest.approx(1.0)
    early, late = (said["layers"].index(rois[r]["peak_layer"]) for r in ("early", "late"))
    assert early < late, rois
    assert rois["early"]["summary"] < rois["late"]["summary"]
    with Image.open(tmp_path / "prints.png") as plot:
        assert plot.format == "PNG"


def test_maps_put_each_voxels_scores_at_its_place_on_the_sessions_grid(
    cortexloop: Cli, fitted: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    import nibabel as nib

    path, _ = fitted
    affine = np.diag([2.0, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-5, -4, -5]
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 4), dtype=np.float32), affine), tmp_path / "mean_epi.nii.gz")
    result = cortexloop(
        "model", "maps", path, "--reference", tmp_path / "mean_epi.nii.gz", "--out", tmp_path / "maps"
    )
    assert result.returncode == 0, result.stderr
    model = EncodingModel.load(path)
    where = np.unravel_index(model.voxel_indices_, (5, 4, 4))
    for name, expected in [
        ("cv_r", model.cv_r_),
        ("selected", model.selected_),
        ("best_layer", model.best_layer_ + 1),
    ]:
        image = nib.load(tmp_path / "maps" / f"{name}.nii.gz")
        np.testing.assert_allclose(image.affine, affine)
        data = np.asarray(image.dataobj)
        assert data.shape == (5, 4, 4)
        np.testing.assert_allclose(data[where], expected, rtol=1e-6)
        outside = np.ones(data.shape, dtype=bool)
        outside[where] = False
        assert not data[outside].any()  # only the model's voxels carry a value
    roi = np.asarray(nib.load(tmp_path / "maps" / "roi.nii.gz").dataobj)
    assert roi[where].tolist() == [1] * 6 + [2] * 6
    assert (tmp_path / "maps" / "roi.tsv").read_text().splitlines()[1:] == ["1\tV1\t6", "2\tV4\t6"]
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), affine), tmp_path / "small.nii.gz")
    refused = cortexloop(
        "model", "maps", path, "--reference", tmp_path / "small.nii.gz", "--out", tmp_path / "x"
    )
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert "voxel indices reach 77, outside the grid of --reference" in line


def test_saliency_leans_to_the_half_of_the_image_each_roi_reads(cortexloop: Cli, tmp_path: Path) -> None:
    # Images whose halves come from different crops, so the halves vary apart; ROI "left" follows the left
    # half's brightness, ROI "right" the right half's. Each ROI's saliency must weigh its own half more.
    from stimulus import EncodingConfig

    a, b = natural_crops(300, size=64, seed=3), natural_crops(300, size=64, seed=4)
    images = np.concatenate([a[..., :32], b[..., 32:]], axis=3)
    rng = np.random.default_rng(0)
    halves = np.column_stack([images[..., :32].mean(axis=(1, 2, 3)), images[..., 32:].mean(axis=(1, 2, 3))])
    responses = np.repeat(halves, 4, axis=1) * rng.uniform(2, 3, 8) + 0.02 * rng.standard_normal((300, 8))
    model = EncodingModel(
        EncodingConfig(image_size=64, layerwise=False, n_permutations=50, layers=("_blocks.2", "_blocks.4"))
    )
    model.fit(images, responses, roi_labels=["left"] * 4 + ["right"] * 4)
    model.save(tmp_path / "halves.cortexloop")
    shown = np.concatenate(
        [natural_crops(6, size=64, seed=9)[..., :32], natural_crops(6, size=64, seed=10)[..., 32:]], axis=3
    )
    (tmp_path / "shown").mkdir()
    for k, image in enumerate(shown):
        Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            tmp_path / "shown" / f"{k}.png"
        )
    for method in ("smoothgrad", "scorecam"):
        result = cortexloop(
            "model", "saliency", tmp_path / "halves.cortexloop", tmp_path / "shown", "--method", method,
            "--roi", "left", "--roi", "right", "--out", tmp_path / "maps", "--figures", "2", "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        saved = np.load(tmp_path / "maps" / "saliency.npz")
        left, right = saved["maps"]
        assert left.shape == (6, 64, 64)
        np.testing.assert_allclose(left.sum(axis=(1, 2)), 1.0)
        on_the_left = left[..., :32].sum(axis=(1, 2)), right[..., :32].sum(axis=(1, 2))
        print(f"{method}: saliency mass on the left half: left ROI {on_the_left[0].round(2)}, "
              f"right ROI {on_the_left[1].round(2)}")  # fmt: skip
        assert (on_the_left[0] > 0.5).all(), method
        assert (on_the_left[1] < 0.5).all(), method
        # The two ROIs' maps differ: Score-CAM's less, its masks being the layer's coarse channels.
        assert (
            json.loads(result.stdout)["median_symmetric_kl"]["left-right"]
            > {"smoothgrad": 0.1, "scorecam": 0.03}[method]
        )
    assert sorted(p.name for p in (tmp_path / "maps").glob("*.png")) == [
        "saliency_000.png",
        "saliency_001.png",
    ]
