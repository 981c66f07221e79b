"""The encoding model on the embedded backbone: recovery of known tuning, files, gradients, inputs."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from stimulus import (
    BACKBONES,
    BackboneError,
    BackboneMismatchError,
    EncodingConfig,
    EncodingInputError,
    EncodingModel,
    ModelFileError,
    TimeSeriesRun,
    extract_features,
)
from stimulus.scores import pearson_r

N_TRAIN, N_TUNED, N_NOISE = 300, 40, 20
CEILING_R = 0.9  # correlation of a measured response with the true one


def _fast(**changes: object) -> EncodingConfig:
    return replace(EncodingConfig(image_size=64, n_permutations=200), **changes)  # type: ignore[arg-type]


class Subject:
    """Voxels tuned to the 50 leading directions of the backbone's features, plus pure-noise voxels."""

    def __init__(self, model: EncodingModel, train: npt.NDArray[np.float32], seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        raw = np.concatenate(extract_features(model.extractor, train, standardized=False), axis=1)
        self.mean, self.std = raw.mean(axis=0), raw.std(axis=0) + 1e-6
        x = (raw - self.mean) / self.std
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        self.weights = vt[:50].T @ rng.standard_normal((50, N_TUNED))
        self.noise_sd = (x @ self.weights).std(axis=0) * np.sqrt(1 / CEILING_R**2 - 1)
        self.model = model
        self.rng = rng

    def truth(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        raw = np.concatenate(extract_features(self.model.extractor, images, standardized=False), axis=1)
        return ((raw - self.mean) / self.std) @ self.weights

    def measure(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        tuned = self.truth(images) + self.rng.standard_normal((len(images), N_TUNED)) * self.noise_sd
        return np.hstack([tuned, self.rng.standard_normal((len(images), N_NOISE))])


@pytest.fixture(scope="module")
def fitted(crops: npt.NDArray[np.float32]) -> tuple[EncodingModel, Subject]:
    model = EncodingModel(_fast())
    subject = Subject(model, crops[:N_TRAIN])
    responses = subject.measure(crops[:N_TRAIN])
    rois = ["V1"] * 20 + ["FFA"] * 20 + ["noise"] * N_NOISE
    model.fit(crops[:N_TRAIN], responses, groups=np.repeat(np.arange(10), 30), roi_labels=rois)
    return model, subject


def test_a_fit_recovers_known_tuning_up_to_the_noise_ceiling(
    fitted: tuple[EncodingModel, Subject], crops: npt.NDArray[np.float32]
) -> None:
    model, subject = fitted
    held_out = crops[N_TRAIN:]
    measured = subject.measure(held_out)[:, :N_TUNED]
    predicted = model.predict(held_out)[:, :N_TUNED]
    ceiling = pearson_r(measured, subject.truth(held_out))  # the best any model can do here
    achieved = pearson_r(measured, predicted)
    assert np.median(ceiling) == pytest.approx(CEILING_R, abs=0.05)
    assert np.median(achieved / ceiling) > 0.9
    assert np.median(pearson_r(subject.truth(held_out), predicted)) > 0.9
    # The cross-validated estimate stored in the model is an honest guess of held-out accuracy.
    assert abs(np.median(model.cv_r_[:N_TUNED]) - np.median(achieved)) < 0.1


def test_permutation_fdr_keeps_tuned_voxels_and_drops_noise(fitted: tuple[EncodingModel, Subject]) -> None:
    model, _ = fitted
    assert model.selected_[:N_TUNED].all()
    assert model.selected_[N_TUNED:].mean() <= 0.1
    assert set(model.fingerprints()) == {"V1", "FFA"} | (
        {"noise"} if model.selected_[N_TUNED:].any() else set()
    )
    assert model.layer_scores_.shape == (len(model.layers), N_TUNED + N_NOISE)


def test_saved_model_loads_with_the_same_predictions(
    fitted: tuple[EncodingModel, Subject], crops: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    model, _ = fitted
    path = tmp_path / "model.cortexloop"
    digest = model.save(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = EncodingModel.load(path, expected_sha256=digest)
    assert loaded.file_sha256_ == model.file_sha256_ == digest
    np.testing.assert_array_equal(loaded.predict(crops[:8]), model.predict(crops[:8]))
    np.testing.assert_array_equal(loaded.roi_labels_, model.roi_labels_)
    np.testing.assert_array_equal(loaded.alpha_, model.alpha_)
    assert loaded.layers == model.layers
    with pytest.raises(ModelFileError, match="replaced or altered since it was recorded"):
        EncodingModel.load(path, expected_sha256="0" * 64)


def test_damaged_or_forged_model_files_are_refused(
    fitted: tuple[EncodingModel, Subject], tmp_path: Path
) -> None:
    model, _ = fitted
    path = tmp_path / "model.cortexloop"
    model.save(path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.cortexloop"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ModelFileError, match=r"truncated\.cortexloop is truncated or is not a cortexloop model"
    ):
        EncodingModel.load(truncated)

    # Altered coefficients: a byte in the middle of the largest tensor.
    altered = bytearray(data)
    altered[len(data) // 2] ^= 0xFF
    (tmp_path / "altered.cortexloop").write_bytes(bytes(altered))
    with pytest.raises(ModelFileError, match=r"altered\.cortexloop"):
        EncodingModel.load(tmp_path / "altered.cortexloop")

    # A pickle that would run code on load is never unpickled.
    torch.save({"format": "cortexloop.encoding-model", "evil": Path("/")}, tmp_path / "forged.cortexloop")
    with pytest.raises(ModelFileError, match="is not a cortexloop model"):
        EncodingModel.load(tmp_path / "forged.cortexloop")


def test_a_model_on_other_backbone_weights_is_refused(
    fitted: tuple[EncodingModel, Subject], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = fitted
    path = tmp_path / "model.cortexloop"
    model.save(path)
    spec = BACKBONES["efficientnet-lite0"]
    state = torch.load(spec.weights(), map_location="cpu", weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + 0.01  # a retrained head, say
    other = tmp_path / "other-lite0.pth"
    torch.save(state, other)
    monkeypatch.setitem(BACKBONES, "efficientnet-lite0", replace(spec, weights=lambda: other))
    with pytest.raises(
        BackboneMismatchError, match=r"fitted on efficientnet-lite0 weights with sha256 .*other-lite0"
    ):
        EncodingModel.load(path)


def test_the_module_is_differentiable_and_agrees_with_predict(
    fitted: tuple[EncodingModel, Subject], crops: npt.NDArray[np.float32]
) -> None:
    model, _ = fitted
    module = model.module(voxels=[0, 5, 21])
    pixels = torch.from_numpy(crops[:3].copy()).requires_grad_(True)
    predicted = module(pixels)
    np.testing.assert_allclose(
        predicted.detach().numpy(), model.predict(crops[:3])[:, [0, 5, 21]], rtol=1e-4, atol=1e-4
    )
    predicted[:, 0].sum().backward()
    assert pixels.grad is not None
    assert pixels.grad.abs().sum() > 0
    # A small step up the gradient raises the voxel's predicted response: what synthesis relies on.
    stepped = (pixels + 0.01 * pixels.grad / pixels.grad.abs().max()).clamp(0, 1).detach()
    assert (module(stepped)[:, 0] > predicted[:, 0].detach()).all()


def test_scores_with_repeats_report_the_noise_ceiling(
    fitted: tuple[EncodingModel, Subject], crops: npt.NDArray[np.float32]
) -> None:
    model, subject = fitted
    images = crops[N_TRAIN : N_TRAIN + 60]
    trials = np.concatenate([subject.measure(images) for _ in range(3)])
    ids = np.tile(np.arange(60), 3)
    scores = model.score(np.concatenate([images] * 3), trials, stimulus_ids=ids)
    assert scores.n_stimuli == 60
    assert scores.ceiling is not None
    assert scores.normalized is not None
    assert scores.by_roi["V1"]["median_r"] > 0.8
    assert abs(scores.by_roi["noise"]["median_r"]) < 0.2
    # Averages of 3 trials at single-trial r 0.9 with the truth: the ceiling is about 93 % of variance.
    assert np.median(scores.ceiling.percent[:N_TUNED]) == pytest.approx(100 * 0.81 / (0.81 + 0.19 / 3), abs=5)
    assert 70 < scores.by_roi["V1"]["median_normalized_accuracy"] < 115


def test_inputs_the_fit_cannot_use_say_what_to_change(crops: npt.NDArray[np.float32]) -> None:
    model = EncodingModel(_fast(layerwise=False))
    with pytest.raises(EncodingInputError, match=r"there are 20 images but 19 rows of responses"):
        model.fit(crops[:20], np.ones((19, 3)))
    holed = np.ones((20, 3))
    holed[3, 1] = np.nan
    with pytest.raises(EncodingInputError, match=r"NaN .*first: column 1"):
        model.fit(crops[:20], holed)
    with pytest.raises(EncodingInputError, match=r"8 samples are too few for 5 folds"):
        model.fit(crops[:8], np.random.default_rng(0).standard_normal((8, 3)))
    with pytest.raises(BackboneError, match=r"no layer named '_blocks.99'"):
        EncodingModel(_fast(layers=("_blocks.99",))).fit(crops[:20], np.ones((20, 3)))


def test_a_lab_backbone_plugs_in_through_a_factory(
    crops: npt.NDArray[np.float32], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stimulus import backbone_from_factory

    (tmp_path / "labnet.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def tiny():
                return nn.Sequential(
                    nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    import labnet  # type: ignore[import-not-found]

    weights = tmp_path / "labnet.pth"
    torch.save(labnet.tiny().state_dict(), weights)
    spec = backbone_from_factory("labnet:tiny", weights, default_layers=("1", "3", "6"))
    model = EncodingModel(_fast(layerwise=False), backbone=spec)
    responses = np.random.default_rng(1).standard_normal((60, 4))
    model.fit(crops[:60], responses)
    path = tmp_path / "lab.cortexloop"
    model.save(path)
    # Loaded in a fresh state: the factory string is enough to rebuild the network.
    loaded = EncodingModel.load(path)
    np.testing.assert_allclose(loaded.predict(crops[:5]), model.predict(crops[:5]), rtol=1e-5)
    moved = tmp_path / "moved.pth"
    shutil.move(weights, moved)
    with pytest.raises(BackboneError, match=r"labnet\.pth, does not exist"):
        EncodingModel.load(path)
    assert EncodingModel.load(path, weights=moved).n_voxels == 4


def test_a_transformers_tokens_are_averaged_over_tokens_into_features(
    crops: npt.NDArray[np.float32], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stimulus import backbone_from_factory

    (tmp_path / "labvit.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Tokens(nn.Module):
                def forward(self, x):
                    return x.flatten(2).transpose(1, 2)  # (n, patches, width)

            def tiny():
                return nn.Sequential(
                    nn.Conv2d(3, 16, 8, stride=8), Tokens(),
                    nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    import labvit  # type: ignore[import-not-found]

    network = labvit.tiny().eval()
    weights = tmp_path / "labvit.pth"
    torch.save(network.state_dict(), weights)
    spec = backbone_from_factory("labvit:tiny", weights, default_layers=("1", "2"))
    model = EncodingModel(_fast(layerwise=False), backbone=spec)
    features = extract_features(model.extractor, crops[:10], standardized=False)
    assert [f.shape for f in features] == [(10, 16), (10, 16)]  # 64 tokens of width 16, averaged
    # The features are the tokens' mean, as the network gives them (its own input normalization first).
    with torch.no_grad():
        tokens = network(model.extractor.prepare(torch.as_tensor(crops[:10])))
    np.testing.assert_allclose(features[1], tokens.mean(dim=1).numpy(), rtol=1e-4, atol=1e-5)
    # And a model on them fits voxels that read the tokens, as any other layer's.
    all_features = extract_features(model.extractor, crops[:60], standardized=False)[1]
    responses = all_features[:, :4] + 0.05 * np.random.default_rng(2).standard_normal((60, 4))
    model.fit(crops[:60], responses)
    assert np.median(model.cv_r_) > 0.8


def test_a_time_series_model_learns_the_haemodynamic_lag(crops: npt.NDArray[np.float32]) -> None:
    tr_s, n_trs = 2.0, 40
    model = EncodingModel(_fast(layers=("_blocks.4", "_fc"), layerwise=False, n_splits=3))
    rng = np.random.default_rng(5)
    per_image = None
    runs = []
    for k in range(4):
        frames = crops[k * 80 : (k + 1) * 80]  # two frames per TR
        onsets = np.arange(80) * 1.0
        if per_image is None:
            raw = np.concatenate(extract_features(model.extractor, crops[:320], standardized=False), axis=1)
            mean, std = raw.mean(axis=0), raw.std(axis=0) + 1e-6
            _, _, vt = np.linalg.svd((raw - mean) / std, full_matrices=False)
            weights = vt[:20].T @ rng.standard_normal((20, 5))
            per_image = ((raw - mean) / std) @ weights
        drive = per_image[k * 80 : (k + 1) * 80].reshape(n_trs, 2, 5).mean(axis=1)
        bold = np.zeros((n_trs, 5))
        bold[3:] = drive[:-3]  # the response appears 6 s (3 TRs) after the frames
        runs.append(TimeSeriesRun(frames, onsets, bold + 0.3 * bold.std() * rng.standard_normal(bold.shape)))
    model.fit_timeseries(runs[:3], tr_s=tr_s, lags_s=(4.0, 6.0, 8.0))
    predicted = model.predict_timeseries(TimeSeriesRun(runs[3].images, runs[3].onsets_s, n_trs=n_trs))
    assert np.median(pearson_r(runs[3].responses, predicted)) > 0.7  # type: ignore[arg-type]
    # Most of the weight sits on the 6 s copy of the features.
    widths = model.extractor.out_features
    norms = np.zeros(3)
    start = 0
    for width in widths:
        block = model.coef_[start : start + 3 * width].reshape(3, width, -1)
        norms += np.linalg.norm(block, axis=(1, 2)) ** 2
        start += 3 * width
    assert norms.argmax() == 1
