"""A session that continues an earlier one of the same subject: its measurements, its images, its model.

With ``[model] start = ["sub-01/ses-01"]`` naming an earlier session of the
same subject, on the same voxels (the same atlas, placed against the same
reference volume), a session does not only start from that session's last
model: it carries on its study.

- Its runs' measured responses join this session's as training data, so
  every refit is a fit on the old data and the new (no prior is needed).
- Its shown images, with their measured responses, are there for the
  round's strategy as if this session had shown them: the images that
  drove a target most on day 1 are refined on day 2, and the trust region
  each target earned carries over.
- Its training run's natural images are the rounds' natural controls when
  this session has no training run of its own.

The images are copied into this session's stimulus folder under the paths
the database records for them, so the session's folder holds everything
its report and its replay need, wherever the earlier folder goes later.
Earlier runs are numbered ``k + EARLIER`` here, before this session's own.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from db import Database
from db.base import RunKind, Status, write_atomic
from db.queries import session_info, session_runs, session_stimuli
from loop.config import parse_config
from loop.errors import SessionError
from loop.folder import RunResponses, SessionFolder

__all__ = ["EARLIER", "EarlierSession"]

EARLIER = -1000  # an earlier session's run k is run k + EARLIER in the session that continues it


@dataclass(frozen=True)
class EarlierSession:
    """What a session takes over from the earlier session it continues."""

    ref: str  # sub-X/ses-Y
    runs: dict[int, RunResponses]  # completed runs, numbered k + EARLIER
    training: int | None  # the number (here) of its training run, if it had one
    origins: dict[str, str]  # each synthesized image's natural ancestor (paths in the stimulus folder)

    @classmethod
    def load(cls, database: Database, ref: str, roi_names: list[str], stimuli: Path) -> EarlierSession:
        """Read session ``ref``'s completed runs and copy its images into the folder ``stimuli``."""
        with database.reader() as s:
            info = session_info(s, ref)
            rows = session_runs(s, info.id, status=Status.COMPLETED)
            recorded = session_stimuli(s, info.id)
        if info.config_toml is None:
            raise SessionError(f"[model] start {ref}: its session file was not recorded; give its model file")
        config = parse_config(tomllib.loads(info.config_toml), source=f"the session file of {ref}")
        folder = SessionFolder.of(config)
        runs = {}
        for row in rows:
            responses = folder.load_responses(folder.run(row.index), roi_names)
            responses.number = row.index + EARLIER
            runs[responses.number] = responses
        training = next((row.index + EARLIER for row in rows if row.kind == RunKind.TRAINING.value), None)
        origins = {
            r.path: str(r.synthesis["origin_file"])
            for r in recorded
            if r.synthesis and r.synthesis.get("origin_file")
        }
        shown = {s.path: s.sha256 for run in runs.values() for s in run.stimuli}
        for path, sha in shown.items():
            _copy(folder.stimuli / path, stimuli / path, sha, ref)
        # What the records point to besides: each image's natural ancestor and the start it was refined from
        # (an image made again today, to the byte, is recorded once: with day 1's start).
        keys = ("origin_file", "start_file")
        related = {str(r.synthesis[k]) for r in recorded if r.synthesis for k in keys if r.synthesis.get(k)}
        for path in related - set(shown):
            if (folder.stimuli / path).is_file():
                _copy(folder.stimuli / path, stimuli / path, None, ref)
        origins = {k: v for k, v in origins.items() if (stimuli / v).is_file()}
        return cls(ref=info.ref, runs=runs, training=training, origins=origins)


def _copy(source: Path, target: Path, sha256: str | None, ref: str) -> None:
    """Copy one image of the earlier session, checked against its recorded hash; kept if already there."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise SessionError(
            f"[model] start {ref}: its image {source} cannot be read ({exc.strerror or exc}); restore that "
            "session's folder, or start from its model file alone"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise SessionError(
            f"[model] start {ref}: its image {source} differs from the one it recorded (sha256 "
            f"{sha256[:12]}...); restore that session's folder, or start from its model file alone"
        )
    if target.is_file():
        if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
            return
        raise SessionError(
            f"[model] start {ref}: {target} is taken by another image in this session's folder; start the "
            "session in a new folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, data)
