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

from db import Database
from db.base import EventLevel, RunKind, write_atomic
from db.queries import (
    Reader,
    SessionInfo,
    measured_responses,
    predictions,
    roi_timeseries,
    run_trials,
    run_volumes,
    session_events,
    session_info,
    session_rounds,
    session_runs,
    session_scores,
)
from loop.config import parse_config
from loop.folder import SessionFolder
from loop.scoring import Metric
from loop.summary import session_outcome

__all__ = ["write_report"]

ROW_METRICS = (
    Metric.TARGET_PREDICTED,
    Metric.TARGET_MEASURED,
    Metric.TARGET_TRUE,
    Metric.DRIVE_VS_BEST,
    Metric.DRIVE_NATURAL_RANGE,
    Metric.TARGET_T,
    Metric.TARGET_P,
)


def write_report(database: Database, ref: str, out: Path) -> Path:
    """Write the report of session ``ref`` to ``out`` (atomically); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    with database.reader() as s:
        session = session_info(s, ref)
        parts = [_header(s, session), _scores(s, session.id), _stimuli(s, session), _scatter(s, session.id)]
        parts += [_runs(s, session.id), _events(s, session.id)]
    document = _PAGE.format(
        title=html.escape(f"cortexloop report: {parts[0][1]}"), body="\n".join(p[0] for p in parts)
    )
    write_atomic(out, document.encode())
    return out


# --- sections: each returns (html, title) -------------------------------------------------------


def _header(s: Reader, session: SessionInfo) -> tuple[str, str]:
    outcome = session_outcome(s, str(session.id))
    rows = "".join(
        f"<tr><td>{html.escape(c.roi)}</td><td>{c.target_mean:.2f} (n={c.n_target})</td>"
        f"<td>{c.nontarget_mean:.2f} (n={c.n_nontarget})</td><td>{c.t:.2f}</td><td>{c.p:.3g}</td>"
        f"<td>{c.cohens_d:.2f}</td><td>{'yes' if c.drives_target else 'no'}</td></tr>"
        for c in outcome.contrasts
    )
    drive = ", ".join(f"round {k}: {v:.2f}" for k, v in outcome.round_drive.items()) or "-"
    text = f"""<h1>{html.escape(session.ref)}</h1>
<p>{session.kind} session, {session.status}; started {session.started_at:%Y-%m-%d %H:%M:%S} UTC,
cortexloop {html.escape(session.cortexloop_version)}.</p>
<h2>Outcome</h2>
<p>{len(outcome.driven)} of {len(outcome.contrasts)} target ROIs respond more to the images made for them
than to the images made for the other targets (Welch's t over all rounds, p &lt; 0.05).
Mean measured drive by round (% signal change): {drive}.</p>
<table><tr><th>target</th><th>target images</th><th>non-target images</th><th>t</th><th>p</th>
<th>Cohen's d</th><th>driven</th></tr>{rows}</table>"""
    return text, session.ref


def _scores(s: Reader, session_id: int) -> tuple[str, str]:
    table: dict[tuple[int, str], dict[str, float]] = {}
    for score in session_scores(s, session_id):
        if score.metric in ROW_METRICS and score.round_index is not None and score.roi is not None:
            table.setdefault((score.round_index, score.roi), {})[score.metric] = score.value
    body = "".join(
        f"<tr><td>{index}</td><td>{html.escape(roi)}</td>"
        + "".join(f"<td>{_n(v.get(m))}</td>" for m in ROW_METRICS)
        + "</tr>"
        for (index, roi), v in table.items()
    )
    head = "".join(f"<th>{m.value.replace('_', ' ')}</th>" for m in ROW_METRICS)
    return f"<h2>Rounds</h2><table><tr><th>round</th><th>target</th>{head}</tr>{body}</table>", "scores"


def _stimulus_dir(session: SessionInfo) -> Path | None:
    """Where the session's images are, as its session file says (None when it cannot say)."""
    if not session.config_toml:
        return None
    try:
        config = parse_config(tomllib.loads(session.config_toml))
    except Exception:  # an old or hand-edited file: the report goes on without images
        return None
    return SessionFolder.of(config).stimuli


def _stimuli(s: Reader, session: SessionInfo) -> tuple[str, str]:
    folder = _stimulus_dir(session)
    groups: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for run in session_runs(s, session.id):
        if run.kind != RunKind.CLOSED_LOOP or run.round_index is None:
            continue
        trials = sorted(run_trials(s, run.id), key=lambda t: (t.target_roi or "", t.condition or ""))
        for t in trials:
            groups.setdefault((run.round_index, t.target_roi or "-"), []).append(
                (t.condition or "", t.stimulus_path)
            )
    if folder is None or not groups:
        return (
            "<h2>Images</h2><p>No images (no rounds, or the session file does not say where they are).</p>",
            "",
        )
    parts = ["<h2>Images</h2>"]
    for (index, target), items in sorted(groups.items()):
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


def _scatter(s: Reader, session_id: int) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    rounds = session_rounds(s, session_id)
    if not rounds:
        return "", ""
    runs = {run.round_index: run for run in session_runs(s, session_id) if run.round_index is not None}
    fig, axes = plt.subplots(1, len(rounds), figsize=(4 * len(rounds), 4), squeeze=False)
    for ax, record in zip(axes[0], rounds, strict=True):
        run = runs.get(record.index)
        predicted = (
            {(p.stimulus_id, p.roi): p.value for p in predictions(s, record.model_version_id)}
            if record.model_version_id is not None
            else {}
        )
        measured = measured_responses(s, session_id, run_id=run.id) if run is not None else []
        points: dict[str, list[tuple[float, float]]] = {}
        for row in measured:
            if (row.stimulus_id, row.roi) in predicted:
                points.setdefault(row.roi, []).append((predicted[row.stimulus_id, row.roi], row.value))
        for roi, pairs in points.items():
            xy = np.array(pairs)
            ax.scatter(xy[:, 0], xy[:, 1], s=10, label=roi)
        ax.set(title=f"round {record.index}", xlabel="predicted (% signal change)", ylabel="measured")
        ax.axline((0, 0), slope=1, color="grey", lw=0.5)
    axes[0][-1].legend(fontsize=7)
    return f"<h2>Predicted against measured</h2>{_figure(fig)}", ""


def _runs(s: Reader, session_id: int) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    parts = ["<h2>Runs</h2>"]
    for run in session_runs(s, session_id):
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
        top.set(ylabel="% signal change", title=f"run {run.index} ({run.kind}, {run.status})")
        top.legend(fontsize=7, ncol=len(series.roi_names))
        volumes = run_volumes(s, run.id)
        latency = [
            (v.index * run.tr_s, (v.processed_at - v.arrived_at).total_seconds() * 1e3)
            for v in volumes
            if v.arrived_at is not None and v.processed_at is not None
        ]
        if latency:
            middle.plot(*zip(*latency, strict=True), ".", ms=2)
        middle.set(ylabel="arrival to\nrecorded (ms)")
        fd = [
            (v.index * run.tr_s, v.framewise_displacement_mm)
            for v in volumes
            if v.framewise_displacement_mm is not None
        ]
        if fd:
            bottom.plot(*zip(*fd, strict=True), lw=0.8)
        bottom.set(ylabel="FD (mm)", xlabel="seconds from the first trigger")
        parts.append(_figure(fig))
    return "\n".join(parts), ""


def _events(s: Reader, session_id: int) -> tuple[str, str]:
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
