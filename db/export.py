"""Exporting a session as a BIDS dataset: the raw record, and cortexloop's derivatives beside it.

::

    OUT/dataset_description.json, README, participants.tsv (.json)
    OUT/stimuli/...                                  every image the session showed
    OUT/sub-S/ses-E/func/sub-S_ses-E_task-T_run-N_events.tsv (.json)
    OUT/sub-S/ses-E/func/sub-S_ses-E_task-T_run-N_bold.nii.gz (.json)   when its volume files are at hand
    OUT/derivatives/cortexloop/dataset_description.json
    OUT/derivatives/cortexloop/sub-S/ses-E/func/..._desc-roi_timeseries.tsv       ROI means per volume
    OUT/derivatives/cortexloop/sub-S/ses-E/func/..._desc-motion_timeseries.tsv    framewise displacement
    OUT/derivatives/cortexloop/sub-S/ses-E/func/..._desc-singletrial_responses.tsv  trial x ROI responses
    OUT/derivatives/cortexloop/sub-S/ses-E/sub-S_ses-E_predictions.tsv, _models.tsv, _stimuli.tsv, _log.tsv

The raw part is what the BIDS validator checks (``bids-validator OUT``):
events with their stimuli, and the BOLD runs assembled from the volume files
the session recorded (index by index; a volume that never arrived is a
volume of zeros, listed in the sidecar), NIfTI or, with the bridge's
readers, DICOM (single slices, mosaics, enhanced multi-frame). Everything cortexloop computed is
a derivative (BIDS derivatives: a dataset of its own under ``derivatives/``).
Several sessions export into one folder as one dataset.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from db.base import (
    TASK_DESCRIPTIONS,
    TASKS,
    BidsEvent,
    attention_events,
    trial_event,
    write_atomic,
    write_events,
    write_json,
    write_tsv,
)
from db.database import Database
from db.queries import (
    Reader,
    find_session,
    measured_responses,
    model_versions,
    predictions,
    roi_timeseries,
    run_trials,
    run_volumes,
    session_events,
    session_stimuli,
)
from db.schema import cortexloop_version

__all__ = ["BIDS_VERSION", "ReadVolume", "export_session"]

# A volume file, as a run's record names it -> (its data (x, y, z), its affine).
ReadVolume = Callable[[Path], tuple[Any, Any]]

logger = logging.getLogger(__name__)

BIDS_VERSION = "1.8.0"
PIPELINE = "cortexloop"


def export_session(
    database: Database,
    ref: str,
    out_dir: Path,
    *,
    stimuli: Path | None = None,
    locate: Callable[[str], Path] = Path,
    read_volume: ReadVolume | None = None,
) -> list[Path]:
    """Write session ``ref`` into the BIDS dataset at ``out_dir`` (made, or added to).

    ``stimuli`` is the folder the session's image paths are relative to (its
    ``stimuli/``), and ``locate`` maps a path the database recorded to where
    the file is now (a moved session folder); images and volume files that
    cannot be found are left out, and said so in the log. ``read_volume``
    reads a volume by the one file its record names (``scanner_bridge``'s
    :class:`~scanner_bridge.readers.VolumeFiles` reads DICOM too, slices
    included); without it only NIfTI volume files make a BOLD file.

    Returns
    -------
    list of Path
        Every file written, in the order written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    derived = out_dir / "derivatives" / PIPELINE
    written: list[Path] = [*_dataset_files(out_dir, derived)]
    with database.reader() as s:
        sess = find_session(s, ref)
        subject, label = sess.subject.label, sess.label
        written += _participants(out_dir, subject)
        prefix = f"sub-{subject}_ses-{label}"
        func, derived_func = (
            root / f"sub-{subject}" / f"ses-{label}" / "func" for root in (out_dir, derived)
        )
        shown: dict[str, str] = {}  # recorded image path -> its file under OUT/stimuli
        attention = {e.run_index: e.details for e in session_events(s, sess.id) if e.code == "run.attention"}
        for run in sess.runs:
            task = TASKS[run.kind.value]
            stem = f"{prefix}_task-{task}_run-{run.index:02d}"
            trials = run_trials(s, run.id)
            for t in trials:
                shown.setdefault(t.stimulus_path, _stimulus_name(t.stimulus_path, stimuli))
            rows = [_event_row(t, shown[t.stimulus_path]) for t in trials]
            rows += _attention_rows(attention.get(run.index))
            written += write_events(func / f"{stem}_events.tsv", rows, {})
            written += _bold(s, run.id, run.tr_s, task, func / f"{stem}_bold.nii.gz", locate, read_volume)
            written += _run_derivatives(s, sess.id, run, derived_func / stem)
        written += _copy_stimuli(out_dir / "stimuli", shown, stimuli, locate)
        written += _session_derivatives(s, sess.id, derived / f"sub-{subject}" / f"ses-{label}" / prefix)
    logger.info("exported %d files to %s", len(written), out_dir)
    return written


