"""`cortexloop synth` and `cortexloop decode` as an operator uses them."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stimulus import EncodingConfig, EncodingModel, natural_crops

# The `cortexloop` fixture (tests/loop/conftest.py) runs the command in its own process.
Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model of two ROIs: 'bright' follows luminance, 'red' the red channel."""
    folder = tmp_path_factory.mktemp("model")
    images = natural_crops(60, size=64, seed=5)
    rng = np.random.default_rng(1)
    bright = images.mean(axis=(1, 2, 3))
    red = images[:, 0].mean(axis=(1, 2)) - images[:, 1:].mean(axis=(1, 2, 3))
    responses = np.hstack([np.outer(bright, rng.uniform(1, 2, 5)), np.outer(red, rng.uniform(1, 2, 5))])
    responses += 0.02 * rng.standard_normal(responses.shape)
    model = EncodingModel(EncodingConfig(image_size=64, layerwise=False, n_permutations=100))
    model.fit(images, responses, roi_labels=["bright"] * 5 + ["red"] * 5)
    model.save(folder / "model.cortexloop")
    np.save(folder / "responses.npy", responses[:3])
    lines = ["image"]
    for k in range(3):
        Image.fromarray((images[k].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(
            folder / f"{k}.png"
        )
        lines.append(f"{k}.png")
    (folder / "shown.tsv").write_text("\n".join(lines) + "\n")
    return folder / "model.cortexloop"


def test_synth_writes_pngs_with_a_manifest(cortexloop: Cli, model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "round1"
    result = cortexloop(
        "synth", model_file, "--roi", "bright", "--roi", "red", "--images", "2", "--steps", "24",
        "--display-size", "128", "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [i["file"] for i in summary["images"]] == [
        "bright_00.png",
        "bright_01.png",
        "red_00.png",
        "red_01.png",
    ]
    lines = [json.loads(line) for line in (out / "synthesis.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [i["file"] for i in summary["images"]]
    for line in lines:
        with Image.open(out / line["file"]) as image:
            assert image.size == (128, 128)
            metadata = json.loads(image.text["cortexloop"])  # type: ignore[attr-defined]
        assert metadata["target"] == line["target"]
        assert metadata["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    red = np.asarray(Image.open(out / "red_00.png"), dtype=float)
    bright = np.asarray(Image.open(out / "bright_00.png"), dtype=float)
    # What the model learned shows: the red image is redder, the bright one brighter.
    assert red[..., 0].mean() - red[..., 1:].mean() > bright[..., 0].mean() - bright[..., 1:].mean()
    assert bright.mean() > red.mean()


def test_synth_refuses_an_unknown_roi_before_any_work(
    cortexloop: Cli, model_file: Path, tmp_path: Path
) -> None:
    result = cortexloop("synth", model_file, "--roi", "FFA", "--out", tmp_path / "x")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "cortexloop: error: the model has no ROI named 'FFA'; its ROIs are bright, red"
    )
    assert not (tmp_path / "x").exists()


def test_decode_writes_images_and_scores_them_against_the_shown(
    cortexloop: Cli, model_file: Path, tmp_path: Path
) -> None:
    folder = model_file.parent
    result = cortexloop(
        "decode", model_file, folder / "responses.npy", "--shown", folder / "shown.tsv", "--steps", "20",
        "--all-voxels", "--out", tmp_path / "decoded", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == ["decoded_000.png", "decoded_001.png", "decoded_002.png"]
    assert len(summary["ssim"]) == 3
    found = summary["identification"]  # among the three shown images
    assert found["ways"] == 3
    assert found["chance"] == pytest.approx(1 / 3)
    assert 0 < found["p_value"] <= 1
    for name in summary["files"]:
        with Image.open(tmp_path / "decoded" / name) as image:
            assert image.size == (64, 64)  # the model's input size
    assert json.loads((tmp_path / "decoded" / "decoding.json").read_text())["files"] == summary["files"]
