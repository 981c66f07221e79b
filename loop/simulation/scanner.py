"""The simulated scanner: triggers out, the presenter's onsets in, a virtual subject's volumes out at the TR.

A run goes as a real one does. The scanner waits for the presenter to arm,
sends trigger ``k`` at ``k * TR`` (on its clock: real time, or ``speed``
times faster), takes in the presenter's onset and offset events as they
come, and writes volume ``k`` into the export directory when its TR ends,
under a temporary name renamed into place (NIfTI, one file per volume) or
as single-slice DICOM files. The bridge's watcher reads them exactly as it
reads a real scanner's. Without a presenter, a run plan is presented by the
window-less run loop in-process, so a run can be made as fast as the CPU
allows (``speed=0``).

What the subject saw and how it responded is written next to the export
(``truth_dir``): per run, the presentations with every ROI's true response,
and the head motion; once, the ROI atlas (``rois.nii.gz`` + ``rois.tsv``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from pydicom.uid import generate_uid

from db.base import Clock, PendingFile, prepare_atomic, write_atomic
from loop.errors import SimulationError
from loop.simulation.bold import BoldRun
from loop.simulation.subject import ROI_NAMES, VirtualSubject
from scanner_bridge.writers import dicom_slice_files, nifti_bytes
from stimulus.images import resize_pixels
from stimulus.present import (
    PresenterEvent,
    RunLog,
    RunPlan,
    VirtualClock,
    VirtualDisplay,
    VirtualTriggers,
    present_run,
)
from stimulus.present.events import Armed, Offset, Onset

__all__ = ["RunRecord", "SimulatedScanner", "nifti_file_name", "run_files"]


def nifti_file_name(run: int, index: int) -> str:
    """Volume ``index`` (0-based) of run ``run`` as a NIfTI file: each run is a series of its own."""
    return f"run{run:02d}_vol_{index:05d}.nii"


def run_files(run: int, fmt: str) -> str:
    """A glob of run ``run``'s files in the export folder."""
    return f"run{run:02d}_vol_*.nii" if fmt == "nifti" else f"{run:03d}_*.dcm"


logger = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom")


class _Presenter(Protocol):
    """What the scanner needs of :class:`stimulus.present.channel.PresenterClient` (role ``scanner``)."""

    def trigger(self, index: int, scanner_time_s: float) -> None: ...

    def next_event(self, timeout_s: float) -> PresenterEvent | None: ...


@dataclasses.dataclass
class RunRecord:
    """What one simulated run did."""

    run: int
    run_id: str | None
    n_volumes: int
    files: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    written_at: dict[int, float] = dataclasses.field(default_factory=dict)  # index -> time.monotonic()
    triggered_at: dict[int, float] = dataclasses.field(default_factory=dict)  # index -> time.monotonic()
    presentations: int = 0
    truth: Path | None = None
    log: RunLog | None = None  # what was presented, when the scanner showed the plan itself