def _dataset_files(out_dir: Path, derived: Path) -> list[Path]:
    generated = [{"Name": PIPELINE, "Version": cortexloop_version()}]
    raw = out_dir / "dataset_description.json"
    write_json(
        raw,
        {
            "Name": "cortexloop sessions",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": generated,
        },
    )
    readme = out_dir / "README"
    write_atomic(
        readme,
        b"Closed-loop fMRI sessions of the visual cortex recorded by cortexloop: per run, the events as the "
        b"presenter measured them, the stimuli shown, and the BOLD volumes as the scanner exported them. "
        b"cortexloop's own analysis (ROI time series, motion, single-trial responses, the encoding models' "
        b"predictions) is in derivatives/cortexloop.\n",
    )
    description = derived / "dataset_description.json"
    derived.mkdir(parents=True, exist_ok=True)
    write_json(
        description,
        {
            "Name": "cortexloop's real-time analysis",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": generated,
        },
    )
    return [raw, readme, description]


def _participants(out_dir: Path, subject: str) -> list[Path]:
    """``participants.tsv``, this subject added to those exported before."""
    path = out_dir / "participants.tsv"
    known = path.read_text().split("\n")[1:] if path.exists() else []
    ids = sorted({line.strip() for line in known if line.strip()} | {f"sub-{subject}"})
    write_tsv(path, ["participant_id"], ([i] for i in ids))
    write_json(path.with_suffix(".json"), {"participant_id": {"Description": "The subject's label"}})
    return [path, path.with_suffix(".json")]


def _stimulus_name(recorded: str, stimuli: Path | None) -> str:
    """Where an image goes under ``OUT/stimuli``: its path in the session's stimulus folder."""
    path = Path(recorded)
    if not path.is_absolute():
        return path.as_posix()
    if stimuli is not None and path.is_relative_to(stimuli):
        return path.relative_to(stimuli).as_posix()
    return f"other/{path.name}"


def _event_row(t: Any, stim_file: str) -> BidsEvent:
    return trial_event(
        planned_onset_s=t.planned_onset_s, planned_duration_s=t.planned_duration_s,
        actual_onset_s=t.actual_onset_s, actual_duration_s=t.actual_duration_s, trial_type=t.condition,
        stim_file=stim_file, stim_sha256=t.stimulus_sha256, stim_kind=t.stimulus_kind,
        target_roi=t.target_roi, dropped_frames=t.dropped_frames,
    )  # fmt: skip


def _attention_rows(details: dict[str, Any] | None) -> list[BidsEvent]:
    """The attention task's rows from the run's recorded score (absent before the task was recorded so)."""
    if not details or "fixation_changes_s" not in details:
        return []
    responses = [(str(key), float(t)) for key, t in details.get("responses", [])]
    return attention_events(
        [float(t) for t in details["fixation_changes_s"]], float(details["change_duration_s"]), responses
    )


def _copy_stimuli(
    folder: Path, shown: dict[str, str], stimuli: Path | None, locate: Callable[[str], Path]
) -> list[Path]:
    written, missing = [], []
    for recorded, name in sorted(shown.items()):
        source = locate(
            str(stimuli / recorded if stimuli is not None and not Path(recorded).is_absolute() else recorded)
        )
        if not source.is_file():
            missing.append(recorded)
            continue
        written.append(write_atomic(folder / name, source.read_bytes()))
    if missing:
        logger.warning(
            "%d image(s) not found, left out of stimuli/: %s", len(missing), ", ".join(missing[:5])
        )
    return written


def _nifti_volume(path: Path) -> tuple[Any, Any]:
    """A NIfTI volume file's (data, affine): what the export reads without the bridge's readers."""
    import nibabel as nib
    import numpy as np

    image: Any = nib.load(path)
    return np.asanyarray(image.dataobj), image.affine


def _bold(
    s: Reader,
    run_id: int,
    tr_s: float,
    task: str,
    path: Path,
    locate: Callable[[str], Path],
    read_volume: ReadVolume | None,
) -> list[Path]:
    """The run's volumes as one 4D NIfTI, when every received volume's file is at hand and readable."""
    import nibabel as nib
    import numpy as np

    volumes = run_volumes(s, run_id)
    files = {v.index: locate(v.file_path) for v in volumes if v.file_path}
    readable = read_volume is not None or all(f.name.endswith((".nii", ".nii.gz")) for f in files.values())
    if not files or not readable or not all(f.is_file() for f in files.values()):
        logger.info("run %s: its volume files are not at hand (or not NIfTI); no _bold.nii.gz", path.name)
        return []
    read = read_volume or _nifti_volume
    n = max(v.index for v in volumes) + 1
    data: Any = None
    for index, file in sorted(files.items()):
        try:
            values, affine = read(file)
        except (ValueError, OSError) as exc:  # the bridge's readers raise ValueErrors, named
            logger.warning(
                "run %s: volume %d (%s) cannot be read (%s); no _bold.nii.gz", path.name, index, file, exc
            )
            return []
        values = np.asarray(values)
        if data is None:
            first_affine = affine
            kind = values.dtype if values.dtype.kind in "iu" else np.dtype(np.float32)
            data = np.zeros((*values.shape[:3], n), dtype=kind)
        data[..., index] = values.reshape(data.shape[:3])
    nifti: Any = nib.Nifti1Image
    image = nifti(data, first_affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header["pixdim"][4] = tr_s
    write_atomic(path, gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))
    missing = sorted(set(range(n)) - set(files))
    write_json(
        path.with_name(path.name.replace(".nii.gz", ".json")),
        {
            "RepetitionTime": tr_s,
            "TaskName": task,
            "TaskDescription": TASK_DESCRIPTIONS[task],
            "MissingVolumes": missing,
        },
    )
    return [path, path.with_name(path.name.replace(".nii.gz", ".json"))]


