"""Run plans: what the presenter shows, when, checked before the run is armed.

A plan lists its trials (image file and SHA-256, onset and duration in
seconds from the run's first trigger, condition and target ROI), the
fixation point and its colour-change task, the TR and the run's length. It
travels as JSON from the controller to the presenter; unknown keys are an
error, not silently ignored. :meth:`RunPlan.load_images` reads and checks
every image before the first trigger, and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from stimulus.errors import PlanError

__all__ = ["FixationSettings", "PlannedTrial", "RunPlan"]


@dataclass(frozen=True, kw_only=True)
class PlannedTrial:
    """One image on screen, timed from the run's first trigger."""

    stimulus: str
    sha256: str
    onset_s: float
    duration_s: float
    condition: str | None = None
    target_roi: str | None = None


@dataclass(frozen=True, kw_only=True)
class FixationSettings:
    """The fixation point, and the attention task that changes its colour at random times.

    Colours are RGB on -1..1 (PsychoPy's ``rgb`` space).
    """

    size_deg: float = 0.3
    colour: tuple[float, float, float] = (1.0, -1.0, -1.0)
    task: bool = False
    change_colour: tuple[float, float, float] = (-1.0, -1.0, 1.0)
    changes_per_minute: float = 6.0
    change_duration_s: float = 0.5
    response_keys: tuple[str, ...] = ("1", "2")
    response_window_s: tuple[float, float] = (0.15, 1.5)  # a press this long after a change is a hit


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """A run: trials in order of onset, the fixation settings, the TR and the number of volumes."""

    run_id: str
    tr_s: float
    n_volumes: int
    trials: tuple[PlannedTrial, ...]
    fixation: FixationSettings = field(default_factory=FixationSettings)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    size_deg: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.tr_s > 0 or self.n_volumes < 1:
            problems.append(f"tr_s ({self.tr_s}) and n_volumes ({self.n_volumes}) must be positive")
        previous_end = 0.0
        for k, trial in enumerate(self.trials):
            if trial.onset_s < 0 or not trial.duration_s > 0:
                problems.append(
                    f"trial {k}: onset {trial.onset_s} s must be >= 0 and duration {trial.duration_s} s > 0"
                )
            if trial.onset_s < previous_end - 1e-9:
                problems.append(
                    f"trial {k} starts at {trial.onset_s} s, before trial {k - 1} ends at {previous_end} s; "
                    "trials must be in order and must not overlap"
                )
            previous_end = trial.onset_s + trial.duration_s
        if previous_end > self.duration_s + 1e-9:
            problems.append(
                f"the last trial ends at {previous_end} s, after the run's {self.n_volumes} volumes "
                f"of {self.tr_s} s ({self.duration_s} s); plan more volumes"
            )
        if problems:
            raise PlanError(f"run plan {self.run_id!r} is not valid: " + "; ".join(problems))

    @property
    def duration_s(self) -> float:
        return self.tr_s * self.n_volumes

    # -- JSON -------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"run plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> RunPlan:
        if not isinstance(data, dict):
            raise PlanError("run plan must be a JSON object")
        try:
            fixation = _build(FixationSettings, data.get("fixation", {}), "fixation")
            trials = tuple(
                _build(PlannedTrial, t, f"trials[{k}]") for k, t in enumerate(data.get("trials", []))
            )
            rest = {k: v for k, v in data.items() if k not in ("fixation", "trials")}
            plan: RunPlan = _build(cls, {**rest, "fixation": fixation, "trials": trials}, "run plan")
            return plan
        except TypeError as exc:
            raise PlanError(f"run plan has a value of the wrong type: {exc}") from None

    # -- images -----------------------------------------------------------------------------------

    def load_images(self, root: Path | None = None) -> dict[str, npt.NDArray[np.uint8]]:
        """Read every distinct image (RGB, uint8) and check its SHA-256, before the run is armed.

        Paths are relative to ``root`` unless absolute. All problems are
        reported together in one :class:`PlanError`, each naming its file.
        """
        images: dict[str, npt.NDArray[np.uint8]] = {}
        problems = []
        for trial in self.trials:
            if trial.stimulus in images:
                continue
            path = Path(trial.stimulus) if root is None else root / trial.stimulus
            try:
                data = path.read_bytes()
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest != trial.sha256.lower():
                problems.append(
                    f"{path}: sha256 {digest[:12]}... differs from the plan's {trial.sha256[:12]}..."
                )
                continue
            try:
                with Image.open(path) as image:
                    images[trial.stimulus] = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                problems.append(f"{path}: cannot be decoded ({exc})")
        if problems:
            raise PlanError(
                f"run {self.run_id!r} cannot be armed; fix these and send the plan again: "
                + "; ".join(problems)
            )
        return images


def _build(kind: type[Any], values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise PlanError(f"{where} must be a JSON object")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PlanError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**converted)
