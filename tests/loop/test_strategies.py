"""What a strategy does with the measurements: the adaptive strategy on a hand-made round."""

from __future__ import annotations

import numpy as np
import pytest

from loop.config import SynthesisSettings
from loop.evidence import Showing
from loop.plans import PlannedStimulus, save_png
from loop.strategies import STRATEGIES, RoundContext
from stimulus import EncodingConfig, EncodingModel, natural_crops

ROIS = ["V1", "PPA"]
N_IMAGES, BEST_PLACE = 40, 7


@pytest.fixture(scope="module")
def round_two(tmp_path_factory: pytest.TempPathFactory) -> RoundContext:
    """Round 2 of a session whose model sees V1 but is blind to PPA, where one natural image drove PPA hard.

    The training run showed 40 natural images (the first 10 three times); PPA answered image 7 at
    five times the others, which the model cannot know. In round 1 (run 2) V1's images beat V1's
    best natural control; PPA's lost to image 7.
    """
    folder = tmp_path_factory.mktemp("stimuli")
    rng = np.random.default_rng(0)
    pixels = natural_crops(N_IMAGES, size=64, seed=3)
    model = EncodingModel(EncodingConfig(image_size=32, layerwise=False, n_permutations=1, cv="loo"))
    features = model.features(pixels)
    v1 = features[:, :8] @ rng.normal(size=(8, 6))  # six V1 voxels the features predict
    ppa = np.ones((N_IMAGES, 6))  # six PPA voxels, measured: image 7 drives them five times as hard
    ppa[BEST_PLACE] = 5.0
    # The model was fitted where PPA showed only noise (a model from before, or one whose penalty
    # flattened a lone strong image away): it knows nothing of image 7.
    model.fit(pixels, np.hstack([v1, 1 + rng.normal(0, 0.3, ppa.shape)]), roi_labels=["V1"] * 6 + ["PPA"] * 6)
    natural = [
        PlannedStimulus(*save_png(p, folder, f"natural/nat_{k:03d}.png"), "natural")
        for k, p in enumerate(pixels)
    ]
    showings = []
    for k, stimulus in enumerate(natural):
        for _ in range(3 if k < 10 else 1):
            truth = np.array([v1[k].mean(), ppa[k].mean()])
            showings.append(Showing(stimulus, 1, truth + rng.normal(0, 0.2, 2)))
    # Round 1 (run 2): each target's image and its best natural control, twice each, in the target's column.
    best_v1 = natural[int(np.argmax(v1.mean(1)))]
    for target, control, own_value, control_value in (
        ("V1", best_v1, 9.0, 2.0),  # V1's image beat its control
        ("PPA", natural[BEST_PLACE], 1.0, 5.0),  # PPA's lost to image 7
    ):
        made = save_png(pixels[0], folder, f"round01/{target}_00.png")
        for stimulus, value in (
            (PlannedStimulus(*made, "synthesized", target), own_value),
            (PlannedStimulus(control.path, control.sha256, "best_natural", target), control_value),
        ):
            responses = np.zeros(len(ROIS))
            responses[ROIS.index(target)] = value
            showings += [Showing(stimulus, 2, responses)] * 2
    settings = SynthesisSettings(
        strategy="adaptive",
        candidates=8,
        later_candidates=0,
        steps=2,
        later_steps=2,
        display_size=64,
        trust_radius=0.2,
    )
    return RoundContext(
        index=2, targets=ROIS, model=model, showings=showings, roi_names=ROIS, stimuli=folder, origins={},
        settings=settings, images_per_target=2, seed=1,
    )  # fmt: skip


def test_the_image_measured_best_starts_the_target_its_model_cannot_see(round_two: RoundContext) -> None:
    made = STRATEGIES["adaptive"].make(round_two)
    place = [image for image in made if image.target == "PPA"]
    assert place[0].start_source == f"natural/nat_{BEST_PLACE:03d}.png"
    assert place[0].parameters["start_score"] > 3  # weighed by its measurements, not the model's flat guess


def test_each_targets_trust_region_follows_how_its_last_round_measured(round_two: RoundContext) -> None:
    made = STRATEGIES["adaptive"].make(round_two)
    radius = {image.target: image.parameters["trust_radius"] for image in made}
    assert radius == pytest.approx({"V1": 0.3, "PPA": 0.1})  # V1 beat its control (x1.5), PPA lost (x0.5)
    assert all(image.moved is not None and image.moved <= radius[image.target] + 1e-3 for image in made)


def test_a_later_round_takes_the_later_steps_and_learning_rate(round_two: RoundContext) -> None:
    assert round_two.later
    made = STRATEGIES["adaptive"].make(round_two)
    assert {image.parameters["steps"] for image in made} == {round_two.settings.later_steps}
    assert {image.parameters["lr"] for image in made} == {round_two.settings.later_learning_rate}


def test_the_shown_images_are_averaged_over_their_showings(round_two: RoundContext) -> None:
    shown = dict((stimulus.path, values) for stimulus, values in round_two.shown)
    assert len(shown) == N_IMAGES + 2  # the training run's images and the two of round 1
    repeats = [s.responses for s in round_two.showings if s.stimulus.path == "natural/nat_000.png"]
    np.testing.assert_allclose(shown["natural/nat_000.png"], np.mean(repeats, axis=0))


def test_a_lab_s_own_images_are_the_fresh_candidates_when_it_brought_them(
    round_two: RoundContext, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import dataclasses

    from loop.strategies import _screen_fresh

    folder = tmp_path_factory.mktemp("lab")
    pool = tuple(
        folder / save_png(p, folder, f"{k}.png")[0] for k, p in enumerate(natural_crops(5, size=80, seed=8))
    )

    class Offered:
        def __init__(self) -> None:
            self.names: list[str] = []
            self.shapes: list[tuple[int, ...]] = []

        def consider(self, pixels: np.ndarray, names: list[str]) -> None:
            self.names += names
            self.shapes.append(pixels.shape)

    first_round = dataclasses.replace(round_two, showings=[s for s in round_two.showings if s.run == 1])
    for candidates, expected in ((8, 5), (3, 3)):  # all five when fewer than asked; else a draw of them
        settings = dataclasses.replace(first_round.settings, candidates=candidates)
        offered = Offered()
        _screen_fresh(offered, dataclasses.replace(first_round, pool=pool, settings=settings))  # type: ignore[arg-type]
        assert len(offered.names) == expected
        assert {name.removeprefix("lab image ") for name in offered.names} <= {str(p) for p in pool}
        assert offered.shapes[0][1:] == (3, 64, 64)  # at display size
    built_in = Offered()
    _screen_fresh(built_in, first_round)  # type: ignore[arg-type]
    assert built_in.names[0].startswith("natural candidate")