def _run_derivatives(s: Reader, session_id: int, run: Any, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    ts = roi_timeseries(s, run.id)
    series = stem.with_name(f"{stem.name}_desc-roi_timeseries.tsv")
    write_tsv(
        series,
        ["volume", "status", *ts.roi_names],
        ([i, st, *vals] for i, st, vals in zip(ts.volume_index, ts.status, ts.values, strict=True)),
    )
    write_json(
        series.with_suffix(".json"),
        {
            "RepetitionTime": run.tr_s,
            "Description": "Mean BOLD signal of each ROI per volume; n/a where the volume never arrived",
            "Columns": ["volume", "status", *ts.roi_names],
            "RunKind": run.kind.value,
            "RunStatus": run.status.value,
        },
    )
    motion = stem.with_name(f"{stem.name}_desc-motion_timeseries.tsv")
    write_tsv(
        motion,
        ["volume", "status", "framewise_displacement"],
        ([v.index, v.status, v.framewise_displacement_mm] for v in run_volumes(s, run.id)),
    )
    write_json(
        motion.with_suffix(".json"),
        {
            "framewise_displacement": {
                "Description": "Framewise displacement (Power et al. 2012)",
                "Units": "mm",
            },
        },
    )
    responses = stem.with_name(f"{stem.name}_desc-singletrial_responses.tsv")
    rows = measured_responses(s, session_id, run_id=run.id)
    rois = list(dict.fromkeys(r.roi for r in rows))
    table: dict[int, dict[str, float]] = {}
    trials: dict[int, Any] = {}
    for r in rows:
        table.setdefault(r.trial_index, {})[r.roi] = r.value
        trials[r.trial_index] = r
    write_tsv(
        responses,
        ["trial", "trial_type", "target_roi", "stim_file", *rois],
        (
            [
                k,
                trials[k].condition,
                trials[k].target_roi,
                trials[k].stimulus_path,
                *(table[k].get(roi) for roi in rois),
            ]
            for k in sorted(table)
        ),
    )
    write_json(
        responses.with_suffix(".json"),
        {
            "Description": "Each trial's response per ROI: a least-squares-separate beta, % signal change",
        },
    )
    return [
        series,
        series.with_suffix(".json"),
        motion,
        motion.with_suffix(".json"),
        responses,
        responses.with_suffix(".json"),
    ]


def _session_derivatives(s: Reader, session_id: int, prefix: Path) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    models = model_versions(s, session_id)
    models_tsv = prefix.with_name(f"{prefix.name}_models.tsv")
    write_tsv(
        models_tsv,
        ["model", "parent", "backbone", "n_training_stimuli", "artifact", "artifact_sha256"],
        (
            (m.id, m.parent_id, m.backbone, m.n_training_stimuli, m.artifact_path, m.artifact_sha256)
            for m in models
        ),
    )
    images = session_stimuli(s, session_id)
    path_of = {r.id: r.path for r in images}
    predicted = prefix.with_name(f"{prefix.name}_predictions.tsv")
    write_tsv(
        predicted,
        ["model", "stim_file", "roi", "predicted"],
        ((m.id, path_of.get(p.stimulus_id), p.roi, p.value) for m in models for p in predictions(s, m.id)),
    )
    stimuli = prefix.with_name(f"{prefix.name}_stimuli.tsv")
    write_tsv(
        stimuli,
        ["sha256", "path", "kind", "target_roi", "seed", "n_presentations"],
        ((r.sha256, r.path, r.kind, r.target_roi, r.seed, r.n_presentations) for r in images),
    )
    log = prefix.with_name(f"{prefix.name}_log.tsv")
    write_tsv(
        log,
        ["time", "level", "source", "code", "run", "volume", "message"],
        (
            (e.at.isoformat(), e.level, e.source, e.code, e.run_index, e.volume_index, e.message)
            for e in session_events(s, session_id)
        ),
    )
    return [models_tsv, predicted, stimuli, log]
