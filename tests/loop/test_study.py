"""A lab's study: sessions that start from models fitted before them (paper 000, Experiment 3).

Three virtual subjects stand for a lab's earlier participants: each one's
model is fitted offline on its responses to 100 natural images and saved
as a model file, as a lab brings them. A fourth subject is then driven by
their models averaged by ROI, with no training run of its own.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from db import open_database
from loop.acquisition import InProcessAcquisition
from loop.config import SessionConfig
from loop.errors import SessionError
from loop.simulation.subject import ROI_NAMES, SubjectConfig, VirtualSubject
from loop.summary import session_outcome
from stimulus.encoding import EncodingModel
from stimulus.errors import EncodingInputError
from stimulus.natural import natural_image_set
from stimulus.transfer import on_voxels
from tests.loop.conftest import Seen, controller, small_config

pytestmark = pytest.mark.timeout(600)

DONOR_SEEDS = (21, 22, 23)


@dataclass(frozen=True)
class Study:
    donors: list[Path]  # the earlier subjects' model files
    subject: VirtualSubject  # the new participant
    images: npt.NDArray[np.float32]  # natural images the new participant's truth is known for
    truth: npt.NDArray[np.float64]


def labels_of(subject: VirtualSubject) -> list[str]:
    return [ROI_NAMES[r] for r in subject.tuning.roi]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, seen: Seen) -> Study:
    """Three subjects' model files (fitted on 100 images each, with noise); subject 3 is the new one."""
    folder = tmp_path_factory.mktemp("study")
    images = natural_image_set(100, size=128, seed=31).pixels
    encoding = small_config(folder).model.encoding()  # the features the sessions below read
    donors = []
    for seed in DONOR_SEEDS:
        donor = VirtualSubject(SubjectConfig(seed=seed))
        truth = donor.voxel_responses(images)
        # A lab's offline fit: betas averaged over repeats, their noise half the signal's spread.
        measured = truth + np.random.default_rng(seed).normal(0, 0.5, truth.shape) * truth.std(0)
        where = np.ravel_multi_index(tuple(donor.tuning.coords.T), donor.labels.shape)
        model = EncodingModel(encoding).fit(
            images, measured, roi_labels=labels_of(donor), voxel_indices=where
        )
        model.save(folder / f"sub-{seed}.pt")
        donors.append(folder / f"sub-{seed}.pt")
    return Study(donors=donors, subject=seen.subject, images=seen.images[:300], truth=seen.truth[:300])


def test_other_subjects_models_averaged_by_roi_predict_a_new_subject_and_guide_a_short_fit(
    study: Study,
) -> None:
    """The average predicts the new subject's ROIs; 20 of its images fitted towards it beat 20 alone."""
    labels = np.asarray(labels_of(study.subject))
    donors = [EncodingModel.load(path) for path in study.donors]
    average = on_voxels(donors, labels, np.arange(len(labels)))
    test = slice(100, 300)
    rng = np.random.default_rng(5)
    measured = study.truth + rng.normal(0, 1.0, study.truth.shape) * study.truth.std(0)  # single trials
    encoding = donors[0].config

    def fitted(n: int, prior: EncodingModel | None) -> EncodingModel:
        return EncodingModel(encoding).fit(study.images[:n], measured[:n], roi_labels=labels, prior=prior)

    def roi_r(model: EncodingModel) -> dict[str, float]:
        predicted, truth = model.predict(study.images[test]), study.truth[test]
        return {
            roi: float(
                np.corrcoef(predicted[:, labels == roi].mean(1), truth[:, labels == roi].mean(1))[0, 1]
            )
            for roi in ROI_NAMES
        }

    def voxel_r(model: EncodingModel) -> float:
        predicted, truth = model.predict(study.images[test]), study.truth[test]
        return float(
            np.median([np.corrcoef(predicted[:, v], truth[:, v])[0, 1] for v in range(0, len(labels), 5)])
        )

    models = {"average": average, "20 alone": fitted(20, None), "20 towards": fitted(20, average),
              "100 towards": fitted(100, average)}  # fmt: skip
    found = {name: roi_r(model) for name, model in models.items()}
    voxels = {name: voxel_r(model) for name, model in models.items()}
    for name in models:
        print(
            f"{name}: r by ROI",
            {k: round(v, 2) for k, v in found[name].items()},
            f"median voxel r {voxels[name]:.3f}",
        )
    # Other subjects' models carry over, ROI by ROI (PPA least: its voxels mix place categories their way).
    assert np.median(list(found["average"].values())) > 0.75
    assert min(found["average"].values()) > 0.5
    # 20 single trials fitted towards the average keep what it knew: far better than 20 fitted alone.
    assert all(found["20 towards"][roi] > found["20 alone"][roi] - 0.01 for roi in ROI_NAMES)
    assert np.mean(list(found["20 towards"].values())) > np.mean(list(found["20 alone"].values())) + 0.1
    assert voxels["20 towards"] > voxels["20 alone"] + 0.1
    # With more of the subject's own images its voxels become its own: better than the average.
    assert voxels["100 towards"] > voxels["average"] + 0.02
    # One subject's model on its own voxels is used as it is; models that read other features are refused.
    assert on_voxels(donors[:1], donors[0].roi_labels_, donors[0].voxel_indices_) is donors[0]
    other = EncodingModel(dataclasses.replace(encoding, image_size=64)).fit(
        study.images[:20], measured[:20], roi_labels=labels
    )
    with pytest.raises(EncodingInputError, match="model 2 of 2 reads other features"):
        on_voxels([donors[0], other], labels, np.arange(len(labels)))


