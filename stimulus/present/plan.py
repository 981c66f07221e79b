"""Run plans: what the presenter shows, when, checked before the run is armed.

A plan lists its trials (image file and SHA-256, onset and duration in
seconds from the run's first trigger, condition and target ROI), the
fixation point and its colour-change task, the TR and the run's length. It
travels as JSON from the controller to the presenter, which trusts nothing
in it: every field is checked for its type (numbers finite), its bounds and,
for what reaches the file system, its form (:data:`RUN_ID` for the run id,
which names the events file; stimuli are relative paths that must stay
inside the stimulus folder). Unknown keys are an error, not silently
ignored. :meth:`RunPlan.load_images` reads and checks every image before
the first trigger, and reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from db.base import ProtocolError, read_regular
from db.base.checked import from_wire
from stimulus.errors import PlanError

__all__ = ["RUN_ID", "FixationSettings", "PlannedTrial", "RunPlan"]

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")  # letters, digits, - and _: a safe file name
SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")
MAX_TR_S = 60.0
MAX_VOLUMES = 100_000  # more than a day at a TR of 1 s
MAX_TRIALS = 100_000
MAX_IMAGE_BYTES = 64 << 20  # one stimulus file


@dataclass(frozen=True, kw_only=True)
class PlannedTrial:
    """One image on screen, timed from the run's first trigger."""

    stimulus: str
    sha256: str
    onset_s: float
    duration_s: float
    condition: str | None = None
    target_roi: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with this trial on its own (timing against the others is the plan's)."""
        problems = []
        if not (math.isfinite(self.onset_s) and math.isfinite(self.duration_s)):
            problems.append(f"onset {self.onset_s} and duration {self.duration_s} must be finite numbers")
        elif self.onset_s < 0 or not self.duration_s > 0:
            problems.append(f"onset {self.onset_s} s must be >= 0 and duration {self.duration_s} s > 0")
        path = Path(self.stimulus)
        if not self.stimulus or path.is_absolute() or ".." in path.parts or "\x00" in self.stimulus:
            problems.append(
                f"stimulus {self.stimulus!r:.80} must be a path relative to the stimulus folder, without '..'"
            )
        if not SHA256.match(self.sha256):
            problems.append(f"sha256 {self.sha256!r:.80} is not 64 hex digits")
        return problems


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

    def problems(self) -> list[str]:
        problems = []
        numbers = (self.size_deg, self.changes_per_minute, self.change_duration_s, *self.response_window_s)
        colours = (*self.colour, *self.change_colour)
        if not all(math.isfinite(x) for x in (*numbers, *colours)):
            return ["fixation: every number must be finite"]
        if not 0 < self.size_deg <= 10:
            problems.append(f"fixation size_deg {self.size_deg} must be in (0, 10]")
        if not all(-1 <= c <= 1 for c in colours):
            problems.append("fixation colours must be RGB on -1..1")
        if not 0 <= self.changes_per_minute <= 600 or not 0 < self.change_duration_s <= 10:
            problems.append(
                f"fixation changes_per_minute {self.changes_per_minute} must be in [0, 600] and "
                f"change_duration_s {self.change_duration_s} in (0, 10]"
            )
        low, high = self.response_window_s
        if not 0 <= low < high <= 60:
            problems.append(f"fixation response_window_s {self.response_window_s} must rise within 0..60 s")
        return problems


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
        if not RUN_ID.match(self.run_id):
            problems.append(
                f"run_id {self.run_id!r:.80} must be letters, digits, '-' and '_' (it names the events file)"
            )
        if not (math.isfinite(self.tr_s) and 0 < self.tr_s <= MAX_TR_S):
            problems.append(f"tr_s ({self.tr_s}) must be a number of seconds in (0, {MAX_TR_S:g}]")
        if not 1 <= self.n_volumes <= MAX_VOLUMES:
            problems.append(f"n_volumes ({self.n_volumes}) must be in 1..{MAX_VOLUMES}")
        if len(self.trials) > MAX_TRIALS:
            problems.append(f"{len(self.trials)} trials; at most {MAX_TRIALS}")
        if not (math.isfinite(self.size_deg) and 0 < self.size_deg <= 180):
            problems.append(f"size_deg ({self.size_deg}) must be in (0, 180]")
        if not all(math.isfinite(c) and -1 <= c <= 1 for c in self.background):
            problems.append("background must be RGB on -1..1")
        problems += self.fixation.problems()
        if problems:  # timing below needs sane numbers
            raise PlanError(f"run plan {self.run_id!r:.80} is not valid: " + "; ".join(problems))
        previous_end = 0.0
        for k, trial in enumerate(self.trials):
            problems += [f"trial {k}: {problem}" for problem in trial.problems()]
            if not (math.isfinite(trial.onset_s) and math.isfinite(trial.duration_s)):
                continue
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
            raise PlanError(f"run plan {self.run_id!r} is not valid: " + "; ".join(problems[:20]))

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
        """A plan from its JSON object: every field of the right type, finite and in bounds.

        Raises
        ------
        PlanError
            Naming the first field that is missing, of the wrong type or unknown, or every
            problem of the plan's values.
        """
        try:
            return from_wire(cls, data, what="run plan", strict=True)
        except ProtocolError as exc:
            if isinstance(exc.__cause__, PlanError):  # the plan's own checks, raised as they are
                raise exc.__cause__ from None
            raise PlanError(exc.detail) from None

    # -- images -----------------------------------------------------------------------------------

    def load_images(self, root: Path | None = None) -> dict[str, npt.NDArray[np.uint8]]:
        """Read every distinct image (RGB, uint8) and check its SHA-256, before the run is armed.

        Paths are relative to ``root`` (default: the working folder) and must
        resolve inside it, through any symbolic links; only regular files are
        read. All problems are reported together in one :class:`PlanError`,
        each naming its file (and never anything of a file's contents).
        """
        images: dict[str, npt.NDArray[np.uint8]] = {}
        problems = []
        folder = (root or Path.cwd()).resolve()
        checked: set[str] = set()
        for trial in self.trials:
            if trial.stimulus in checked:
                continue
            checked.add(trial.stimulus)
            path = (folder / trial.stimulus).resolve()
            if not path.is_relative_to(folder):
                problems.append(f"{trial.stimulus}: resolves outside the stimulus folder {folder}")
                continue
            try:
                data = read_regular(path, max_bytes=MAX_IMAGE_BYTES)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
                continue
            if hashlib.sha256(data).hexdigest() != trial.sha256.lower():
                problems.append(f"{path}: its contents differ from the plan's sha256 {trial.sha256[:12]}...")
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:  # the bytes checked, not the file again
                    images[trial.stimulus] = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
                problems.append(f"{path}: cannot be decoded ({exc})")
        if problems:
            raise PlanError(
                f"run {self.run_id!r} cannot be armed; fix these and send the plan again: "
                + "; ".join(problems)
            )
        return images
