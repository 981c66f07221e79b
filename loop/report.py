"""A session's report: one self-contained HTML file (figures and images inlined) from its database.

It holds, in order: the session and its outcome (target against non-target
images over all rounds), the score table of every round, the images shown
in each round by target, predicted against measured responses, every run's
ROI time courses with the onsets, each volume's processing latency and
framewise displacement, and the warnings and errors of the event log.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from db import Database
from db.base import EventLevel, ResponseMethod, write_atomic
from db.models import MeasuredResponse, Prediction, Presentation, Roi, Round, Run, Score, Stimulus, Volume
from db.queries import find_session, roi_timeseries, run_trials, session_events
from loop.config import SessionConfig, parse_config
from loop.summary import session_outcome

__all__ = ["write_report"]

ROW_METRICS = (
    "target_predicted",
    "target_measured",
    "target_true",
    "drive_vs_best",
    "drive_natural_range",
    "target_t",
    "target_p",
)


def write_report(database: Database, ref: str, out: Path) -> Path:
    """Write the report of session ``ref`` to ``out`` (atomically); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    with database.reader() as s:
        session = find_session(s, ref)
        parts = [_header(s, session), _scores(s, session.id), _stimuli(s, session), _scatter(s, session.id)]
        parts += [_runs(s, session.id), _events(s, session.id)]
    document = _PAGE.format(
        title=html.escape(f"cortexloop report: {parts[0][1]}"), body="\n".join(p[0] for p in parts)
    )
    write_atomic(out, document.encode())
    return out


# --- sections: each returns (html, title) -------------------------------------------------------


def _header(s: OrmSession, session: Any) -> tuple[str, str]:
    ref = f"sub-{session.subject.label}/ses-{session.label}"
    outcome = session_outcome(s, str(session.id))
    rows = "".join(
        f"<tr><td>{c.roi}</td><td>{c.target_mean:.2f} (n={c.n_target})</td><td>{c.nontarget_mean:.2f} "
        f"(n={c.n_nontarget})</td><td>{c.t:.2f}</td><td>{c.p:.3g}</td><td>{c.cohens_d:.2f}</td>"
        f"<td>{'yes' if c.drives_target else 'no'}</td></tr>"
        for c in outcome.contrasts
    )
    drive = ", ".join(f"round {k}: {v:.2f}" for k, v in outcome.round_drive.items()) or "-"
    text = f"""<h1>{html.escape(ref)}</h1>
<p>{session.kind.value} session, {session.status.value}; started {session.started_at:%Y-%m-%d %H:%M:%S} UTC,
cortexloop {html.escape(session.cortexloop_version)}.</p>
<h2>Outcome</h2>
<p>{len(outcome.driven)} of {len(outcome.contrasts)} target ROIs respond more to the images made for them
than to the images made for the other targets (Welch's t over all rounds, p &lt; 0.05).
Mean measured drive by round (% signal change): {drive}.</p>
<table><tr><th>target</th><th>target images</th><th>non-target images</th><th>t</th><th>p</th>
<th>Cohen's d</th><th>driven</th></tr>{rows}</table>"""
    return text, ref


def _scores(s: OrmSession, session_id: int) -> tuple[str, str]:
    rows = s.execute(
        select(Round.index, Roi.name, Score.metric, Score.value)
        .join(Round, Round.id == Score.round_id)
        .join(Roi, Roi.id == Score.roi_id)
        .where(Score.session_id == session_id, Score.metric.in_(ROW_METRICS))
        .order_by(Round.index, Score.id)
    ).all()
    table: dict[tuple[int, str], dict[str, float]] = {}
    for index, roi, metric, value in rows:
        table.setdefault((index, roi), {})[metric] = value
    body = "".join(
        f"<tr><td>{index}</td><td>{roi}</td>"
        + "".join(f"<td>{_n(v.get(m))}</td>" for m in ROW_METRICS)
        + "</tr>"
        for (index, roi), v in table.items()
    )
    head = "".join(f"<th>{m.replace('_', ' ')}</th>" for m in ROW_METRICS)
    return f"<h2>Rounds</h2><table><tr><th>round</th><th>target</th>{head}</tr>{body}</table>", "scores"


def _stimulus_dir(session: Any) -> Path | None:
    if not session.config_toml:
        return None
    try:
        config = parse_config(tomllib.loads(session.config_toml))
    except Exception:  # an old or hand-edited file: the report goes on without images
        return None
    return _stimuli_of(config)


def _stimuli_of(config: SessionConfig) -> Path:
    return (
        Path(config.scanner.stimulus_dir)
        if config.scanner.stimulus_dir
        else Path(config.session.output) / "stimuli"
    )