def test_experiment_3_a_new_subject_with_no_training_run_is_driven_by_other_subjects_models(
    study: Study, tmp_path: Path
) -> None:
    """Paper 000, Experiment 3: group models, no training run; 4 of 5 targets driven above non-targets."""

    def from_the_group(c: SessionConfig) -> SessionConfig:
        return dataclasses.replace(
            c,
            training=dataclasses.replace(c.training, images=0, repeated=0),
            rounds=dataclasses.replace(c.rounds, count=1),
            synthesis=dataclasses.replace(c.synthesis, candidates=500, steps=64),
            model=dataclasses.replace(c.model, start=tuple(str(p) for p in study.donors)),
        )

    session, out = controller(tmp_path, InProcessAcquisition, adjust=from_the_group, subject=study.subject)
    session.run()
    with open_database(out / "db.sqlite") as database, database.reader() as s:
        outcome = session_outcome(s, "sub-01/ses-01")
    for c in outcome.contrasts:
        print(
            f"{c.roi}: its images {c.target_mean:.2f} %, the others' {c.nontarget_mean:.2f} %, "
            f"t {c.t:.2f}, p {c.p:.3f}"
        )
    assert len(outcome.driven) >= 4, outcome.driven
    with sqlite3.connect(out / "db.sqlite") as db:
        runs = [k for (k,) in db.execute('SELECT "index" FROM runs ORDER BY "index"')]
        models = db.execute(
            "SELECT id, parent_id, n_training_stimuli, description, layers FROM encoding_models ORDER BY id"
        ).fetchall()
        round_model = db.execute("SELECT model_version_id FROM rounds").fetchone()[0]
        made_with = {
            m
            for (m,) in db.execute("SELECT DISTINCT model_version_id FROM stimuli WHERE kind = 'synthesized'")
        }
    assert runs == [1]  # no training run: round 1 is the session's first run
    start, refit = models
    assert start[2] == 0
    assert "averaged by ROI over 3 model(s)" in start[3]
    assert [Path(s.split(" (sha256")[0]) for s in json.loads(start[4])["start"]] == study.donors
    assert round_model == start[0]
    assert made_with == {start[0]}
    assert refit[1] == start[0]
    assert refit[2] == 20


def test_a_start_that_cannot_be_used_stops_the_session_before_any_run(study: Study, tmp_path: Path) -> None:
    def starting(*start: str, budget: int = 100) -> Callable[[SessionConfig], SessionConfig]:
        return lambda c: dataclasses.replace(
            c, model=dataclasses.replace(c.model, start=start, budget=budget)
        )

    session, _ = controller(
        tmp_path / "a", InProcessAcquisition, adjust=starting("sub-09/ses-01"), subject=study.subject
    )
    with pytest.raises(
        SessionError, match=r"\[model\] start sub-09/ses-01: no session 'sub-09/ses-01' in this database"
    ):
        session.run()
    wider = starting(str(study.donors[0]), budget=200)  # the session reads other features than the model
    session, out = controller(tmp_path / "b", InProcessAcquisition, adjust=wider, subject=study.subject)
    with pytest.raises(SessionError, match=r"set \[model\] backbone, image_size, budget and reduction"):
        session.run()
    with sqlite3.connect(out / "db.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
