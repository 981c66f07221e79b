"""Feature extraction: the layers asked for, reduced as the papers describe, differentiable."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy.ndimage import gaussian_filter

from stimulus import Backbone, BackboneError, FeatureExtractor, ReductionConfig, extract_features
from stimulus.features import LayerReduction


def test_default_layers_pool_to_about_the_budget(lite0: Backbone) -> None:
    extractor = FeatureExtractor(lite0, lite0.spec.default_layers, 128, ReductionConfig(budget=1000))
    assert extractor.layer_shapes["_blocks.2"] == (24, 32, 32)
    assert extractor.layer_shapes["_fc"] == (1000,)
    # s = round(sqrt(budget / channels)): 24 channels -> 6 x 6, 320 channels -> 2 x 2
    assert extractor.out_features == (24 * 36, 40 * 25, 112 * 9, 320 * 4, 1000)


def test_pooling_is_adaptive_average_pooling(rng: np.random.Generator) -> None:
    reduction = LayerReduction((3, 12, 12), ReductionConfig(budget=48, standardize=False))
    x = torch.from_numpy(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    out = reduction(x).numpy().reshape(2, 3, 4, 4)
    # 48 / 3 channels -> 4 x 4 cells of 3 x 3 pixels each
    expected = x.numpy().reshape(2, 3, 4, 3, 4, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_smoothing_matches_scipy_and_subsamples_by_d(rng: np.random.Generator) -> None:
    channels, side = 4, 32
    reduction = LayerReduction((channels, side, side), ReductionConfig(method="smooth", budget=400))
    # the smallest d with 4 * ceil(32 / d)^2 <= 400 is 4 (8 x 8 = 64 per channel)
    assert reduction.step == 4
    assert reduction.out_features == channels * 64
    x = rng.standard_normal((1, channels, side, side)).astype(np.float32)
    out = reduction.reduce(torch.from_numpy(x)).numpy().reshape(channels, 8, 8)
    smoothed = np.stack([gaussian_filter(c, sigma=0.35 * 4, mode="nearest", truncate=3.0) for c in x[0]])
    top = (side - 1 - 7 * 4) // 2
    np.testing.assert_allclose(out, smoothed[:, top::4, top::4][:, :8, :8], rtol=1e-4, atol=1e-5)


def test_log_compression_is_log1p_on_non_negative_activations() -> None:
    reduction = LayerReduction((5,), ReductionConfig(log=True, standardize=False))
    x = torch.tensor([[0.0, 1.0, 10.0, -3.0, 100.0]])
    np.testing.assert_allclose(reduction(x).numpy()[0, :3], np.log1p([0.0, 1.0, 10.0]), rtol=1e-6)
    assert reduction(x).numpy()[0, 3] == pytest.approx(-np.log1p(3.0))


def test_features_are_standardized_on_the_training_images(
    lite0: Backbone, crops: npt.NDArray[np.float32]
) -> None:
    extractor = FeatureExtractor(lite0, ["_blocks.4", "_fc"], 64, ReductionConfig())
    raw = extract_features(extractor, crops[:80], standardized=False)
    for reduction, values in zip(extractor.reductions, raw, strict=True):
        reduction.set_statistics(values.mean(axis=0), values.std(axis=0))
    standardized = extract_features(extractor, crops[:80])
    for values in standardized:
        varying = values.std(axis=0) > 0
        np.testing.assert_allclose(values.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(values.std(axis=0)[varying], 1, rtol=1e-3)


def test_batch_size_does_not_change_features(lite0: Backbone, crops: npt.NDArray[np.float32]) -> None:
    extractor = FeatureExtractor(lite0, ["_blocks.2", "_blocks.10"], 64, ReductionConfig())
    one = extract_features(extractor, crops[:10], batch_size=10)
    three = extract_features(extractor, crops[:10], batch_size=3)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_stopping_after_the_last_layer_changes_nothing(
    lite0: Backbone, crops: npt.NDArray[np.float32]
) -> None:
    early = FeatureExtractor(lite0, ["_blocks.4"], 64, ReductionConfig(standardize=False))
    late = FeatureExtractor(lite0, ["_blocks.4", "_fc"], 64, ReductionConfig(standardize=False))
    np.testing.assert_array_equal(extract_features(early, crops[:4])[0], extract_features(late, crops[:4])[0])


def test_gradients_reach_the_pixels(lite0: Backbone) -> None:
    extractor = FeatureExtractor(lite0, ["_blocks.4", "_fc"], 64, ReductionConfig())
    pixels = torch.rand(2, 3, 96, 96, requires_grad=True)  # resized to 64 inside, differentiably
    sum(f.square().sum() for f in extractor(pixels)).backward()
    assert pixels.grad is not None
    assert torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0


def test_unknown_layer_names_the_layer_and_suggests(lite0: Backbone) -> None:
    with pytest.raises(BackboneError, match=r"no layer named '_block.4'.*did you mean _blocks\.4"):
        FeatureExtractor(lite0, ["_block.4"], 64, ReductionConfig())


def test_a_module_that_runs_twice_is_refused(lite0: Backbone) -> None:
    # EfficientNet's activation module is shared by the stem and the head.
    with pytest.raises(BackboneError, match=r"_swish.*more than once"):
        FeatureExtractor(lite0, ["_swish"], 64, ReductionConfig())
