"""The closed-loop controller: a whole session, run after run, recorded as it happens.

A session is a training run and then rounds. The training run shows
natural images; their single-trial responses fit the first encoding model.
Each round then chooses its target ROIs, synthesizes images for them with
the current model, plans a run of those images with controls in a random
order (the best and the median natural image of the training run for each
target; the images made for the other targets are the non-target
controls), acquires it, scores it, and refits the model on everything
measured so far. The next round synthesizes with the refitted model.

Everything is committed to the session database as it happens: each volume
with its ROI signals, each onset, a run's responses together with its end,
a model version as soon as it is fitted, a round's scores together with its
end. What the next step needs and the database does not hold (each run's
voxel responses, the model files, the plans, the images) is written to the
session's output folder first, atomically. So a controller killed at any
point and started again with ``resume=True`` finds where it was:

- completed runs are read back from their response files;
- a run still marked running is picked up: the presenter says whether it is
  still showing it, has finished it (its log is asked for again) or never
  saw it (it is sent again); the bridge serves the run's volumes again from
  index 0, and each is analysed again but recorded only if it was not;
- a model is refitted if the last one does not cover every completed run;
- a round whose run is complete but which has not ended is scored and ended.

In a simulation the virtual subject's ground truth (what each ROI really
did) is read after each run and scored the same way as the measurements.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select

from db import Database, EventLevel, RoiSpec, RunKind, SessionKind, SessionRecorder, StimulusKind
from db.base import ConfigError, Status, VolumeStatus, write_atomic
from db.models import EncodingModelVersion, Event, Presentation, Round, Run, Stimulus, Volume
from loop.acquisition import Acquisition, utc
from loop.analysis.design import Trial
from loop.analysis.realtime import RunAnalyzer, VolumeResult
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.config import SessionConfig
from loop.dataset import TrainingData, single_trial_responses
from loop.errors import AcquisitionError, SessionError
from loop.plans import PlannedStimulus, plan_run, save_png, training_order
from loop.scoring import drive, prediction_accuracy, target_vs_nontarget
from scanner_bridge.volume import Volume as ScannerVolume
from stimulus.images import load_images, resize_pixels
from stimulus.present import RunPlan, TrialRecord

__all__ = ["Controller", "Observer", "RoundSummary", "SessionError", "TargetRow"]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]

TIMING_TOLERANCE_S = 0.25  # an image shown further than this from its planned onset or duration is reported


# --- what the operator sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRow:
    """One target ROI of a round, as the round's table shows it."""

    roi: str
    predicted: float  # mean predicted response to its images (percent signal change)
    measured: float  # mean measured response to its images
    vs_best: float  # measured, relative to the best natural image's (1.0 = as strong)
    natural_range: float  # 0 at the median natural image's response, 1 at the best's
    t: float  # target vs non-target images
    p: float
    true: float | None = None  # the virtual subject's true response (simulation only)


@dataclass(frozen=True)
class RoundSummary:
    index: int
    targets: list[TargetRow]
    accuracy: dict[str, float]  # predicted vs measured, Pearson r per ROI across the round's images
    drive: float  # mean measured response of the target ROIs to their images


class Observer:
    """What the controller tells the operator; subclass to show it (the CLI prints, the console draws)."""

    def message(self, level: str, text: str) -> None:
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)

    def run_started(self, label: str, plan: RunPlan) -> None:
        pass

    def volume(
        self,
        label: str,
        index: int,
        n_volumes: int,
        status: str,
        result: VolumeResult | None,
        latency_ms: float | None = None,
    ) -> None:
        """A volume analysed (``result``) or missing; ``latency_ms`` from its file's writing to now."""

    def run_ended(self, label: str, summary: dict[str, Any]) -> None:
        pass

    def round_ended(self, summary: RoundSummary) -> None:
        pass


# --- the controller --------------------------------------------------------------------------------


@dataclass
class _RunResult:
    number: int
    stimuli: list[PlannedStimulus]  # in the plan's trial order
    roi: Array  # (n_trials, n_rois) measured responses
    voxels: Array  # (n_trials, n_model_voxels)
    truth: Array | None = None  # (n_trials, n_rois), simulation only


@dataclass
class _State:
    """What the session has done so far, rebuilt from the database and the output folder on resume."""

    runs: dict[int, _RunResult] = field(default_factory=dict)  # completed runs by number
    model_id: int | None = None
    model_n: int = 0  # distinct stimuli the current model was fitted on
    rounds_done: int = 0


