"""Decoding by encoder inversion: the responses to an image lead back towards that image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from skimage.metrics import structural_similarity

from stimulus import EncodingInputError, EncodingModel
from stimulus.decoding import DecodingConfig, decode, identify, ssim


def test_ssim_matches_scikit_image(crops: npt.NDArray[np.float32]) -> None:
    a, b = crops[:3], np.clip(crops[:3] + 0.1 * crops[3:6], 0, 1)
    expected = [
        structural_similarity(x, y, channel_axis=0, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0)
        for x, y in zip(a, b, strict=True)
    ]  # fmt: skip
    np.testing.assert_allclose(ssim(a, b), expected, rtol=1e-6)


def test_decoding_the_responses_to_an_image_beats_decoding_shuffled_ones(
    roi_model: EncodingModel, crops: npt.NDArray[np.float32]
) -> None:
    shown = crops[300:312]  # held out from the fit
    responses = roi_model.predict(shown)
    shuffled = responses[np.roll(np.arange(len(shown)), 1)]
    config = DecodingConfig(steps=60)
    matched = decode(roi_model, responses, config, shown=shown)
    mismatched = decode(roi_model, shuffled, config, shown=shown)
    assert matched.loss[-1] < 0.1 * matched.loss[0]
    assert matched.mse is not None
    assert mismatched.mse is not None
    assert matched.ssim is not None
    assert mismatched.ssim is not None
    assert matched.mse.mean() < mismatched.mse.mean()
    assert matched.ssim.mean() > mismatched.ssim.mean()
    # 12-way identification: each decoded image picks out its own shown image well above chance (1/12),
    # and the permutation null sits at chance; decoded from another image's responses, it does not.
    found, missed = matched.identification, mismatched.identification
    assert found is not None
    assert missed is not None
    assert found.ways == 12
    assert found.accuracy >= found.chance + 0.25, found.accuracy
    assert found.pairwise > 0.75, found.pairwise
    assert found.p_value < 0.01
    assert abs(found.null.mean() - found.chance) < 0.02
    assert missed.accuracy <= missed.chance
    assert missed.p_value > 0.2


def test_responses_of_the_wrong_shape_are_refused(roi_model: EncodingModel) -> None:
    with pytest.raises(EncodingInputError, match=r"the model predicts 180 voxels: give \(n, 180\)"):
        decode(roi_model, np.zeros((2, 179)))


def test_identification_counts_the_own_image_among_the_candidates() -> None:
    rng = np.random.default_rng(0)
    candidates = rng.uniform(0, 1, (6, 3, 16, 16)).astype(np.float32)
    decoded = np.clip(candidates[:4] + rng.normal(0, 0.05, (4, 3, 16, 16)), 0, 1)  # near their own
    decoded[3] = 0.6 * candidates[5] + 0.4 * candidates[3]  # the fourth looks more like a distractor
    result = identify(decoded, candidates, permutations=200)
    assert result.ways == 6
    assert result.accuracy == 0.75
    assert result.pairwise == pytest.approx((3 + 4 / 5) / 4)  # the fourth's own beats 4 of its 5 others
    with pytest.raises(EncodingInputError, match="at least 2 candidates"):
        identify(decoded, candidates[:1])