class SimulatedScanner:
    """A scanner that images a :class:`VirtualSubject`.

    Parameters
    ----------
    subject : VirtualSubject
    export_dir : Path
        Where volumes are written (the bridge watches it).
    tr_s : float
    clock : Clock
        Paces the run (``ScaledClock(speed)``, or a clock that jumps for speed 0).
    fmt : {"nifti", "dicom"}
    stimulus_dir : Path
        Where the presenter's stimulus paths point.
    truth_dir : Path, optional
        Where the ground truth of each run goes (default: ``<export_dir>-truth``).
    """

    def __init__(
        self,
        subject: VirtualSubject,
        export_dir: Path,
        *,
        tr_s: float,
        clock: Clock,
        fmt: str = "nifti",
        stimulus_dir: Path = Path("."),
        truth_dir: Path | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise SimulationError(f"volume format {fmt!r}; use one of {', '.join(FORMATS)}")
        if not tr_s > 0:
            raise SimulationError(f"the TR must be positive, got {tr_s}")
        self.subject, self.tr_s, self.clock, self.fmt = subject, tr_s, clock, fmt
        self.export_dir = Path(export_dir)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.stimulus_dir = Path(stimulus_dir)
        self.truth_dir = truth_dir or self.export_dir.with_name(self.export_dir.name + "-truth")
        self.truth_dir.mkdir(parents=True, exist_ok=True)
        subject.write_atlas(self.truth_dir)
        self._responses: dict[str, npt.NDArray[np.float64]] = {}  # stimulus sha256 -> voxel responses
        self._seen: dict[str, npt.NDArray[np.float64]] = {}  # this run's stimulus names -> voxel responses

    # -- what the subject sees ---------------------------------------------------------------------

    def responses_to(self, stimuli: list[str]) -> list[npt.NDArray[np.float64]]:
        """The subject's voxel responses to image files (relative to ``stimulus_dir``), cached by content."""
        digests, pixels = [], {}
        for name in stimuli:
            path = self.stimulus_dir / name
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SimulationError(
                    f"the subject cannot see {path}: {exc.strerror or exc}; "
                    "is --stimulus-dir the folder the presenter reads?"
                ) from exc
            digest = hashlib.sha256(data).hexdigest()
            digests.append(digest)
            if digest not in self._responses and digest not in pixels:
                try:
                    with Image.open(path) as image:
                        pixels[digest] = (
                            np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
                        )
                except (UnidentifiedImageError, OSError) as exc:
                    raise SimulationError(f"the subject cannot see {path}: not an image ({exc})") from exc
        if pixels:
            size = self.subject.config.image_size
            batch = np.stack(
                [resize_pixels(p, size, resample=Image.Resampling.BILINEAR) for p in pixels.values()]
            )
            for digest, row in zip(pixels, self.subject.voxel_responses(batch), strict=True):
                self._responses[digest] = row
        return [self._responses[d] for d in digests]

    # -- a run --------------------------------------------------------------------------------------

    def run(
        self,
        n_volumes: int | None = None,
        *,
        run: int = 1,
        presenter: _Presenter | None = None,
        plan: Any = None,
        seed: int | None = None,
        armed_timeout_s: float = 600.0,
        stop: threading.Event | None = None,
    ) -> RunRecord:
        """Acquire one run; with a ``presenter``, once it arms, else showing ``plan`` itself.

        ``n_volumes`` defaults to the plan's (as the presenter announces it when it arms).

        Each run of a session needs its own ``run`` number: it names the
        run's files (a new series) and seeds its noise (unless ``seed``).
        """
        if (presenter is None) == (plan is None):
            raise SimulationError("a simulated run needs a presenter to listen to, or a plan to show itself")
        shown: dict[int, int] = {}  # presenter trial -> presentation number
        if presenter is None:
            run_id, n_volumes = plan.run_id, n_volumes or plan.n_volumes
        else:
            armed = self._wait_armed(presenter, armed_timeout_s)
            run_id, n_volumes = armed.run_id, n_volumes or armed.n_volumes
            # The subject looks at every image before the run, so no onset waits for it (or for the disk).
            self._seen = dict(zip(armed.stimuli, self.responses_to(list(armed.stimuli)), strict=True))
        config = self.subject.config
        head = np.asarray(config.head_mm, dtype=np.float64)  # this day's position
        if config.run_shift_mm and run > 1:  # the first run is where the head begins; a later one moved
            head = head + np.random.default_rng([config.seed, run, 7]).normal(0, config.run_shift_mm, 3)
        bold = BoldRun(
            self.subject,
            self.tr_s,
            n_volumes,
            seed=run if seed is None else seed,
            start_mm=head if head.any() else None,
            rotation_deg=config.head_deg if any(config.head_deg) else None,
        )
        record = RunRecord(run=run, run_id=run_id, n_volumes=n_volumes)
        if plan is not None:
            record.log = self._present_plan(plan, bold)
        series_uid = generate_uid()
        start = self.clock.now()
        logger.info("simulated run %d (%s): %d volumes of %g s", run, record.run_id, n_volumes, self.tr_s)
        ready: list[PendingFile] = []  # the finished volume, under temporary names
        try:
            for k in range(n_volumes + 1):
                if stop is not None and stop.is_set():
                    break
                self.clock.sleep_until(start + k * self.tr_s)
                if ready:  # volume k - 1's TR has ended: put it in place, all at once
                    for pending in ready:
                        os.utime(pending.temporary)  # written now, as far as a watcher can tell
                        pending.commit()
                    record.files[k - 1] = [pending.path.name for pending in ready]
                    record.written_at[k - 1] = time.monotonic()
                    ready = []
                if k == n_volumes:
                    break
                if presenter is not None:
                    record.triggered_at[k] = time.monotonic()
                    presenter.trigger(k, k * self.tr_s)
                    self._take_events(presenter, bold, shown)
                # Volume k is the signal at k * TR: everything it needs has been shown by now.
                ready = self._prepare(bold.volume(), k, run, series_uid)
        finally:
            for pending in ready:  # a run stopped mid-TR leaves no half-made files behind
                pending.discard()
        record.presentations = len(bold.presentations)
        record.truth = self._write_truth(bold, record)
        return record

    def _present_plan(self, plan: RunPlan, bold: BoldRun) -> RunLog:
        """Show ``plan`` with the window-less run loop (nothing is drawn) and the subject watching."""
        clock = VirtualClock()
        events: list[PresenterEvent] = []
        images = {t.stimulus: np.zeros((1, 1, 3), np.uint8) for t in plan.trials}
        log = present_run(plan, VirtualDisplay(clock, history=0),
                          VirtualTriggers(clock, plan.tr_s, plan.n_volumes), clock, images=images,
                          on_event=events.append)  # fmt: skip
        onsets = [e for e in events if isinstance(e, Onset)]
        number = {e.trial: k for k, e in enumerate(onsets)}
        for event, response in zip(onsets, self.responses_to([e.stimulus for e in onsets]), strict=True):
            bold.present(event.actual_onset_s, event.planned_duration_s, event.stimulus, response)
        for offset in events:
            if isinstance(offset, Offset) and offset.trial in number:
                bold.set_duration(number[offset.trial], offset.actual_duration_s)
        return log

    def _wait_armed(self, presenter: _Presenter, timeout_s: float) -> Armed:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            event = presenter.next_event(remaining)
            if isinstance(event, Armed):
                return event
        raise SimulationError(f"the presenter did not arm a run within {timeout_s:g} s; send it a plan first")

    def _take_events(self, presenter: _Presenter, bold: BoldRun, shown: dict[int, int]) -> None:
        while (event := presenter.next_event(0)) is not None:
            if isinstance(event, Onset):
                name = event.stimulus
                response = self._seen[name] if name in self._seen else self.responses_to([name])[0]
                shown[event.trial] = bold.present(
                    event.actual_onset_s, event.planned_duration_s, name, response
                )
            elif isinstance(event, Offset) and event.trial in shown:
                bold.set_duration(shown[event.trial], event.actual_duration_s)

    # -- files --------------------------------------------------------------------------------------

    def _prepare(
        self, data: npt.NDArray[np.int16], index: int, run: int, series_uid: str
    ) -> list[PendingFile]:
        """Write a volume's file(s) under hidden temporary names (a watcher skips them), not in place yet."""
        affine = self.subject.affine
        if self.fmt == "nifti":
            files = [(nifti_file_name(run, index), nifti_bytes(data, affine, tr_s=self.tr_s))]
        else:
            files = dicom_slice_files(
                data, affine, acquisition=index + 1, tr_s=self.tr_s, series_uid=series_uid, series_number=run
            )
        return [prepare_atomic(self.export_dir / name, payload, sync=False) for name, payload in files]

    def _write_truth(self, bold: BoldRun, record: RunRecord) -> Path:
        voxels = {name: self.subject.roi_voxels(name) for name in ROI_NAMES}
        presentations = [
            {
                "onset_s": p.onset_s,
                "duration_s": p.duration_s,
                "stimulus": p.stimulus,
                "roi_responses": {name: float(p.responses[v].mean()) for name, v in voxels.items()},
            }
            for p in bold.presentations
        ]
        truth = {
            "subject": dataclasses.asdict(self.subject.config),
            "run": record.run,
            "run_id": record.run_id,
            "tr_s": self.tr_s,
            "n_volumes": record.n_volumes,
            "volume_time": "volume k is the signal at k * tr_s seconds after the first trigger",
            "presentations": presentations,
            "motion_mm": (bold.motion_voxels * self.subject.config.voxel_mm).tolist(),
            "rotation_deg": list(self.subject.config.head_deg),
            "files": {str(k): v for k, v in record.files.items()},
        }
        path = self.truth_dir / f"run{record.run:02d}_truth.json"
        write_atomic(path, json.dumps(truth, indent=1).encode())
        return path
