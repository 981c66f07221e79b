"""The closed-loop controller: a whole session, run after run, recorded as it happens.

A session is a training run and then rounds. The training run shows
natural images; their single-trial responses fit the first encoding model.
A session may start from a model fitted before it (``[model] start``: a
model file, an earlier session's last model, or other subjects' models
averaged by ROI; :mod:`stimulus.transfer`). The training run then
validates that model (its predictions against the run's measurements, an
event) and every fit of the session shrinks towards it instead of towards
zero; the training run may be shorter, or left out, in which case the first
round synthesizes with the start model itself.
Each round then chooses its target ROIs, synthesizes images for them with
the current model, plans a run of those images with controls in a random
order (the best and the median natural image of the training run for each
target; the images made for the other targets are the non-target
controls), acquires it, scores it (:func:`loop.scoring.score_round`), and
refits the model on everything measured so far. The next round synthesizes
with the refitted model.

Everything is committed to the session database as it happens: each volume
with its ROI signals (:class:`~loop.recording.RunRecording`), each onset, a
run's responses together with its end, a model version as soon as it is
fitted, a round's scores together with its end. What the next step needs
and the database does not hold (each run's voxel responses, the model
files, the plans, the images) is written to the session's folder first
(:class:`~loop.folder.SessionFolder`). Everything is read back through
``db.queries``. So a controller killed at any point and started again with
``resume=True`` finds where it was:

- completed runs are read back from their response files;
- a run still marked running is picked up: the presenter says whether it is
  still showing it, has finished it (its log is asked for again) or never
  saw it (it is sent again); the bridge serves the run's volumes again from
  index 0 (the run's series as recorded, or else the newest that fits), and
  each is analysed again but recorded only if it was not;
- a model is refitted if the last one does not cover every completed run;
- a round whose run is complete but which has not ended is scored and ended.

In a simulation the virtual subject's ground truth (what each ROI really
did) is read after each run and scored the same way as the measurements.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from db import Database, RoiSpec, SessionRecorder
from db.base import (
    ConfigError,
    EventLevel,
    RecordNotFoundError,
    RunKind,
    SessionKind,
    Status,
    StimulusKind,
    write_atomic,
)
from db.queries import (
    ModelVersionRow,
    RunRow,
    model_version,
    model_versions,
    run_series,
    run_trials,
    run_volumes,
    session_id,
    session_rounds,
    session_runs,
    session_stimuli,
    stimulus_ids,
    stimulus_path,
)
from loop.acquisition import Acquisition
from loop.analysis.design import Trial
from loop.analysis.roi import RoiAtlas, RoiSignals
from loop.config import SessionConfig, start_source
from loop.continuation import EarlierSession
from loop.dataset import TrainingData, single_trial_responses
from loop.errors import AcquisitionError, SessionError
from loop.evidence import Showing
from loop.folder import RunRef, RunResponses, SessionFolder
from loop.observer import Observer
from loop.plans import PlannedStimulus, plan_run, png_bytes, save_png, training_order
from loop.recording import RunRecording, SessionReference
from loop.scoring import RoundScores, average_by_item, score_round, showings_by_item
from loop.software import environment
from loop.strategies import STRATEGIES, RoundContext
from scanner_bridge import SeriesChoice
from stimulus.images import resize_pixels
from stimulus.present import RunLog, RunPlan

__all__ = ["Controller"]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]

TIMING_TOLERANCE_S = 0.25  # an image shown further than this from its planned onset or duration is reported


@dataclass
class _State:
    """What the session has done so far, rebuilt from the database and the session folder on resume."""

    runs: dict[int, RunResponses] = field(default_factory=dict)  # completed runs by number
    model_id: int | None = None
    model_runs: int = 0  # how many of the session's completed runs the current model was fitted on
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
    the virtual subject's ground truth is scored alongside.
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
        self.observer = observer or Observer()
        self.device = device
        self.folder = SessionFolder.of(config)
        self._lab: tuple[Any, npt.NDArray[np.intp]] | None = None  # a lab's image set, once read
        self.atlas_paths = (config.resolve(config.atlas.labels), config.resolve(config.atlas.names))
        self.atlas = RoiAtlas.load(*self.atlas_paths)
        self.signals = RoiSignals(self.atlas, self.atlas.labelled_voxels())
        self.reference = SessionReference(
            self.folder.reference_path,
            self.atlas.voxel_mm,
            source=config.resolve(config.atlas.reference) if config.atlas.reference else None,
        )
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
        self._start_id: int | None = None  # the model version the session started from ([model] start)
        self._earlier: EarlierSession | None = None  # the earlier session it continues, if it does

    # -- the session ----------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> None:
        """Run the session to its end (or to where a resumed one left off, then on to its end)."""
        self.folder.root.mkdir(parents=True, exist_ok=True)
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
        self._event(
            "info", "session.started", f"session {c.session.subject}/{c.session.session} started",
            environment=environment(),
        )  # fmt: skip
        return recorder

    def _resume(self) -> SessionRecorder:
        c = self.config
        try:
            recorder = SessionRecorder.resume(self.database, f"{c.session.subject}/{c.session.session}")
        except LookupError as exc:
            raise SessionError(f"nothing to resume: {exc}") from None
        self.recorder = recorder
        with self.database.reader() as s:
            runs = session_runs(s, recorder.session_id, status=Status.COMPLETED)
            rounds = session_rounds(s, recorder.session_id)
            models = model_versions(s, recorder.session_id)
        for row in runs:
            run = self.folder.run(row.index)
            self.state.runs[run.number] = self.folder.load_responses(run, self.roi_names)
        self.state.rounds_done = sum(r.status == Status.COMPLETED for r in rounds)
        if models:
            last = models[-1]
            covered = (last.layers or {}).get("runs")
            if covered is None:  # recorded before models said so: it covered the runs whose images it had
                covered = len(self.state.runs) if (last.n_training_stimuli or 0) >= self._n_distinct() else 0
            self.state.model_id, self.state.model_runs = last.id, int(covered)
            first = models[0].layers or {}
            if first.get("start"):
                self._start_id = models[0].id
            if first.get("continues"):
                self._earlier = self._continue(str(first["continues"]))
        self._event(
            "warning",
            "session.resumed",
            f"session resumed: {len(self.state.runs)} run(s) and {self.state.rounds_done} round(s) complete",
            environment=environment(),  # a resumed session may round differently from where it began
        )
        return recorder

    # -- the training run -------------------------------------------------------------------------

    @property
    def _trained(self) -> int:
        """1 with a training run (run 1), 0 without (a session started from a model: round k is run k)."""
        return 1 if self.config.training.images else 0

    def _training(self) -> None:
        if self.config.model.start and self.state.model_id is None:
            self._start_model()
        run = self.folder.run(1)
        if self._trained and run.number not in self.state.runs:
            plan = self._saved_plan(run) or self._training_plan(run)
            self._acquire(run, plan, kind=RunKind.TRAINING, round_id=None)
        if self._needs_fit():
            if self._trained and self._start_id is not None and self.state.model_id == self._start_id:
                self._validate_start(run)  # before the first fit moves the model away from it
            self._fit(description="fitted on the training run")

    def _training_plan(self, run: RunRef) -> RunPlan:
        """Write and record the natural images, and plan the training run."""
        from stimulus.natural import natural_image_set

        t = self.config.training
        if t.image_set:
            pixels = self._lab_images()
        else:
            pixels = natural_image_set(
                t.images, size=self.config.synthesis.display_size, seed=self.config.session.seed
            ).pixels
        natural = []
        for k in range(t.images):
            name, sha = self._keep_image(
                pixels[k], f"natural/nat_{k:03d}.png", kind=StimulusKind.NATURAL, width=pixels.shape[2],
                height=pixels.shape[1],
            )  # fmt: skip
            natural.append(PlannedStimulus(name, sha, "natural"))
        order = training_order(t.images, t.repeated, t.repeats, seed=self.config.session.seed)
        return plan_run(
            run.bids, [natural[k] for k in order], tr_s=self.config.scanner.tr_s, timing=t.timing,
            fixation=self.config.fixation.settings(),
        )  # fmt: skip

    def _lab_set(self) -> tuple[Any, npt.NDArray[np.intp]]:
        """The lab's image set (read and checked once) and which of its images the training run shows."""
        from stimulus.image_sets import read_image_set

        if self._lab is None:
            t = self.config.training
            found = read_image_set(self.config.resolve(t.image_set))
            if len(found) < t.images:
                raise ConfigError(
                    f"{self.config.source}: [training] images is {t.images}, but the image set "
                    f"{found.source} has {len(found)} usable image(s); lower images or add to the set"
                )
            chosen = np.sort(
                np.random.default_rng(self.config.session.seed).choice(len(found), t.images, replace=False)
            )
            self._lab = (found, chosen)
        return self._lab

    def _lab_pool(self) -> tuple[Path, ...]:
        """The lab's images the training run did not show: the rounds' natural candidates (none: built-in)."""
        if not self.config.training.image_set:
            return ()
        found, chosen = self._lab_set()
        shown = set(chosen.tolist())
        return tuple(path for k, path in enumerate(found.paths) if k not in shown)

    def _lab_images(self) -> npt.NDArray[np.float32]:
        """``[training] images`` of the lab's image set, drawn with the session's seed, at display size."""
        from stimulus.images import load_images

        t = self.config.training
        found, chosen = self._lab_set()
        converted = f"; used as RGB: {', '.join(found.converted)}" if found.converted else ""
        self._event(
            "info", "training.images",
            f"training images: {t.images} of the {len(found)} in {found.source}{converted}",
        )  # fmt: skip
        return load_images([found.paths[k] for k in chosen], self.config.synthesis.display_size)

    # -- a round ----------------------------------------------------------------------------------

    def _round(self, index: int) -> None:
        round_id, targets, model_id = self._open_round(index)
        run = self.folder.run(index + self._trained)  # run 1 is the training run, if there is one
        assert run.round == index
        if run.number not in self.state.runs:
            plan = self._saved_plan(run) or plan_run(
                run.bids,
                self._round_stimuli(index, targets),
                tr_s=self.config.scanner.tr_s,
                timing=self.config.rounds.timing,
                shuffle_seed=self.config.session.seed * 1000 + run.number,
                fixation=self.config.fixation.settings(),
            )
            self._acquire(run, plan, kind=RunKind.CLOSED_LOOP, round_id=round_id)
        assert model_id is not None, "a round is scored with the model it synthesized with"
        scores, records, predictions = self._score_round(run, model_id)
        if self._needs_fit():
            self._fit(description=f"refitted after round {index}")
        self._rec.end_round(
            round_id, refit_model_version_id=self.state.model_id, scores=records, predictions=predictions
        )
        self.state.rounds_done = index
        self.observer.round_ended(index, scores)

    def _open_round(self, index: int) -> tuple[int, list[str], int | None]:
        """The round's id, targets and model: the one left running by a killed controller, or a new one."""
        with self.database.reader() as s:
            existing = [r for r in session_rounds(s, self._rec.session_id) if r.index == index]
        if existing:
            return existing[0].id, existing[0].targets, existing[0].model_version_id
        targets = self._choose_targets(index)
        round_id = self._rec.start_round(
            policy=self.config.rounds.policy, targets=targets, model_version_id=self.state.model_id
        )
        self._event("info", "round.started", f"round {index}: targets {', '.join(targets)}")
        return round_id, targets, self.state.model_id

    def _choose_targets(self, index: int) -> list[str]:
        r = self.config.rounds
        if r.policy == "worst" and self.state.model_id is not None:
            r_by_roi = _roi_medians(self._current_model())
            return sorted(r.targets, key=lambda roi: r_by_roi[roi])[: r.targets_per_round]
        start = ((index - 1) * r.targets_per_round) % len(r.targets)
        return [r.targets[(start + k) % len(r.targets)] for k in range(r.targets_per_round)]

    def _round_stimuli(self, index: int, targets: list[str]) -> list[PlannedStimulus]:
        """Each target's images (by the session's strategy) and the controls, all written and recorded."""
        s, r = self.config.synthesis, self.config.rounds
        seed = self.config.session.seed * 1000 + index
        strategy = STRATEGIES[s.strategy]
        context = RoundContext(
            index=index, targets=targets, model=self._current_model(),
            showings=self._showings(), roi_names=self.roi_names,
            stimuli=self.folder.stimuli, origins=self._origins(), settings=s,
            images_per_target=r.images_per_target, seed=seed, pool=self._lab_pool(),
        )  # fmt: skip
        steps = s.later_steps if context.later else s.steps
        self.observer.message(
            "info",
            f"round {index}: making {r.images_per_target} image(s) for each of {', '.join(targets)} "
            f"({strategy.name}: {steps} steps)",
        )
        stimuli = []
        for image in strategy.make(context):
            pixels = resize_pixels(image.pixels, s.display_size)
            start = None  # kept beside the image, so that the report shows how far synthesis moved it
            if image.start is not None:
                start, _ = save_png(
                    image.start, self.folder.stimuli, f"round{index:02d}/starts/{image.name}.png"
                )
            origin = image.origin or start  # a screened candidate is its own natural origin
            made = {"predicted": image.predicted, "moved_rms": image.moved, "start_file": start,
                    "origin_file": origin}  # fmt: skip
            name, sha = self._keep_image(
                pixels, f"round{index:02d}/{image.name}.png", kind=StimulusKind.SYNTHESIZED,
                target_roi=image.target, model_version_id=self.state.model_id,
                synthesis_params={**image.parameters, **made}, seed=seed, width=s.display_size,
                height=s.display_size,
            )  # fmt: skip
            stimuli.append(PlannedStimulus(name, sha, "synthesized", image.target))
        natural = self._measured_responses(self._natural_runs())
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

    def _keep_image(self, pixels: npt.NDArray[np.float32], name: str, **record: Any) -> tuple[str, str]:
        """Write an image into the session's stimulus folder and record it: (its path there, SHA-256).

        The database records an image once, by content, under the path it was first written to. An
        image an earlier session of the database recorded (the same natural image on another day) is
        written here under that path too, so every session's folder holds its images where the
        database says; a new image whose name such an image took is named after its content.
        """
        data = png_bytes(pixels)
        sha = hashlib.sha256(data).hexdigest()
        with self.database.reader() as s:
            recorded = stimulus_path(s, sha)
        path = recorded or name
        target = self.folder.stimuli / path
        if recorded is None and target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() != sha:
            path = str(Path(name).with_name(f"{Path(name).stem}-{sha[:12]}.png"))
        target = self.folder.stimuli / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data)
        self._rec.record_stimulus(sha256=sha, path=path, **record)
        return path, sha

    def _natural_runs(self) -> list[int]:
        """Where the rounds' natural controls come from: the training run, or the continued session's."""
        if self._trained:
            return [1]
        if self._earlier is not None and self._earlier.training is not None:
            return [self._earlier.training]
        return []

    def _origins(self) -> dict[str, str]:
        """Each synthesized image's natural ancestor, as recorded with it (paths in the stimulus folder)."""
        with self.database.reader() as s:
            rows = session_stimuli(s, self._rec.session_id)
        earlier = self._earlier.origins if self._earlier is not None else {}
        return earlier | {
            r.path: r.synthesis["origin_file"] for r in rows if r.synthesis and r.synthesis.get("origin_file")
        }

    def _all_runs(self) -> dict[int, RunResponses]:
        """The completed runs, the continued session's first (numbered before this session's own)."""
        earlier = self._earlier.runs if self._earlier is not None else {}
        return {number: run for number, run in sorted((earlier | self.state.runs).items())}

    def _showings(self) -> list[Showing]:
        """Every presentation of the completed runs, in order, with its measured ROI responses."""
        return [
            Showing(stimulus, run.number, response)
            for run in self._all_runs().values()
            for stimulus, response in zip(run.stimuli, run.roi, strict=True)
        ]

    def _measured_responses(self, runs: list[int]) -> list[tuple[PlannedStimulus, Array]]:
        """Each image shown in ``runs`` with its measured ROI responses, averaged over its showings."""
        rows: dict[str, list[Array]] = {}
        first: dict[str, PlannedStimulus] = {}
        every = self._all_runs()
        for number in runs:
            run = every[number]
            for stimulus, response in zip(run.stimuli, run.roi, strict=True):
                rows.setdefault(stimulus.path, []).append(response)
                first.setdefault(stimulus.path, stimulus)
        return [(first[path], np.mean(values, 0)) for path, values in rows.items()]

    # -- acquiring a run ----------------------------------------------------------------------------

    def _recorded_run(self, run: RunRef) -> RunRow | None:
        """The database's record of ``run``, if it was begun."""
        with self.database.reader() as s:
            found = [r for r in session_runs(s, self._rec.session_id) if r.index == run.number]
        return found[0] if found else None

    def _saved_plan(self, run: RunRef) -> RunPlan | None:
        """The plan of ``run`` if it was begun (it keeps the plan it was begun with)."""
        return self.folder.load_plan(run) if self._recorded_run(run) is not None else None

    def _acquire(self, run: RunRef, plan: RunPlan, *, kind: RunKind, round_id: int | None) -> None:
        """Acquire ``run`` (or pick it up after a restart), then record its responses and end it.

        ``plan`` is the saved one for a run begun before a restart (the callers take :meth:`_saved_plan`).
        """
        run_id, resume = self._open_run(run, plan, kind=kind, round_id=round_id)
        with self.database.reader() as s:
            recorded = {v.index: v.status for v in run_volumes(s, run_id)}
        recording = RunRecording(
            run, run_id, plan, recorder=self._rec, signals=self.signals, voxel_mm=self.atlas.voxel_mm,
            recorded=recorded, observer=self.observer, log_event=self._event, reference=self.reference,
        )  # fmt: skip
        self.observer.run_started(run.description, plan)
        try:
            presented = self.acquisition.acquire(
                plan, run.number, recording, resume=resume, series=self._series_choice(run_id, plan)
            )
        except AcquisitionError as exc:  # the run stays open: a resumed session picks it up
            raise AcquisitionError(
                f"{exc}. Fix that, then continue with `cortexloop session run --resume`"
            ) from exc
        if not presented.complete:
            self._rec.end_run(run_id, status=Status.ABORTED)
            self._rec.end_session(status=Status.ABORTED)
            raise SessionError(
                f"run {run.label} was aborted at the presenter; its volumes are recorded and the session "
                "is ended as aborted. Start a new session (another [session] session label) to go on."
            )
        self._rec.record_onsets(run_id, [
            {"index": t.index, "actual_onset_s": t.actual_onset_s, "actual_duration_s": t.actual_duration_s,
             "dropped_frames": t.dropped_frames}
            for t in presented.trials
        ])  # fmt: skip
        self._check_timing(plan, presented, run_id)
        self._check_attention(run, plan, presented, run_id)
        design = [
            Trial(
                p.onset_s if t.actual_onset_s is None else t.actual_onset_s,
                p.duration_s if t.actual_duration_s is None else t.actual_duration_s,
                p.stimulus,
            )
            for t, p in zip(presented.trials, plan.trials, strict=True)
        ]
        values, indices, motion = recording.received()
        responses = single_trial_responses(values, indices, design, plan.tr_s, plan.n_volumes, motion=motion)
        n_rois = len(self.roi_names)
        stimuli = [
            PlannedStimulus(t.stimulus, t.sha256, t.condition or "", t.target_roi) for t in plan.trials
        ]
        result = RunResponses(
            run.number, stimuli, responses[:, :n_rois], responses[:, n_rois:], self._truth(run, plan)
        )
        self.folder.save_responses(run, result, self.roi_names)
        self._rec.end_run(
            run_id,
            responses={k: dict(zip(self.roi_names, row, strict=True)) for k, row in enumerate(result.roi)},
        )
        self.state.runs[run.number] = result
        self.observer.run_ended(run.description, recording.summary())

    def _open_run(
        self, run: RunRef, plan: RunPlan, *, kind: RunKind, round_id: int | None
    ) -> tuple[int, bool]:
        """The run's key in the database and whether it was begun before; a new run writes its plan first."""
        existing = self._recorded_run(run)
        if existing is not None:
            if existing.status == Status.RUNNING:
                self._event(
                    "warning", "run.resumed", f"picking up run {run.number} ({run.label})", run_id=existing.id
                )
                self._record_plan(existing.id, plan)  # killed between the run's record and its trials'
                return existing.id, True
            raise SessionError(
                f"run {run.number} of this session ended {existing.status}; a session with an aborted run "
                "cannot be resumed: start a new session (another [session] session label)"
            )
        self.folder.save_plan(run, plan)
        run_id = self._rec.start_run(
            kind=kind, tr_s=plan.tr_s, n_volumes_planned=plan.n_volumes, round_id=round_id
        )
        self._record_plan(run_id, plan)
        return run_id, False

    def _record_plan(self, run_id: int, plan: RunPlan) -> None:
        with self.database.reader() as s:
            if run_trials(s, run_id):
                return  # recorded before a restart
            ids = stimulus_ids(s, (t.sha256 for t in plan.trials))
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

    def _series_choice(self, run_id: int, plan: RunPlan) -> SeriesChoice:
        """Which scanner series can be run ``run_id``: the session's grid and TR, no other run's series.

        The series come from the database (recorded when each run's first volume came), so a resumed
        controller knows them too, and takes up the run's own where an earlier attempt recorded it.
        """
        with self.database.reader() as s:
            series = run_series(s, self._rec.session_id)
        nx, ny, nz = self.atlas.labels.shape
        return SeriesChoice(
            name=series.get(run_id),
            shape=(nx, ny, nz),
            tr_s=plan.tr_s,
            exclude=frozenset(name for other, name in series.items() if other != run_id),
        )

    def _check_attention(self, run: RunRef, plan: RunPlan, presented: RunLog, run_id: int) -> None:
        """Record the attention task's score and rows, if the plan had one; warn when most went unanswered.

        The fixation changes and the button presses go with the score, so that the export's events file
        has the rows the presenter's has.
        """
        score = presented.attention
        if score is None:  # no task
            return
        rows = {
            "fixation_changes_s": presented.fixation_changes_s,
            "change_duration_s": plan.fixation.change_duration_s,
            "responses": [[key, t] for key, t in presented.responses],
        }
        rate = score.hit_rate
        if rate is None:
            self._event(
                "info", "run.attention", f"run {run.label}: no fixation colour change in this run",
                run_id=run_id, hits=0, changes=0, false_alarms=score.false_alarms, hit_rate=None, **rows,
            )  # fmt: skip
            return
        reaction = (
            f", median reaction {float(np.median(score.reaction_times_s)):.2f} s"
            if score.reaction_times_s
            else ""
        )
        message = (
            f"run {run.label}: the subject answered {score.hits} of {score.changes} fixation colour changes "
            f"({score.false_alarms} false alarm(s){reaction})"
        )
        if rate < 0.5:
            message += "; is the subject awake and looking at the fixation point?"
        self._event(
            "info" if rate >= 0.5 else "warning", "run.attention", message, run_id=run_id,
            hits=score.hits, changes=score.changes, false_alarms=score.false_alarms, hit_rate=rate, **rows,
        )  # fmt: skip

    def _check_timing(self, plan: RunPlan, presented: RunLog, run_id: int) -> None:
        """Warn when images were shown far from their plan: their responses are less certain."""
        off = [
            k
            for k, (t, p) in enumerate(zip(presented.trials, plan.trials, strict=True))
            if abs((t.actual_onset_s or 0.0) - p.onset_s) > TIMING_TOLERANCE_S
            or abs((t.actual_duration_s or p.duration_s) - p.duration_s) > TIMING_TOLERANCE_S
        ]
        if off:
            self._event(
                "warning",
                "presentation.timing",
                f"run {plan.run_id}: {len(off)} of {len(presented.trials)} images were shown more than "
                f"{TIMING_TOLERANCE_S:g} s off their planned onset or duration (trials {off[:10]}); the "
                "design uses the actual times, but check the presenter's computer for dropped frames",
                run_id=run_id,
                trials=off,
            )

    def _truth(self, run: RunRef, plan: RunPlan) -> Array | None:
        if self.folder.truth is None:
            return None
        try:
            return self.folder.read_truth(run, self.roi_names, len(plan.trials))
        except SessionError as exc:
            self._event("warning", "truth.unreadable", str(exc))
            return None

    # -- the model ----------------------------------------------------------------------------------

    def _training_data(self) -> TrainingData:
        data = TrainingData()
        for number, run in self._all_runs().items():
            data.add_run(number, [s.path for s in run.stimuli], run.voxels)
        return data

    def _needs_fit(self) -> bool:
        """Whether a completed run is not in the current model yet (or there is no model at all)."""
        return self.state.model_id is None or self.state.model_runs < len(self.state.runs)

    def _n_distinct(self) -> int:
        return len({s.path for run in self._all_runs().values() for s in run.stimuli})

    def _fit(self, *, description: str) -> None:
        from stimulus.encoding import EncodingModel

        names, responses, _, _ = self._training_data().averaged()
        # The start model is the prior, unless its own data are here (an earlier session continued).
        prior = None if self._start_id is None or self._earlier else self._model_for(self._start_id)
        towards = f", towards model version {self._start_id}" if prior is not None else ""
        self.observer.message(
            "info", f"fitting the encoding model on {len(names)} images ({description}{towards})"
        )
        model = EncodingModel(self.config.model.encoding(), device=self.device).fit(
            [self.folder.stimuli / n for n in names],
            responses,
            roi_labels=self.voxel_rois,
            voxel_indices=self.signals.voxel_index,
            prior=prior,
        )
        self._record_model(model, description=description, parent_id=self.state.model_id, n_images=len(names))

    def _record_model(
        self,
        model: Any,
        *,
        description: str,
        parent_id: int | None,
        n_images: int,
        start: list[str] | None = None,
        continues: str | None = None,
    ) -> None:
        """Save ``model`` in the session folder, record it, and make it the session's current model."""
        path = self.folder.new_model_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = model.save(path)
        medians = _roi_medians(model)
        layers: dict[str, Any] = {
            "layers": list(model.layers), "cv_median_r": medians, "runs": len(self.state.runs),
        }  # fmt: skip
        if start is not None:
            layers["start"] = start
        if continues is not None:
            layers["continues"] = continues
        model_id = self._rec.record_model_version(
            backbone=model.config.backbone,
            artifact_path=str(path),
            artifact_sha256=digest,
            parent_id=parent_id,
            n_training_stimuli=n_images,
            description=description,
            layers=layers,
        )
        self.state.model_id, self.state.model_runs = model_id, len(self.state.runs)
        self._loaded = (model_id, model)
        if start is not None:
            self._start_id = model_id
        self._event(
            "info",
            "model.fitted" if start is None else "model.started",
            f"model version {model_id} ({description}): cross-validated r by ROI "
            + ", ".join(f"{k} {v:.2f}" for k, v in medians.items()),
        )

    def _start_model(self) -> None:
        """The model of ``[model] start`` on this session's voxels, recorded as the session's first."""
        from stimulus.encoding import EncodingModel, describe_features, feature_space
        from stimulus.errors import StimulusError
        from stimulus.transfer import on_voxels

        models, sources, parents = [], [], []
        for entry in self.config.model.start:
            where = start_source(self.config, entry)
            try:
                if isinstance(where, Path):
                    model = EncodingModel.load(where, device=self.device)
                    sources.append(f"{where} (sha256 {model.file_sha256_})")
                else:
                    record = self._last_model_of(where)
                    model = EncodingModel.load(
                        record.artifact_path, expected_sha256=record.artifact_sha256, device=self.device
                    )
                    sources.append(f"{where} model version {record.id} ({record.artifact_path})")
                    parents.append(record.id)
            except StimulusError as exc:
                raise SessionError(f"[model] start {entry}: {exc}") from None
            models.append(model)
        try:
            start = on_voxels(models, self.voxel_rois, self.signals.voxel_index)
            ours = EncodingModel(self.config.model.encoding(), device=self.device)
            if feature_space(ours) != feature_space(start):
                raise SessionError(
                    f"[model] start reads {describe_features(start)}; this session's [model] reads "
                    f"{describe_features(ours)}: set [model] backbone, image_size, budget and reduction to "
                    "the start model's"
                )
        except StimulusError as exc:
            raise SessionError(f"[model] start: {exc}") from None
        how = "as it is" if start is models[0] else f"averaged by ROI over {len(models)} model(s)"
        continues = self._continues(models, start)
        if continues is not None:
            self._earlier = self._continue(continues)
            how += f", continuing {continues} (its {len(self._earlier.runs)} run(s) and their images)"
        self._record_model(
            start,
            description=f"the start model: {'; '.join(sources)}, {how}",
            parent_id=parents[0] if len(parents) == 1 and len(models) == 1 else None,
            n_images=self._n_distinct(),
            start=sources,
            continues=continues,
        )

    def _continues(self, models: list[Any], start: Any) -> str | None:
        """The session this one continues: the one ``[model] start`` entry, of this subject, same voxels."""
        entries = self.config.model.start
        if len(entries) != 1 or start is not models[0]:
            return None
        where = start_source(self.config, entries[0])
        if isinstance(where, Path):
            return None
        subject = where.partition("/")[0].removeprefix("sub-")
        return where if subject == self.config.session.subject.removeprefix("sub-") else None

    def _continue(self, ref: str) -> EarlierSession:
        earlier = EarlierSession.load(self.database, ref, self.roi_names, self.folder.stimuli)
        self.observer.message(
            "info",
            f"continuing {earlier.ref}: {len(earlier.runs)} run(s) of its measurements join this session's",
        )
        return earlier

    def _last_model_of(self, ref: str) -> ModelVersionRow:
        """The last model version an earlier session of this database recorded."""
        with self.database.reader() as s:
            try:
                found = session_id(s, ref)
            except RecordNotFoundError as exc:
                raise SessionError(f"[model] start {ref}: {exc}") from None
            models = model_versions(s, found)
        if found == self._rec.session_id:
            raise SessionError(f"[model] start {ref} is this session; name an earlier one")
        if not models:
            raise SessionError(f"[model] start {ref}: that session recorded no model; name one that did")
        if not Path(models[-1].artifact_path).is_file():
            raise SessionError(
                f"[model] start {ref}: its last model's file {models[-1].artifact_path} is missing; restore "
                "that session's folder, or give the model file itself"
            )
        return models[-1]

    def _validate_start(self, run: RunRef) -> None:
        """How well the start model predicts the training run's measured ROI responses (an event)."""
        shown = self._measured_responses([run.number] if run.number in self.state.runs else [])
        if len(shown) < 3:
            return
        model = self._model_for(self._start_id)
        predicted = model.predict([self.folder.stimuli / stimulus.path for stimulus, _ in shown])
        labels = np.asarray(model.roi_labels_)
        measured = np.stack([values for _, values in shown])
        r = {
            roi: float(np.corrcoef(predicted[:, labels == roi].mean(1), measured[:, j])[0, 1])
            for j, roi in enumerate(self.roi_names)
        }
        self._event(
            "info",
            "model.validated",
            f"the start model (version {self._start_id}) predicts the {len(shown)} images of run "
            f"{run.number}: r by ROI " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()),
            r=r,
            n_images=len(shown),
        )

    def _current_model(self) -> Any:
        """The model the session is at: the one in memory, or its file (after a restart)."""
        return self._model_for(self.state.model_id)

    def _model_for(self, model_id: int | None) -> Any:
        """A recorded model version from its file, checked against its SHA-256 (kept if current)."""
        from stimulus.encoding import EncodingModel

        if self._loaded[0] == model_id and self._loaded[1] is not None:
            return self._loaded[1]
        if model_id is None:
            raise SessionError("no encoding model has been fitted in this session yet")
        with self.database.reader() as s:
            record = model_version(s, model_id)
        model = EncodingModel.load(
            record.artifact_path, expected_sha256=record.artifact_sha256, device=self.device
        )
        if model_id == self.state.model_id:
            self._loaded = (model_id, model)
        return model

    # -- scores -------------------------------------------------------------------------------------

    def _score_round(
        self, run: RunRef, model_id: int
    ) -> tuple[RoundScores, list[dict[str, Any]], list[tuple[int, int, dict[str, float]]]]:
        """The round's scores, as records for its end, and the predictions they were made from."""
        responses = self.state.runs[run.number]
        # One item per image and role (an image shown twice is averaged; a natural image that is the
        # control of two targets is two items), so statistics count images, not showings.
        items, measured_rows = average_by_item(responses.stimuli, responses.roi)
        model = self._model_for(model_id)
        predicted_voxels = model.predict([self.folder.stimuli / item.path for item in items])
        labels = np.asarray(model.roi_labels_)
        predicted = {roi: predicted_voxels[:, labels == roi].mean(1) for roi in self.roi_names}
        measured = {roi: measured_rows[:, j] for j, roi in enumerate(self.roi_names)}
        truth = None
        if responses.truth is not None:
            _, truth_rows = average_by_item(responses.stimuli, responses.truth)
            truth = {roi: truth_rows[:, j] for j, roi in enumerate(self.roi_names)}
        showings = showings_by_item(responses.stimuli, responses.roi)
        scores = score_round(items, predicted, measured, truth, showings=showings, roi_names=self.roi_names)
        records = [
            {"metric": v.metric.value, "value": v.value, "roi": v.roi, "model_version_id": model_id,
             "details": v.details}
            for v in scores.values
        ]  # fmt: skip
        with self.database.reader() as s:
            ids = stimulus_ids(s, (item.sha256 for item in items))
        by_stimulus = {
            ids[item.sha256]: {roi: float(predicted[roi][k]) for roi in self.roi_names}
            for k, item in enumerate(items)
        }
        return (
            scores,
            records,
            [(model_id, stimulus_id, values) for stimulus_id, values in by_stimulus.items()],
        )

    # -- records ------------------------------------------------------------------------------------

    def _event(
        self, level: str, code: str, message: str, *, run_id: int | None = None, **details: Any
    ) -> None:
        self.observer.message(level, message)
        if self.recorder is not None:
            self.recorder.record_event(
                EventLevel(level), "controller", code, message, run_id=run_id, details=details or None
            )


def _roi_medians(model: Any) -> dict[str, float]:
    labels = np.asarray(model.roi_labels_)
    return {
        str(roi): float(np.nanmedian(model.cv_r_[labels == roi])) for roi in dict.fromkeys(labels.tolist())
    }
