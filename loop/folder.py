"""A session's output folder: what the controller keeps beside the database, in one layout.

The database holds every record; the folder holds what a row cannot and the
next step needs, each written whole before the record that refers to it::

    <output>/
        stimuli/                       the images (the presenter's folder, unless [scanner] stimulus_dir)
            natural/nat_000.png ...    the training run's natural images
            round01/... round02/...    each round's synthesized images
        plans/<label>.json             each run's plan, written before the run is recorded as begun
        runs/<label>_responses.npz     each completed run's single-trial responses (ROIs, model voxels)
        models/model-NN.pt             each encoding-model version (its SHA-256 is in the database)
    <truth>/runNN_truth.json           a simulation's ground truth, written by the simulated scanner

A run is called one thing in each place. Its **number** (1-based: run 1 is
the training run, run ``k + 1`` is round ``k``) is its identity in the
session; its **label** (``sub-01_ses-01_run-02``, the session's BIDS labels
and the number) names its plan and its files; its **BIDS name**
(``sub-01_ses-01_task-closedloop_run-02``, with the run's task) is the plan's
``run_id``, which names its events on the wire and the presenter's events
file; the database's key for it (``run_id`` in ``db``) stays between the
controller and the database.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from db.base import TASKS, RunKind, write_atomic
from loop.config import SessionConfig
from loop.errors import SessionError
from loop.plans import PlannedStimulus
from stimulus.errors import PlanError
from stimulus.present import RunPlan

__all__ = ["Relocation", "RunRef", "RunResponses", "SessionFolder"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RunRef:
    """A run of the session: its number and its label (see the module's docstring)."""

    number: int
    label: str
    bids: str  # the run's BIDS name, with its task: the plan's run_id
    round: int | None  # the round this run is (None for the training run)

    @property
    def description(self) -> str:
        """How the operator's console names it."""
        return "training run" if self.round is None else f"round {self.round}"


@dataclass
class RunResponses:
    """A completed run's single-trial responses, one row per trial in its plan's order."""

    number: int
    stimuli: list[PlannedStimulus]  # what each trial showed
    roi: Array  # (n_trials, n_rois) measured responses, percent signal change
    voxels: Array  # (n_trials, n_model_voxels)
    truth: Array | None = None  # (n_trials, n_rois) the virtual subject's true responses (simulation)


class SessionFolder:
    """The files of one session, by run and model version.

    Parameters
    ----------
    root : Path
        The session's output folder.
    stimuli : Path
        Where the images go (and where the presenter reads them).
    truth : Path or None
        Where a simulation's ground truth is (None in a scanner session).
    bids : tuple of (str, str)
        The session's subject and session labels, with or without their ``sub-``/``ses-`` prefixes.
    trained : bool
        Whether run 1 is a training run (a session started from a model may have none).
    """

    def __init__(
        self, root: Path, *, stimuli: Path, truth: Path | None, bids: tuple[str, str], trained: bool = True
    ) -> None:
        self.root, self.stimuli, self.truth, self.trained = root, stimuli, truth, trained
        subject, session = bids
        self._prefix = f"sub-{subject.removeprefix('sub-')}_ses-{session.removeprefix('ses-')}"

    @classmethod
    def of(cls, config: SessionConfig) -> SessionFolder:
        """The folder a session file describes (paths relative to the file)."""
        root = config.resolve(config.session.output)
        stimuli = config.scanner.stimulus_dir
        return cls(
            root,
            stimuli=config.resolve(stimuli) if stimuli else root / "stimuli",
            truth=config.resolve(config.simulation.truth) if config.simulation.truth else None,
            bids=(config.session.subject, config.session.session),
            trained=config.training.images > 0,
        )

    def run(self, number: int) -> RunRef:
        """Run ``number``: the training run first, when the session has one, then one run per round."""
        training = self.trained and number == 1
        task = TASKS[(RunKind.TRAINING if training else RunKind.CLOSED_LOOP).value]
        return RunRef(
            number,
            f"{self._prefix}_run-{number:02d}",
            f"{self._prefix}_task-{task}_run-{number:02d}",
            round=None if training else number - int(self.trained),
        )

    @property
    def reference_path(self) -> Path:
        """The session's reference volume: where the head was at its first volume."""
        return self.root / "reference.npz"

    # -- plans --------------------------------------------------------------------------------------

    def plan_path(self, run: RunRef) -> Path:
        return self.root / "plans" / f"{run.label}.json"

    def save_plan(self, run: RunRef, plan: RunPlan) -> None:
        write_atomic(self.plan_path(run), plan.to_json().encode())

    def load_plan(self, run: RunRef) -> RunPlan:
        """The plan a run was begun with; :class:`SessionError` if it cannot be read back."""
        path = self.plan_path(run)
        try:
            return RunPlan.from_json(path.read_bytes())
        except (OSError, PlanError) as exc:
            raise SessionError(
                f"{run.description} was begun with the plan {path}, which cannot be read back ({exc}); "
                "the session's output folder must be the one it was started with"
            ) from None

    # -- responses ----------------------------------------------------------------------------------

    def responses_path(self, run: RunRef) -> Path:
        return self.root / "runs" / f"{run.label}_responses.npz"

    def save_responses(self, run: RunRef, responses: RunResponses, roi_names: list[str]) -> None:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            roi=responses.roi,
            voxels=responses.voxels,
            truth=responses.truth if responses.truth is not None else np.zeros((0, 0)),
            stimuli=np.array(
                [json.dumps([s.path, s.sha256, s.condition, s.target_roi]) for s in responses.stimuli]
            ),
            roi_names=np.array(roi_names),
        )
        write_atomic(self.responses_path(run), buffer.getvalue())

    def load_responses(self, run: RunRef, roi_names: list[str]) -> RunResponses:
        """A completed run's responses; :class:`SessionError` if unreadable or of another atlas."""
        path = self.responses_path(run)
        try:
            data = np.load(path)
            stored = [str(n) for n in data["roi_names"]]
            stimuli = [PlannedStimulus(*json.loads(str(s))) for s in data["stimuli"]]
            roi, voxels, truth = data["roi"], data["voxels"], data["truth"]
        except (OSError, ValueError, KeyError) as exc:
            raise SessionError(
                f"run {run.number} is recorded as complete but its responses file {path} cannot be read "
                f"({exc}); the session's output folder must be the one it was started with"
            ) from None
        if stored != roi_names:
            raise SessionError(
                f"{path} holds the responses of ROIs {', '.join(stored)}; this session's atlas has "
                f"{', '.join(roi_names)}: the atlas changed since the session started"
            )
        return RunResponses(run.number, stimuli, roi, voxels, truth if truth.size else None)

    # -- models -------------------------------------------------------------------------------------

    def new_model_path(self) -> Path:
        """Where the next encoding-model version goes (``model-NN.pt``, numbered after those there)."""
        models = self.root / "models"
        version = len(list(models.glob("model-*.pt"))) + 1 if models.is_dir() else 1
        return models / f"model-{version:02d}.pt"

    # -- a simulation's ground truth ----------------------------------------------------------------

    def read_truth(self, run: RunRef, roi_names: list[str], n_trials: int) -> Array:
        """(n_trials, n_rois) true responses of each trial of ``run``; :class:`SessionError` if unreadable."""
        if self.truth is None:
            raise SessionError("this session has no ground truth ([simulation] truth is empty)")
        path = self.truth / f"run{run.number:02d}_truth.json"
        try:
            shown = json.loads(path.read_text())["presentations"]
            if len(shown) != n_trials:
                raise ValueError(f"{len(shown)} presentations for the plan's {n_trials} trials")
            return np.array([[p["roi_responses"][name] for name in roi_names] for p in shown], dtype=float)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SessionError(f"no ground truth for run {run.number} ({path}): {exc}") from None