def _stimuli(s: OrmSession, session: Any) -> tuple[str, str]:
    folder = _stimulus_dir(session)
    rows = s.execute(
        select(Round.index, Presentation.condition, Presentation.target_roi, Stimulus.path)
        .join(Run, Run.round_id == Round.id)
        .join(Presentation, Presentation.run_id == Run.id)
        .join(Stimulus, Stimulus.id == Presentation.stimulus_id)
        .where(Round.session_id == session.id)
        .order_by(Round.index, Presentation.target_roi, Presentation.condition)
    ).all()
    if folder is None or not rows:
        return (
            "<h2>Images</h2><p>No images (no rounds, or the session file does not say where they are).</p>",
            "",
        )
    groups: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for index, condition, target, path in rows:
        groups.setdefault((index, target or "-"), []).append((condition or "", path))
    parts = ["<h2>Images</h2>"]
    for (index, target), items in groups.items():
        seen = dict.fromkeys(items)
        images = "".join(
            f"<figure>{_thumbnail(folder / path)}<figcaption>{html.escape(condition)}</figcaption></figure>"
            for condition, path in seen
        )
        parts.append(f"<h3>round {index}, {html.escape(target)}</h3><div class=strip>{images}</div>")
    return "\n".join(parts), ""


def _thumbnail(path: Path, size: int = 96) -> str:
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
    except OSError:
        return f"<span>{html.escape(path.name)} (gone)</span>"
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _scatter(s: OrmSession, session_id: int) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    rounds = (
        s.execute(select(Round).where(Round.session_id == session_id).order_by(Round.index)).scalars().all()
    )
    if not rounds:
        return "", ""
    fig, axes = plt.subplots(1, len(rounds), figsize=(4 * len(rounds), 4), squeeze=False)
    for ax, record in zip(axes[0], rounds, strict=True):
        rows = s.execute(
            select(Roi.name, Prediction.value, MeasuredResponse.value)
            .select_from(Presentation)
            .join(Run, Run.id == Presentation.run_id)
            .join(MeasuredResponse, MeasuredResponse.presentation_id == Presentation.id)
            .join(Roi, Roi.id == MeasuredResponse.roi_id)
            .join(
                Prediction,
                (Prediction.stimulus_id == Presentation.stimulus_id)
                & (Prediction.roi_id == MeasuredResponse.roi_id)
                & (Prediction.model_version_id == record.model_version_id),
            )
            .where(Run.round_id == record.id, MeasuredResponse.method == ResponseMethod.LSS)
        ).all()
        for roi in dict.fromkeys(r[0] for r in rows):
            points = np.array([(p, m) for name, p, m in rows if name == roi])
            ax.scatter(points[:, 0], points[:, 1], s=10, label=roi)
        ax.set(title=f"round {record.index}", xlabel="predicted (% signal change)", ylabel="measured")
        ax.axline((0, 0), slope=1, color="grey", lw=0.5)
    axes[0][-1].legend(fontsize=7)
    return f"<h2>Predicted against measured</h2>{_figure(fig)}", ""


def _runs(s: OrmSession, session_id: int) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    parts = ["<h2>Runs</h2>"]
    for run in s.execute(select(Run).where(Run.session_id == session_id).order_by(Run.index)).scalars():
        series = roi_timeseries(s, run.id)
        if not series.volume_index:
            continue
        fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(11, 7), sharex=True, height_ratios=(3, 1, 1))
        t = np.array(series.volume_index) * run.tr_s
        values = np.array([[np.nan if v is None else v for v in row] for row in series.values], dtype=float)
        baseline = np.nanmean(values, 0)
        for j, name in enumerate(series.roi_names):
            top.plot(t, 100 * (values[:, j] / baseline[j] - 1), lw=0.8, label=name)
        for trial in run_trials(s, run.id):
            if trial.actual_onset_s is not None:
                top.axvline(trial.actual_onset_s, color="grey", lw=0.3)
        top.set(ylabel="% signal change", title=f"run {run.index} ({run.kind.value}, {run.status.value})")
        top.legend(fontsize=7, ncol=len(series.roi_names))
        volumes = s.execute(
            select(Volume.index, Volume.arrived_at, Volume.processed_at, Volume.framewise_displacement_mm)
            .where(Volume.run_id == run.id)
            .order_by(Volume.index)
        ).all()
        latency = [
            (v[0] * run.tr_s, (v[2] - v[1]).total_seconds() * 1e3)
            for v in volumes
            if v[1] is not None and v[2] is not None
        ]
        if latency:
            middle.plot(*zip(*latency, strict=True), ".", ms=2)
        middle.set(ylabel="arrival to\nrecorded (ms)")
        fd = [(v[0] * run.tr_s, v[3]) for v in volumes if v[3] is not None]
        if fd:
            bottom.plot(*zip(*fd, strict=True), lw=0.8)
        bottom.set(ylabel="FD (mm)", xlabel="seconds from the first trigger")
        parts.append(_figure(fig))
    return "\n".join(parts), ""


def _events(s: OrmSession, session_id: int) -> tuple[str, str]:
    rows = [e for e in session_events(s, session_id) if e.level != EventLevel.INFO.value]
    body = "".join(
        f"<tr><td>{e.at:%H:%M:%S}</td><td>{e.level}</td><td>{html.escape(e.source)}</td>"
        f"<td>{html.escape(e.message)}</td></tr>"
        for e in rows
    )
    return (
        f"<h2>Warnings and errors</h2><table>{body}</table>"
        if rows
        else "<h2>Warnings and errors</h2><p>None.</p>"
    ), ""


def _figure(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f'<img class=figure src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _n(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; }}
.strip {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; text-align: center; font-size: 11px; }}
img.figure {{ max-width: 100%; }}
</style></head><body>
{body}
</body></html>
"""