class Controller:
    """Runs one session of ``config`` against ``acquisition``, recording into ``database``.

    Parameters
    ----------
    config : SessionConfig
    database : Database
        Open, with the schema in place.
    acquisition : Acquisition
        Where runs are acquired (the network, or the virtual subject in this process).
    observer : Observer, optional

    The ROI atlas is the session file's ``[atlas]``; with ``[simulation] truth``,
    the virtual subject's ground truth (``runNN_truth.json``) is scored alongside.
    """

    def __init__(
        self,
        config: SessionConfig,
        database: Database,
        acquisition: Acquisition,
        *,
        observer: Observer | None = None,
        device: str | None = None,
    ) -> None:
        if not (config.atlas.labels and config.atlas.names):
            raise ConfigError(f"{config.source}: [atlas] labels and names are needed to run a session")
        self.config = config
        self.database = database
        self.acquisition = acquisition
        self.truth_dir = config.resolve(config.simulation.truth) if config.simulation.truth else None
        self.observer = observer or Observer()
        self.device = device
        self.out = config.resolve(config.session.output)
        self.stimulus_dir = (
            config.resolve(config.scanner.stimulus_dir)
            if config.scanner.stimulus_dir
            else self.out / "stimuli"
        )
        self.atlas_paths = (config.resolve(config.atlas.labels), config.resolve(config.atlas.names))
        self.atlas = RoiAtlas.load(*self.atlas_paths)
        self.signals = RoiSignals(self.atlas, self.atlas.labelled_voxels())
        self.roi_names = self.signals.roi_names
        flat_labels = self.atlas.labels.ravel()[self.signals.voxel_index]
        self.voxel_rois = [self.atlas.names[int(v)] for v in flat_labels]
        unknown = sorted(set(config.rounds.targets) - set(self.roi_names))
        if unknown:
            raise ConfigError(
                f"{config.source}: [rounds] targets {', '.join(unknown)} are not in the atlas "
                f"({', '.join(self.roi_names)})"
            )
        self.recorder: SessionRecorder | None = None
        self.state = _State()
        self._loaded: tuple[int | None, Any] = (None, None)  # (model version id, the model in memory)

    # -- the session ----------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> None:
        """Run the session to its end (or to where a resumed one left off, then on to its end)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.recorder = self._resume() if resume else self._start()
        try:
            self._training()
            while self.state.rounds_done < self.config.rounds.count:
                self._round(self.state.rounds_done + 1)
        except (AcquisitionError, SessionError) as exc:
            self._event("error", "session.stopped", str(exc))
            raise
        self.recorder.end_session()
        self._event("info", "session.completed", f"session completed: {self.state.rounds_done} round(s)")

    @property
    def _rec(self) -> SessionRecorder:
        assert self.recorder is not None, "run() starts or resumes the session first"
        return self.recorder

    def _start(self) -> SessionRecorder:
        c = self.config
        labels = self.atlas.labels
        rois = [
            RoiSpec(name=name, label_value=index, n_voxels=int((labels == index).sum()))
            for index, name in sorted(self.atlas.names.items())
        ]
        text = Path(c.source).read_text() if Path(c.source).is_file() else None
        recorder = SessionRecorder.start(
            self.database,
            subject=c.session.subject,
            session=c.session.session,
            kind=SessionKind.SIMULATION if c.session.kind == "simulation" else SessionKind.SCANNER,
            rois=rois,
            config_toml=text,
            config_sha256=hashlib.sha256(text.encode()).hexdigest() if text else None,
            atlas_path=str(self.atlas_paths[0]),
            atlas_sha256=hashlib.sha256(self.atlas_paths[0].read_bytes()).hexdigest(),
        )
        self.recorder = recorder
        self._event("info", "session.started", f"session {c.session.subject}/{c.session.session} started")
        return recorder

    def _resume(self) -> SessionRecorder:
        c = self.config
        try:
            recorder = SessionRecorder.resume(self.database, f"{c.session.subject}/{c.session.session}")
        except LookupError as exc:
            raise SessionError(f"nothing to resume: {exc}") from None
        self.recorder = recorder
        with self.database.reader() as s:
            runs = s.execute(
                select(Run.index, Run.status).where(Run.session_id == recorder.session_id).order_by(Run.index)
            ).all()
            rounds_done = s.scalar(
                select(func.count(Round.id)).where(
                    Round.session_id == recorder.session_id, Round.status == Status.COMPLETED
                )
            )
            model = s.execute(
                select(EncodingModelVersion.id, EncodingModelVersion.n_training_stimuli)
                .where(EncodingModelVersion.session_id == recorder.session_id)
                .order_by(EncodingModelVersion.id.desc())
                .limit(1)
            ).first()
        for number, status in runs:
            if status == Status.COMPLETED:
                self.state.runs[number] = self._load_run(number)
        self.state.rounds_done = int(rounds_done or 0)
        if model is not None:
            self.state.model_id, self.state.model_n = model[0], int(model[1] or 0)
        self._event(
            "warning",
            "session.resumed",
            f"session resumed: {len(self.state.runs)} run(s) and {self.state.rounds_done} round(s) complete",
        )
        return recorder

    # -- the training run -------------------------------------------------------------------------

    def _training(self) -> None:
        if 1 not in self.state.runs:
            plan = self._saved_plan(1) or self._training_plan()
            self._acquire(1, plan, kind=RunKind.TRAINING, round_id=None)
        if self.state.model_id is None or self.state.model_n < self._n_distinct():
            self._fit(description="fitted on the training run")

    def _training_plan(self) -> RunPlan:
        """Write and record the natural images, and plan the training run."""
        from stimulus.natural import natural_image_set

        t = self.config.training
        images = natural_image_set(
            t.images, size=self.config.synthesis.display_size, seed=self.config.session.seed
        )
        natural = []
        for k in range(t.images):
            name, sha = save_png(images.pixels[k], self.stimulus_dir, f"natural/nat_{k:03d}.png")
            natural.append(PlannedStimulus(name, sha, "natural"))
            self._rec.record_stimulus(
                sha256=sha,
                path=name,
                kind=StimulusKind.NATURAL,
                width=images.pixels.shape[2],
                height=images.pixels.shape[1],
            )
        order = training_order(t.images, t.repeated, t.repeats, seed=self.config.session.seed)
        return plan_run(
            self._run_id(1),
            [natural[k] for k in order],
            tr_s=self.config.scanner.tr_s,
            trial_s=t.trial_s,
            isi_s=t.isi_s,
            lead_in_s=t.lead_in_s,
            lead_out_s=t.lead_out_s,
            design=t.design,
        )

    # -- a round ----------------------------------------------------------------------------------

    def _round(self, index: int) -> None:
        r = self.config.rounds
        round_id, targets, model_id = self._open_round(index)
        number = 1 + index  # run 1 is the training run; round k is run k + 1
        if number not in self.state.runs:
            plan = self._saved_plan(number) or plan_run(
                self._run_id(number),
                self._round_stimuli(index, targets),
                tr_s=self.config.scanner.tr_s,
                trial_s=r.trial_s,
                isi_s=r.isi_s,
                lead_in_s=self.config.training.lead_in_s,
                lead_out_s=self.config.training.lead_out_s,
                shuffle_seed=self.config.session.seed * 1000 + number,
            )
            self._acquire(number, plan, kind=RunKind.CLOSED_LOOP, round_id=round_id)
        summary, scores, predictions = self._score_round(index, number, model_id)
        if self.state.model_n < self._n_distinct():
            self._fit(description=f"refitted after round {index}")
        self._rec.end_round(
            round_id, refit_model_version_id=self.state.model_id, scores=scores, predictions=predictions
        )
        self.state.rounds_done = index
        self.observer.round_ended(summary)

    def _open_round(self, index: int) -> tuple[int, list[str], int | None]:
        """The round's id, targets and model: the one left running by a killed controller, or a new one."""
        with self.database.reader() as s:
            existing = s.execute(
                select(Round.id, Round.targets, Round.model_version_id).where(
                    Round.session_id == self._rec.session_id, Round.index == index
                )
            ).first()
        if existing is not None:
            return existing[0], list(existing[1]["rois"]), existing[2]
        targets = self._choose_targets(index)
        round_id = self._rec.start_round(
            policy=self.config.rounds.policy, targets=targets, model_version_id=self.state.model_id
        )
        self._event("info", "round.started", f"round {index}: targets {', '.join(targets)}")
        return round_id, targets, self.state.model_id

    def _saved_plan(self, number: int) -> RunPlan | None:
        """The plan of run ``number`` if the run was begun (it keeps the plan it was begun with)."""
        with self.database.reader() as s:
            begun = s.scalar(
                select(Run.id).where(Run.session_id == self._rec.session_id, Run.index == number)
            )
        if begun is None:
            return None
        return RunPlan.from_json((self.out / "plans" / f"{self._run_id(number)}.json").read_text())

    def _choose_targets(self, index: int) -> list[str]:
        r = self.config.rounds
        if r.policy == "worst" and self.state.model_id is not None:
            r_by_roi = _roi_medians(self._current_model())
            return sorted(r.targets, key=lambda roi: r_by_roi[roi])[: r.targets_per_round]
        start = ((index - 1) * r.targets_per_round) % len(r.targets)
        return [r.targets[(start + k) % len(r.targets)] for k in range(r.targets_per_round)]

    def _round_stimuli(self, index: int, targets: list[str]) -> list[PlannedStimulus]:
        """Synthesize for each target, and add the controls; every image written and recorded."""
        from stimulus.synthesis import SynthesisConfig, Target, synthesize

        s, r = self.config.synthesis, self.config.rounds
        model = self._current_model()
        seed = self.config.session.seed * 1000 + index
        settings = SynthesisConfig(
            objective=s.objective,  # type: ignore[arg-type]
            images_per_target=r.images_per_target,
            steps=s.steps,
            lr=s.learning_rate,
            diversity=s.diversity,
            seed=seed,
            patience=s.steps + 1,  # "no better than the start yet" is no reason to stop
        )
        self.observer.message(
            "info",
            f"round {index}: synthesizing {r.images_per_target} image(s) for each of "
            f"{', '.join(targets)} ({s.steps} steps)",
        )
        made = synthesize(
            model, [Target(roi=t) for t in targets], settings, init_images=self._init_images(targets)
        )
        stimuli = []
        for image in made:
            pixels = resize_pixels(image.pixels, s.display_size)
            name, sha = save_png(pixels, self.stimulus_dir, f"round{index:02d}/{image.name}.png")
            self._rec.record_stimulus(
                sha256=sha,
                path=name,
                kind=StimulusKind.SYNTHESIZED,
                target_roi=image.target.roi,
                model_version_id=self.state.model_id,
                synthesis_params=settings.to_dict(),
                seed=seed,
                width=s.display_size,
                height=s.display_size,
            )
            stimuli.append(PlannedStimulus(name, sha, "synthesized", image.target.roi))
        natural = self._measured_responses([1])  # the training run's natural images
        for roi in targets:
            if not natural:
                break
            column = self.roi_names.index(roi)
            ranked = sorted(natural, key=lambda item: item[1][column])
            picks = {"best_natural": ranked[-1][0], "median_natural": ranked[len(ranked) // 2][0]}
            for condition, stimulus in picks.items():
                if condition in r.controls:
                    stimuli.append(PlannedStimulus(stimulus.path, stimulus.sha256, condition, roi))
        return stimuli * r.repeats

    def _init_images(self, targets: list[str]) -> npt.NDArray[np.float32] | None:
        """With ``init = "best"``: where synthesis starts for each target.

        The images that drove the target most so far, by measured response:
        the training run's natural images in round 1; from then on every image
        shown in the session, synthesized ones included. So each round
        starts from what the last one measured.
        """
        if self.config.synthesis.init != "best":
            return None
        measured = self._measured_responses(sorted(self.state.runs))
        n = self.config.rounds.images_per_target
        paths = []
        for roi in targets:
            column = self.roi_names.index(roi)
            ranked = sorted(measured, key=lambda item: -item[1][column])
            paths += [self.stimulus_dir / ranked[k % len(ranked)][0].path for k in range(n)]
        return load_images(paths, self.config.synthesis.image_size)

    def _measured_responses(self, runs: list[int]) -> list[tuple[PlannedStimulus, Array]]:
        """Each image shown in ``runs`` with its measured ROI responses, averaged over its showings."""
        rows: dict[str, list[Array]] = {}
        first: dict[str, PlannedStimulus] = {}
        for number in runs:
            run = self.state.runs[number]
            for stimulus, response in zip(run.stimuli, run.roi, strict=True):
                rows.setdefault(stimulus.path, []).append(response)
                first.setdefault(stimulus.path, stimulus)
        return [(first[path], np.mean(values, 0)) for path, values in rows.items()]

    # -- acquiring a run ----------------------------------------------------------------------------

    def _run_id(self, number: int) -> str:
        c = self.config.session
        return f"sub-{c.subject.removeprefix('sub-')}_ses-{c.session.removeprefix('ses-')}_run-{number:02d}"

    def _acquire(
        self,
        number: int,
        plan: RunPlan,
        *,
        kind: RunKind,
        round_id: int | None,
    ) -> None:
        """Acquire run ``number`` (or pick it up after a restart), then record its responses and end it.

        ``plan`` is the saved one for a run begun before a restart (the callers take :meth:`_saved_plan`).
        """
        run_id, resume = self._open_run(number, plan, kind=kind, round_id=round_id)
        with self.database.reader() as s:
            rows = s.execute(select(Volume.index, Volume.status).where(Volume.run_id == run_id)).all()
        recorded = {index for index, _ in rows}
        recorded_missing = {index for index, status in rows if status is VolumeStatus.MISSING}
        stimuli = [
            PlannedStimulus(t.stimulus, t.sha256, t.condition or "", t.target_roi) for t in plan.trials
        ]
        label = "training run" if kind is RunKind.TRAINING else f"round {number - 1}"
        sink = _RunSink(self, run_id, plan, label, recorded, recorded_missing)
        self.observer.run_started(label, plan)
        try:
            presented = self.acquisition.acquire(
                plan, number, sink, resume=resume, refuse_series=self._earlier_series(run_id)
            )
        except AcquisitionError as exc:  # the run stays open: a resumed session picks it up
            raise AcquisitionError(
                f"{exc}. Fix that, then continue with `cortexloop session run --resume`"
            ) from exc
        trials = presented.trials
        if not presented.complete:
            self._rec.end_run(run_id, status=Status.ABORTED)
            self._rec.end_session(status=Status.ABORTED)
            raise SessionError(
                f"run {plan.run_id} was aborted at the presenter; its volumes are recorded and the session "
                "is ended as aborted. Start a new session (another [session] session label) to go on."
            )
        self._rec.record_onsets(
            run_id,
            [
                {"index": t.index, "actual_onset_s": t.actual_onset_s,
                 "actual_duration_s": t.actual_duration_s, "dropped_frames": t.dropped_frames}
                for t in trials
            ],
        )  # fmt: skip
        self._check_timing(plan, trials, run_id)
        design = [
            Trial(t.actual_onset_s or 0.0, t.actual_duration_s or p.duration_s, p.stimulus)
            for t, p in zip(trials, plan.trials, strict=True)
        ]
        order = np.argsort(sink.indices)  # a late volume came after later ones
        responses = single_trial_responses(
            np.stack(sink.values)[order],
            [sink.indices[k] for k in order],
            design,
            plan.tr_s,
            plan.n_volumes,
            motion=np.stack(sink.motion)[order],
        )
        n_rois = len(self.roi_names)
        result = _RunResult(
            number, stimuli, responses[:, :n_rois], responses[:, n_rois:], self._truth(number, plan)
        )
        self._save_run(result)
        self._rec.end_run(
            run_id,
            responses={k: dict(zip(self.roi_names, row, strict=True)) for k, row in enumerate(result.roi)},
        )
        self.state.runs[number] = result
        self.observer.run_ended(label, sink.summary())

    def _earlier_series(self, run_id: int) -> set[str]:
        """The scanner series of the session's other runs, as recorded when each run's first volume came."""
        with self.database.reader() as s:
            details = s.scalars(
                select(Event.details).where(
                    Event.session_id == self._rec.session_id,
                    Event.code == "run.series",
                    Event.run_id != run_id,
                )
            )
            return {str(d["series"]) for d in details if d and "series" in d}

    def _check_timing(self, plan: RunPlan, trials: list[TrialRecord], run_id: int) -> None:
        """Warn when images were shown far from their plan: their responses are less certain."""
        off = [
            k
            for k, (t, p) in enumerate(zip(trials, plan.trials, strict=True))
            if abs((t.actual_onset_s or 0.0) - p.onset_s) > TIMING_TOLERANCE_S
            or abs((t.actual_duration_s or p.duration_s) - p.duration_s) > TIMING_TOLERANCE_S
        ]
        if off:
            self._event(
                "warning",
                "presentation.timing",
                f"run {plan.run_id}: {len(off)} of {len(trials)} images were shown more than "
                f"{TIMING_TOLERANCE_S:g} s off their planned onset or duration (trials {off[:10]}); the "
                "design uses the actual times, but check the presenter's computer for dropped frames",
                run_id=run_id,
                trials=off,
            )

    def _open_run(
        self,
        number: int,
        plan: RunPlan,
        *,
        kind: RunKind,
        round_id: int | None,
    ) -> tuple[int, bool]:
        """The run's id and whether it was begun before; a new run writes its plan first."""
        with self.database.reader() as s:
            existing = s.execute(
                select(Run.id, Run.status).where(Run.session_id == self._rec.session_id, Run.index == number)
            ).first()
        if existing is not None:
            if existing[1] == Status.RUNNING:
                self._event(
                    "warning", "run.resumed", f"picking up run {number} ({plan.run_id})", run_id=existing[0]
                )
                self._record_plan(existing[0], plan)  # killed between the run's record and its trials'
                return existing[0], True
            raise SessionError(
                f"run {number} of this session ended {existing[1]}; a session with an aborted run cannot be "
                "resumed: start a new session (another [session] session label)"
            )
        write_atomic(self.out / "plans" / f"{plan.run_id}.json", plan.to_json().encode())
        run_id = self._rec.start_run(
            kind=kind, tr_s=plan.tr_s, n_volumes_planned=plan.n_volumes, round_id=round_id
        )
        self._record_plan(run_id, plan)
        return run_id, False

    def _stimulus_ids(self, sha256s: Iterable[str]) -> dict[str, int]:
        with self.database.reader() as s:
            rows = s.execute(select(Stimulus.sha256, Stimulus.id).where(Stimulus.sha256.in_(set(sha256s))))
            return dict(rows.all())

    def _record_plan(self, run_id: int, plan: RunPlan) -> None:
        with self.database.reader() as s:
            if s.scalar(select(func.count(Presentation.id)).where(Presentation.run_id == run_id)):
                return  # recorded before a restart
        ids = self._stimulus_ids(t.sha256 for t in plan.trials)
        self._rec.record_presentations(
            run_id,
            [
                {
                    "trial_index": k,
                    "stimulus_id": ids[t.sha256],
                    "condition": t.condition,
                    "target_roi": t.target_roi,
                    "planned_onset_s": t.onset_s,
                    "planned_duration_s": t.duration_s,
                }
                for k, t in enumerate(plan.trials)
            ],
        )

    def _truth(self, number: int, plan: RunPlan) -> Array | None:
        if self.truth_dir is None:
            return None
        path = self.truth_dir / f"run{number:02d}_truth.json"
        try:
            truth = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            self._event("warning", "truth.unreadable", f"no ground truth for run {number} ({path}): {exc}")
            return None
        shown = truth["presentations"]
        if len(shown) != len(plan.trials):
            return None
        return np.array([[p["roi_responses"][name] for name in self.roi_names] for p in shown])

    # -- run files ----------------------------------------------------------------------------------

    def _run_file(self, number: int) -> Path:
        return self.out / "runs" / f"{self._run_id(number)}_responses.npz"

    def _save_run(self, result: _RunResult) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(
            buffer,
            roi=result.roi,
            voxels=result.voxels,
            truth=result.truth if result.truth is not None else np.zeros((0, 0)),
            stimuli=np.array(
                [json.dumps([s.path, s.sha256, s.condition, s.target_roi]) for s in result.stimuli]
            ),
            roi_names=np.array(self.roi_names),
        )
        write_atomic(self._run_file(result.number), buffer.getvalue())

    def _load_run(self, number: int) -> _RunResult:
        path = self._run_file(number)
        try:
            data = np.load(path)
        except (OSError, ValueError) as exc:
            raise SessionError(
                f"run {number} is recorded as complete but its responses file {path} cannot be read ({exc}); "
                "the session's output folder must be the one it was started with"
            ) from None
        stimuli = [PlannedStimulus(*json.loads(str(s))) for s in data["stimuli"]]
        truth = data["truth"] if data["truth"].size else None
        return _RunResult(number, stimuli, data["roi"], data["voxels"], truth)

    # -- the model ----------------------------------------------------------------------------------

    def _training_data(self) -> TrainingData:
        data = TrainingData()
        for number in sorted(self.state.runs):
            run = self.state.runs[number]
            data.add_run(number, [s.path for s in run.stimuli], run.voxels)
        return data

    def _n_distinct(self) -> int:
        return len({s.path for run in self.state.runs.values() for s in run.stimuli})

    def _fit(self, *, description: str) -> None:
        from stimulus.encoding import EncodingConfig, EncodingModel
        from stimulus.features import ReductionConfig

        m = self.config.model
        data = self._training_data()
        names, responses, _, _ = data.averaged()
        config = EncodingConfig(
            backbone=m.backbone,
            image_size=m.image_size,
            reduction=ReductionConfig(method=m.reduction, budget=m.budget),  # type: ignore[arg-type]
            cv="loo",
            layerwise=False,
            n_permutations=1,
        )
        self.observer.message("info", f"fitting the encoding model on {len(names)} images ({description})")
        model = EncodingModel(config, device=self.device).fit(
            [self.stimulus_dir / n for n in names],
            responses,
            roi_labels=self.voxel_rois,
            voxel_indices=self.signals.voxel_index,
        )
        version = (
            len(list((self.out / "models").glob("model-*.pt"))) + 1 if (self.out / "models").is_dir() else 1
        )
        path = self.out / "models" / f"model-{version:02d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = model.save(path)
        medians = _roi_medians(model)
        model_id = self._rec.record_model_version(
            backbone=m.backbone,
            artifact_path=str(path),
            artifact_sha256=digest,
            parent_id=self.state.model_id,
            n_training_stimuli=len(names),
            description=description,
            layers={"layers": list(model.layers), "cv_median_r": medians},
        )
        self.state.model_id, self.state.model_n = model_id, len(names)
        self._loaded = (model_id, model)
        self._event(
            "info",
            "model.fitted",
            f"model version {model_id} ({description}): cross-validated r by ROI "
            + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()),
        )

    def _current_model(self) -> Any:
        """The model the session is at: the one in memory, or its file (after a restart)."""
        return self._model_for(self.state.model_id)

    # -- scores -------------------------------------------------------------------------------------

    def _score_round(
        self, index: int, number: int, model_id: int | None
    ) -> tuple[RoundSummary, list[dict[str, Any]], list[tuple[int, int, dict[str, float]]]]:
        """The round's table, and its scores and predictions for its end record."""
        run = self.state.runs[number]
        assert model_id is not None, "a round is scored with the model it synthesized with"
        # One item per image and role (an image shown twice is averaged; a natural image that is the
        # control of two targets is two items), so statistics count images, not showings.
        items: dict[PlannedStimulus, list[int]] = {}
        for k, stimulus in enumerate(run.stimuli):
            items.setdefault(stimulus, []).append(k)
        stimuli = list(items)
        rows_of = list(items.values())

        def per_item(values: Array) -> Array:
            return np.stack([values[rows].mean(0) for rows in rows_of])

        model = self._model_for(model_id)
        predicted_voxels = model.predict([self.stimulus_dir / s.path for s in stimuli])
        labels = np.asarray(model.roi_labels_)
        predicted = {roi: predicted_voxels[:, labels == roi].mean(1) for roi in self.roi_names}
        ids = self._stimulus_ids(s.sha256 for s in stimuli)
        by_stimulus = {
            ids[stimulus.sha256]: {roi: float(predicted[roi][k]) for roi in self.roi_names}
            for k, stimulus in enumerate(stimuli)
        }
        predictions = [(model_id, stimulus_id, values) for stimulus_id, values in by_stimulus.items()]
        measured_rows = per_item(run.roi)
        measured = {roi: measured_rows[:, j] for j, roi in enumerate(self.roi_names)}
        made_for = [s.target_roi for s in stimuli]
        control = [s.condition if s.condition != "synthesized" else None for s in stimuli]
        synthesized_for = [t if c is None else None for t, c in zip(made_for, control, strict=True)]
        scores: list[dict[str, Any]] = []

        def add(metric: str, value: float, roi: str | None = None, **details: Any) -> None:
            if math.isfinite(value):
                scores.append(
                    {
                        "metric": metric,
                        "value": value,
                        "roi": roi,
                        "model_version_id": model_id,
                        "details": details or None,
                    }
                )

        accuracy = prediction_accuracy(predicted, measured)
        for roi, r in accuracy.items():
            add("prediction_r", r, roi)
        contrasts = {c.roi: c for c in target_vs_nontarget(measured, synthesized_for)}
        drives = {d.roi: d for d in drive(measured, made_for, control)}
        truth = None
        if run.truth is not None:
            truth_rows = per_item(run.truth)
            truth = {roi: truth_rows[:, j] for j, roi in enumerate(self.roi_names)}
            for roi, r in prediction_accuracy(predicted, truth).items():
                add("truth_prediction_r", r, roi)
            for roi, r in prediction_accuracy(measured, truth).items():
                add("truth_measurement_r", r, roi)
            for true in target_vs_nontarget(truth, synthesized_for):
                add("truth_target_t", true.t, true.roi, p=true.p, cohens_d=true.cohens_d)
        rows = []
        for roi in dict.fromkeys(t for t in synthesized_for if t is not None):
            own = np.array([t == roi for t in synthesized_for])
            c, d = contrasts.get(roi), drives.get(roi)
            row = TargetRow(
                roi=roi,
                predicted=float(predicted[roi][own].mean()),
                measured=float(measured[roi][own].mean()),
                vs_best=d.vs_best if d else float("nan"),
                natural_range=d.natural_range if d else float("nan"),
                t=c.t if c else float("nan"),
                p=c.p if c else float("nan"),
                true=float(truth[roi][own].mean()) if truth is not None else None,
            )
            rows.append(row)
            add("target_predicted", row.predicted, roi)
            add("target_measured", row.measured, roi)
            if c is not None:
                add(
                    "target_t",
                    c.t,
                    roi,
                    p=c.p,
                    cohens_d=c.cohens_d,
                    n_target=c.n_target,
                    n_nontarget=c.n_nontarget,
                    target_mean=c.target_mean,
                    nontarget_mean=c.nontarget_mean,
                )
                add("target_p", c.p, roi)
                add("target_d", c.cohens_d, roi)
            if d is not None:
                add("drive_vs_best", d.vs_best, roi, best=d.best_natural, synthesized=d.synthesized)
                add("drive_natural_range", d.natural_range, roi, median=d.median_natural, best=d.best_natural)
            if row.true is not None:
                add("target_true", row.true, roi)
        mean_drive = float(np.mean([row.measured for row in rows])) if rows else float("nan")
        add("drive", mean_drive)
        return RoundSummary(index, rows, accuracy, mean_drive), scores, predictions

    def _model_for(self, model_id: int | None) -> Any:
        """A recorded model version from its file, checked against its SHA-256 (kept if current)."""
        from stimulus.encoding import EncodingModel

        if self._loaded[0] == model_id and self._loaded[1] is not None:
            return self._loaded[1]
        with self.database.reader() as s:
            record = s.get_one(EncodingModelVersion, model_id)
            path, digest = record.artifact_path, record.artifact_sha256
        model = EncodingModel.load(path, expected_sha256=digest, device=self.device)
        if model_id == self.state.model_id:
            self._loaded = (model_id, model)
        return model

    # -- records ------------------------------------------------------------------------------------

    def _event(
        self, level: str, code: str, message: str, *, run_id: int | None = None, **details: Any
    ) -> None:
        self.observer.message(level, message)
        if self.recorder is not None:
            self.recorder.record_event(
                EventLevel(level), "controller", code, message, run_id=run_id, details=details or None
            )


class _RunSink:
    """Takes one run's volumes and onsets from the acquisition: analyses, records, tells the observer."""

    def __init__(
        self,
        controller: Controller,
        run_id: int,
        plan: RunPlan,
        label: str,
        recorded: set[int],
        recorded_missing: set[int],
    ) -> None:
        self.c, self.run_id, self.plan, self.label, self.recorded = controller, run_id, plan, label, recorded
        self.recorded_missing = recorded_missing  # recorded as missing: completed if the volume comes
        self.analyzer = RunAnalyzer(
            controller.signals,
            plan.tr_s,
            plan.n_volumes,
            max_trials=len(plan.trials),
            voxel_mm=controller.atlas.voxel_mm,
        )
        self.indices: list[int] = []
        self.values: list[Array] = []
        self.motion: list[Array] = []
        self.missing: list[int] = []
        self.late: list[int] = []
        self.onsets: dict[int, float] = {}
        self._checked = False

    def volume(self, index: int, status: VolumeStatus, volume: ScannerVolume | None) -> None:
        rec = self.c._rec
        if volume is None:
            self.missing.append(index)
            if index not in self.recorded:
                rec.record_volume(self.run_id, index, roi_signals={}, status=VolumeStatus.MISSING)
                self.recorded.add(index)
                self.recorded_missing.add(index)
                self.c._event(
                    "warning",
                    "volume.missing",
                    f"{self.label}: volume {index} never came; left out of the fit",
                    run_id=self.run_id,
                )
            self.c.observer.volume(self.label, index, self.plan.n_volumes, "missing", None)
            return
        if not self._checked:
            self.c.signals.check(volume.data.shape, volume.affine)
            self._checked = True
        result = self.analyzer.process(index, volume.data)
        self.indices.append(index)
        self.values.append(result.values)
        self.motion.append(result.motion)
        if status is VolumeStatus.LATE:
            self.late.append(index)
        signals = dict(zip(self.c.roi_names, result.values[: len(self.c.roi_names)], strict=True))
        arrived, now = utc(volume.stamps.get("received")), dt.datetime.now(dt.UTC)
        if index not in self.recorded:
            rec.record_volume(
                self.run_id,
                index,
                roi_signals=signals,
                status=status,
                arrived_at=arrived,
                processed_at=now,
                file_path=volume.source or None,
                framewise_displacement_mm=result.fd_mm if math.isfinite(result.fd_mm) else None,
            )
            self.recorded.add(index)
        elif index in self.recorded_missing:
            rec.fill_missing_volume(
                self.run_id,
                index,
                roi_signals=signals,
                arrived_at=arrived,
                processed_at=now,
                file_path=volume.source,
            )
            self.recorded_missing.discard(index)
            self.c._event(
                "warning",
                "volume.late",
                f"{self.label}: volume {index} came late; recorded",
                run_id=self.run_id,
            )
        written = volume.stamps.get("written")
        latency = 1e3 * (time.time() - written) if written is not None else None
        self.c.observer.volume(self.label, index, self.plan.n_volumes, status.value, result, latency)

    def onset(self, trial: int, onset_s: float, duration_s: float | None) -> None:
        if trial in self.onsets:
            return
        self.onsets[trial] = onset_s
        planned = self.plan.trials[trial]
        try:
            self.analyzer.add_trial(Trial(onset_s, planned.duration_s, planned.stimulus))
        except ValueError:  # its volumes came before its onset did: left to the analysis after the run
            log.debug("onset of trial %d came after its volumes; not in the provisional fit", trial)
        self.c._rec.record_onset(self.run_id, trial, actual_onset_s=onset_s, actual_duration_s=duration_s)

    def event(self, level: str, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.c._event(level, code, message, run_id=self.run_id, **(details or {}))

    def summary(self) -> dict[str, Any]:
        seconds = [r.seconds for r in self.analyzer.results]
        fd = [r.fd_mm for r in self.analyzer.results]
        return {
            "volumes": len(self.indices),
            "missing": len(self.missing),
            "late": len(self.late),
            "median_ms": 1e3 * float(np.median(seconds)) if seconds else float("nan"),
            "max_fd_mm": float(np.nanmax(fd)) if fd else float("nan"),  # a late volume has no FD
        }


def _roi_medians(model: Any) -> dict[str, float]:
    labels = np.asarray(model.roi_labels_)
    return {
        str(roi): float(np.nanmedian(model.cv_r_[labels == roi])) for roi in dict.fromkeys(labels.tolist())
    }