@dataclass(frozen=True)
class Relocation:
    """Where a recorded session's files are now, when its folder has moved since (or was archived).

    The database records the paths the session wrote, ``recorded`` the
    session folder among them. A path that no longer exists but lies inside
    ``recorded`` is looked for at the same place inside ``actual``.
    """

    recorded: Path | None = None
    actual: Path | None = None

    def path(self, recorded_path: str | Path) -> Path:
        path = Path(recorded_path)
        if self.recorded is None or self.actual is None or self.actual == self.recorded:
            return path
        try:
            moved = self.actual / path.relative_to(self.recorded)
        except ValueError:  # outside the session folder (a shared stimulus folder, an atlas elsewhere)
            return path
        # The folder where it is now first: a copy resumed elsewhere wrote its later files there only.
        return moved if moved.exists() or not path.exists() else path

    def stimuli(self, config_toml: str | None) -> Path | None:
        """Where the session's images are now (None when its session file cannot say)."""
        if not config_toml:
            return None
        import tomllib

        from loop.config import parse_config

        try:
            config = parse_config(tomllib.loads(config_toml))
        except Exception:  # an old or hand-edited session file: nothing to say
            return None
        return self.path(SessionFolder.of(config).stimuli.absolute())

    @classmethod
    def find(cls, config_toml: str | None, *, database_file: Path | None, folder: Path | None) -> Relocation:
        """From the session file the database keeps: ``folder`` if given, else beside ``database_file``.

        A simulated or scanner session keeps its database and its folder in a
        fixed relation (the database inside the folder, or beside it); so the
        database file, wherever it is now, says where the folder is now.
        """
        if not config_toml:
            return cls(None, folder)
        import tomllib

        from loop.config import SessionConfig, SessionSection

        try:  # only [session] says where things are; the rest may be another cortexloop version's
            table = tomllib.loads(config_toml).get("session", {})
            default = SessionSection()
            output = str(table.get("output", default.output))
            database = str(table.get("database", default.database))
            config = SessionConfig(session=SessionSection(output=output, database=database), source="<text>")
        except (tomllib.TOMLDecodeError, AttributeError):  # a hand-edited session file: nothing to say
            return cls(None, folder)
        recorded = config.resolve(config.session.output).absolute()
        if folder is not None or recorded.exists():
            return cls(recorded, folder or recorded)
        recorded_db = config.database_target
        if database_file is None or not isinstance(recorded_db, Path) or not recorded_db.is_absolute():
            return cls(recorded, None)
        try:
            inside = recorded.relative_to(recorded_db.parent)
        except ValueError:
            return cls(recorded, None)
        return cls(recorded, (database_file.absolute().parent / inside))
