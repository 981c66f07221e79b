"""A session's report: one self-contained HTML file (figures and images inlined) from its database.

It holds, in order: the session and its outcome (target against non-target
images over all rounds), the score table of every round, the control
section (per target and round: its images beside the images their
synthesis started from, how far each moved, the drive against the best and
the median natural control with confidence intervals, and the drive by
round), predicted against measured responses, every run's ROI time courses
with the onsets, each volume's processing latency and framewise
displacement, each run's design (its trials' regressors, their
correlations and variance inflation), the model's accuracy by version, the
image quality of every run from its volume files (the
atlas and the last model's per-voxel accuracy over the mean image, tSNR, a
carpet plot, six motion parameters), where in its best image of the last
round each target ROI looks (per-ROI saliency through the last model), the warnings and errors of the event
log, and the session file with the software versions. Links after the title lead to each
section; image thumbnails are JPEG.
"""

from __future__ import annotations

import base64
import html
import io
import math
import platform
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from db import Database
from db.base import ConfigError, EventLevel, RunKind, write_atomic
from db.queries import (
    Reader,
    SessionInfo,
    measured_responses,
    model_versions,
    predictions,
    roi_timeseries,
    run_trials,
    run_volumes,
    session_events,
    session_info,
    session_rounds,
    session_runs,
    session_scores,
    session_stimuli,
)
from loop.folder import Relocation
from loop.scoring import Metric
from loop.summary import session_outcome

__all__ = ["PAGE", "ci_text", "figure_html", "saliency_figure", "write_report"]

ROW_METRICS = (
    Metric.TARGET_PREDICTED,
    Metric.TARGET_MEASURED,
    Metric.TARGET_TRUE,
    Metric.DRIVE_VS_BEST,
    Metric.DRIVE_NATURAL_RANGE,
    Metric.TARGET_T,
    Metric.TARGET_P,
)


def write_report(
    database: Database, ref: str, out: Path, *, database_file: Path | None = None, folder: Path | None = None
) -> Path:
    """Write the report of session ``ref`` to ``out`` (atomically); return the path.

    The session's images are found where it wrote them, or, when its folder
    has moved, in ``folder`` or beside ``database_file`` (:class:`~loop.folder.Relocation`).
    An image that is gone stops the report with a :class:`~db.base.ConfigError` naming it.
    """
    import matplotlib

    matplotlib.use("Agg")
    with database.reader() as s:
        session = session_info(s, ref)
        located = Relocation.find(session.config_toml, database_file=database_file, folder=folder)
        try:
            control = _control(s, session, located)
        except _GoneError as gone:
            raise ConfigError(
                f"image {gone.path} of session {ref} is gone; the report shows every image the session "
                "made. If the session folder moved, give its new place with --folder"
            ) from None
        parts = [_header(s, session), _scores(s, session.id), control, _scatter(s, session.id)]
        parts += [_runs(s, session.id), _design(s, session.id), _models(s, session, located)]
        parts += [_attention(s, session, located)]
        parts += [_image_quality(s, session, located)]
        parts += [_events(s, session.id), _configuration(s, session)]
    document = PAGE.format(
        title=html.escape(f"cortexloop report: {parts[0][1]}"),
        body=_navigable("\n".join(p[0] for p in parts)),
    )
    write_atomic(out, document.encode())
    return out


def _navigable(body: str) -> str:
    """``body`` with an anchor before each section and, after the title, links to them all."""
    titles = re.findall(r"<h2>(.*?)</h2>", body)
    slugs = [re.sub(r"[^a-z0-9]+", "-", html.unescape(t).lower()).strip("-") for t in titles]
    for title, slug in zip(titles, slugs, strict=True):
        body = body.replace(f"<h2>{title}</h2>", f'<a id="{slug}"></a><h2>{title}</h2>', 1)
    links = " &middot; ".join(
        f'<a href="#{slug}">{title}</a>' for title, slug in zip(titles, slugs, strict=True)
    )
    head, _, rest = body.partition("</h1>")
    return f"{head}</h1>\n<nav>{links}</nav>{rest}" if rest else body


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


def _control(s: Reader, session: SessionInfo, located: Relocation) -> tuple[str, str]:
    """Per target and round: its images beside their starts, and the drive against the natural controls."""
    folder = located.stimuli(session.config_toml)
    made = {row.path: row.synthesis or {} for row in session_stimuli(s, session.id)}
    responses = measured_responses(s, session.id, run_kind=RunKind.CLOSED_LOOP)
    # (round, target) -> condition -> image path -> its single-trial responses of the target ROI.
    groups: dict[tuple[int, str], dict[str, dict[str, list[float]]]] = {}
    for row in responses:
        if row.round_index is None or row.target_roi is None or row.roi != row.target_roi:
            continue
        images = groups.setdefault((row.round_index, row.target_roi), {}).setdefault(row.condition or "", {})
        images.setdefault(row.stimulus_path, []).append(row.value)
    if not groups:
        return "<h2>Control</h2><p>No rounds.</p>", ""
    true = {
        (score.round_index, score.roi): score.value
        for score in session_scores(s, session.id)
        if score.metric == Metric.TARGET_TRUE and score.round_index is not None and score.roi is not None
    }
    rows, strips = [], []
    for (index, target), conditions in sorted(groups.items()):
        own = conditions.get("synthesized", {})
        means = [float(np.mean(v)) for v in own.values()]
        best = next(iter(conditions.get("best_natural", {}).values()), [])
        median = next(iter(conditions.get("median_natural", {}).values()), [])
        moved = [made.get(path, {}).get("moved_rms") for path in own]
        moved_text = _mean_text(moved)
        radius_text = _mean_text([made.get(path, {}).get("trust_radius") for path in own])
        ratio = (
            float(np.mean(means)) / float(np.mean(best)) if means and best and np.mean(best) else float("nan")
        )
        rows.append(
            f"<tr><td>{index}</td><td>{html.escape(target)}</td><td>{ci_text(means)}</td><td>{ci_text(best)}</td>"
            f"<td>{ci_text(median)}</td><td>{_n(ratio)}</td><td>{_n(true.get((index, target)))}</td>"
            f"<td>{moved_text}</td><td>{radius_text}</td></tr>"
        )
        if folder is None:
            continue
        pairs = []
        for path, values in own.items():
            start = made.get(path, {}).get("start_file")
            shift = made.get(path, {}).get("moved_rms")
            before = _thumbnail(folder / start, 72) if start else "<span>noise</span>"
            caption = (
                f"moved {_n(shift)}, measured {np.mean(values):.2f}"
                if shift is not None
                else f"measured {np.mean(values):.2f}"
            )
            pairs.append(
                f"<figure>{before} &rarr; {_thumbnail(folder / path, 72)}"
                f"<figcaption>{caption}</figcaption></figure>"
            )
        for condition in ("best_natural", "median_natural"):
            for path, values in conditions.get(condition, {}).items():
                label = f"{condition.replace('_', ' ')}, measured {np.mean(values):.2f}"
                pairs.append(
                    f"<figure>{_thumbnail(folder / path, 72)}"
                    f"<figcaption>{html.escape(label)}</figcaption></figure>"
                )
        strips.append(f"<h3>round {index}, {html.escape(target)}</h3><div class=strip>{''.join(pairs)}</div>")
    table = (
        "<table><tr><th>round</th><th>target</th><th>its images (95% CI)</th><th>best natural</th>"
        "<th>median natural</th><th>vs best</th><th>true (simulation)</th>"
        "<th>moved from start (RMS)</th><th>trust radius</th></tr>" + "".join(rows) + "</table>"
    )
    text = (
        "<h2>Control</h2><p>Measured response (% signal change) of each target ROI to the images made "
        "for it, each image averaged over its showings, beside its best and median natural control "
        "(their showings; 95% confidence intervals by Student's t). Each image is shown next to the image "
        "its synthesis started from, with the root-mean-square change of its pixels (0 to 1): a retouched "
        "natural image moves little. The trust radius is how far from its natural origin an image was "
        "allowed to move (the adaptive strategy widens it after a round whose images beat the best natural "
        "control and narrows it after one they lost).</p>"
    )
    return text + table + _drive_plot(groups, true) + "\n".join(strips), ""


def _mean_text(values: list[float | None]) -> str:
    """The mean of the values recorded, or '-' when none was."""
    known = [v for v in values if v is not None]
    return _n(float(np.mean(known))) if known else "-"


def ci_text(values: list[float]) -> str:
    """``mean [low, high]`` with a 95% Student's t interval (just the mean for one value, '-' for none)."""
    if not values:
        return "-"
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.2f}"
    half = float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))
    return f"{mean:.2f} [{mean - half:.2f}, {mean + half:.2f}]"


def _drive_plot(
    groups: dict[tuple[int, str], dict[str, dict[str, list[float]]]], true: dict[tuple[int, str], float]
) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for target in sorted({t for _, t in groups}):
        rounds = sorted(i for i, t in groups if t == target)
        measured = [
            np.mean([np.mean(v) for v in groups[i, target].get("synthesized", {}).values()]) for i in rounds
        ]
        line = ax.plot(rounds, measured, "o-", label=f"{target} measured")[0]
        if all((i, target) in true for i in rounds):
            ax.plot(
                rounds,
                [true[i, target] for i in rounds],
                "x--",
                color=line.get_color(),
                label=f"{target} true",
            )
    ax.set(xlabel="round", ylabel="response to its images (%)", title="drive by round")
    ax.set_xticks(sorted({i for i, _ in groups}))
    ax.legend(fontsize=6, ncol=2)
    return figure_html(fig)


class _GoneError(Exception):
    def __init__(self, path: Path) -> None:
        self.path = path


def _thumbnail(path: Path, size: int = 96) -> str:
    from PIL import Image

    try:
        image = Image.open(path).convert("RGB")
    except OSError:
        raise _GoneError(path) from None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)  # a tenth of a PNG's bytes, for a thumbnail
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/jpeg;base64,{data}">'


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
    return f"<h2>Predicted against measured</h2>{figure_html(fig)}", ""


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
        parts.append(figure_html(fig))
    return "\n".join(parts), ""


def _design(s: Reader, session_id: int) -> tuple[str, str]:
    """Each run's design as the single-trial estimates model it, and how much its trials overlap."""
    import matplotlib.pyplot as plt

    from loop.analysis.design import Trial
    from loop.quality import design_diagnostics

    rows, figures = [], []
    for run in session_runs(s, session_id):
        trials = run_trials(s, run.id)
        n = run.n_volumes_planned or len(run_volumes(s, run.id))
        if not trials or not n:
            continue
        design = design_diagnostics(
            [Trial(t.actual_onset_s or t.planned_onset_s, t.actual_duration_s or t.planned_duration_s)
             for t in trials],
            run.tr_s, n,
        )  # fmt: skip
        rows.append(
            f"<tr><td>{run.index}</td><td>{run.kind}</td><td>{design.n_trials}</td><td>{n}</td>"
            f"<td>{design.largest_neighbour_r:.2f}</td><td>{np.median(design.vif):.2f}</td>"
            f"<td>{design.vif.max():.2f}</td></tr>"
        )
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=(1.4, 1))
        scaled = design.matrix / np.abs(design.matrix).max(0).clip(1e-12)
        left.imshow(scaled, aspect="auto", cmap="gray", interpolation="nearest")
        left.axvline(design.n_trials - 0.5, color="tab:orange", lw=0.8)
        left.set(xlabel=f"{design.n_trials} trials, then the drifts", ylabel="volume",
                 title=f"run {run.index}: design")  # fmt: skip
        image = right.imshow(design.correlation, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        right.set(xlabel="trial", ylabel="trial", title="correlation between the trials' regressors")
        fig.colorbar(image, ax=right, shrink=0.8)
        figures.append(figure_html(fig))
    if not rows:
        return "<h2>Design</h2><p>No run with trials.</p>", ""
    table = (
        "<table><tr><th>run</th><th>kind</th><th>trials</th><th>volumes</th>"
        "<th>largest r between two trials</th><th>median VIF</th><th>largest VIF</th></tr>"
        f"{''.join(rows)}</table>"
    )
    return (
        "<h2>Design</h2><p>Each run's design as its single-trial responses are estimated: each trial's "
        "HRF regressor from its measured onset, and the cosine drifts. A trial whose regressor overlaps "
        "its neighbours' is estimated less surely: the variance inflation (VIF) says by how much, in the "
        f"model of all trials at once.</p>{table}" + "\n".join(figures),
        "",
    )


def _models(s: Reader, session: SessionInfo, located: Relocation) -> tuple[str, str]:
    """The encoding model's accuracy by version: each ROI's median cross-validated r, from its files."""
    from stimulus.encoding import read_model_file

    versions = model_versions(s, session.id)
    rows, medians = [], []
    names = sorted(r.name for r in session.rois)  # the session's ROIs, as a model file lists its own
    for k, version in enumerate(versions, 1):
        path = located.path(version.artifact_path)
        how = f"<td>{html.escape(version.description or '')}</td>"
        if not path.is_file():
            gone = f"its file {html.escape(str(path))} is gone"
            rows.append(f"<tr><td>{k}</td>{how}<td colspan={1 + len(names)}>{gone}</td></tr>")
            continue
        meta, tensors, _ = read_model_file(path)
        codes, r = tensors["roi_codes"].numpy(), tensors["cv_r"].numpy()
        median = {str(name): float(np.median(r[codes == j])) for j, name in enumerate(meta["roi_names"])}
        medians.append((k, median))
        cells = "".join(f"<td>{median.get(name, float('nan')):.3f}</td>" for name in names)
        rows.append(f"<tr><td>{k}</td>{how}<td>{version.n_training_stimuli or '-'}</td>{cells}</tr>")
    if not versions:
        return "<h2>Model by version</h2><p>No model was fitted.</p>", ""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    figure = ""
    if len(medians) > 1:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(figsize=(7, 3))
        for name in names:
            axes.plot([k for k, _ in medians], [m.get(name, np.nan) for _, m in medians], "o-", label=name)
        axes.set(xlabel="model version", ylabel="median cross-validated r")
        axes.set_xticks([k for k, _ in medians])
        axes.legend(fontsize=7, ncol=len(names))
        figure = figure_html(fig)
    validated = [e.message for e in session_events(s, session.id) if e.code == "model.validated"]
    said = f"<p>{html.escape(validated[-1][0].upper() + validated[-1][1:])}.</p>" if validated else ""
    return (
        "<h2>Model by version</h2><p>Each refit's accuracy: the median over each ROI's voxels of the "
        "cross-validated r the model file records (version 1 is fitted on the training run, or is the model "
        "the session started from, as it says; each later one refitted on everything measured up to the run "
        f"before it).</p>{said}"
        f"<table><tr><th>version</th><th>how</th><th>training images</th>{head}</tr>{''.join(rows)}</table>"
        f"{figure}",
        "",
    )


def _attention(s: Reader, session: SessionInfo, located: Relocation) -> tuple[str, str]:
    """Each target's best measured image of the last round, with every target ROI's saliency map on it."""
    from stimulus import EncodingModel, load_images
    from stimulus.saliency import SaliencyConfig, roi_saliency, symmetric_kl

    heading = "<h2>Attention</h2>"
    folder = located.stimuli(session.config_toml)
    versions = model_versions(s, session.id)
    model_path = located.path(versions[-1].artifact_path) if versions else None
    responses = [
        row
        for row in measured_responses(s, session.id, run_kind=RunKind.CLOSED_LOOP)
        if row.round_index is not None and row.condition == "synthesized" and row.roi == row.target_roi
    ]
    last = max((row.round_index for row in responses if row.round_index is not None), default=None)
    values: dict[tuple[str, str], list[float]] = {}
    for row in responses:
        if row.round_index == last and row.target_roi is not None:
            values.setdefault((row.target_roi, row.stimulus_path), []).append(row.value)
    best: dict[str, tuple[float, str]] = {}
    for (target, path), measured in values.items():
        mean = float(np.mean(measured))
        if target not in best or mean > best[target][0]:
            best[target] = (mean, path)
    if not best or folder is None or model_path is None or not model_path.is_file():
        return heading + "<p>No round with a model file and its images to look into.</p>", ""
    model = EncodingModel.load(model_path, device="cpu")
    rois = [roi for roi in sorted(best) if roi in set(model.roi_labels_.tolist())]
    targets = sorted(best)
    pixels = load_images([folder / best[t][1] for t in targets], model.config.image_size)
    maps = roi_saliency(model, pixels, rois, SaliencyConfig(samples=8))
    rows = [
        (f"made for {t}, measured {best[t][0]:.2f}", pixels[k], {r: maps[r][k] for r in rois})
        for k, t in enumerate(targets)
    ]
    cells = [
        (a, b, float(np.median(symmetric_kl(maps[a], maps[b]))))
        for i, a in enumerate(rois)
        for b in rois[i + 1 :]
    ]
    overlap = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{kl:.2f}</td></tr>" for a, b, kl in cells
    )
    return (
        heading + f"<p>Where each target ROI looks in the image of the last round (round {last}) that "
        "drove its own target most, as measured: the gradient of the ROI's predicted mean response over the "
        "pixels through the last model, averaged over 8 noisy copies (SmoothGrad), each map summing to 1. "
        "Maps of two ROIs that look at the same places have a symmetric Kullback-Leibler divergence near 0 "
        "(<code>cortexloop model saliency</code> makes these for any images).</p>"
        + figure_html(saliency_figure(rows), photo=True)
        + "<table><tr><th>ROI</th><th>ROI</th><th>median symmetric KL</th></tr>"
        + overlap
        + "</table>",
        "",
    )


def saliency_figure(rows: list[tuple[str, Any, dict[str, Any]]]) -> Any:
    """One row per image: the image, then each ROI's map over it in grey (maps of shape (size, size))."""
    import matplotlib.pyplot as plt

    n_maps = max(len(maps) for _, _, maps in rows)
    fig, axes = plt.subplots(
        len(rows), 1 + n_maps, figsize=(2.2 * (1 + n_maps), 2.3 * len(rows)), squeeze=False
    )
    for line, (title, image, maps) in zip(axes, rows, strict=True):
        picture = np.asarray(image)
        line[0].imshow(picture.transpose(1, 2, 0))
        line[0].set_title(title, fontsize="small")
        for ax, (roi, values) in zip(line[1:], maps.items(), strict=False):
            ax.imshow(picture.mean(axis=0), cmap="gray")
            ax.imshow(values, cmap="inferno", alpha=0.6)
            ax.set_title(roi, fontsize="small")
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig


def _image_quality(s: Reader, session: SessionInfo, located: Relocation) -> tuple[str, str]:
    """Each run's image quality from its volume files, where they are at hand (:mod:`loop.quality`)."""
    from loop.analysis.motion import rotation_angle_deg
    from loop.analysis.roi import RoiSignals
    from loop.quality import QualityUnavailableError, run_quality
    from loop.replay import session_atlas
    from scanner_bridge.readers import VolumeFiles

    title = "<h2>Image quality</h2>"
    try:
        atlas = session_atlas(session, located)
    except ConfigError as exc:
        return f"{title}<p>No image quality: {html.escape(str(exc))}.</p>", ""
    signals, reader = RoiSignals(atlas), VolumeFiles()  # one reader: each folder's headers read once
    parts, table, brain = [], [], ""
    placed = {e.run_index: e.details for e in session_events(s, session.id) if e.code == "run.position"}
    for run in session_runs(s, session.id):
        files = [
            (v.index, located.path(v.file_path) if v.file_path else None) for v in run_volumes(s, run.id)
        ]
        try:
            quality = run_quality(files, run.tr_s, signals, reader)
        except QualityUnavailableError as exc:
            parts.append(f"<p>Run {run.index}: no image quality, {html.escape(str(exc))}.</p>")
            continue
        if not brain:
            brain = _brain_figure(s, session, located, atlas, quality, run.index)
        largest = np.abs(quality.motion).max(0)
        cells = "".join(f"<td>{quality.roi_tsnr[name]:.0f}</td>" for name in signals.roi_names)
        position = placed.get(run.index) or {}
        if run.index == 1 and not position:  # the session's reference
            start = "<td>0.00</td><td>0.00</td>"
        elif position:
            shift = float(np.linalg.norm(position["translation_mm"]))
            turn = rotation_angle_deg(np.radians(position["rotation_deg"]))
            start = f"<td>{shift:.2f}</td><td>{turn:.2f}</td>"
        else:
            start = "<td>-</td><td>-</td>"
        table.append(
            f"<tr><td>{run.index}</td><td>{run.kind}</td><td>{len(quality.times_s)}</td>"
            f"<td>{quality.left_out}</td>{cells}<td>{largest[:3].max():.2f}</td><td>{largest[3:].max():.2f}</td>"
            f"{start}</tr>"
        )
        parts.append(_carpet_figure(run.index, quality))
    head = "".join(f"<th>tSNR {html.escape(name)}</th>" for name in signals.roi_names)
    summary = (
        "<p>From each run's volume files: the median temporal signal-to-noise ratio in each ROI (each "
        "voxel's mean over the sd of what a line through its time course leaves) and the largest "
        "translation (mm) and rotation (degrees) against the run's first volume; then where the head was at "
        "the run's start against the session's first volume, or an earlier day's (the distance in mm, the "
        "whole turn in degrees), which its ROIs followed.</p>"
        f"<table><tr><th>run</th><th>kind</th><th>volumes</th><th>left out</th>{head}"
        f"<th>translation</th><th>rotation</th><th>start: shift</th><th>start: rotation</th></tr>"
        f"{''.join(table)}</table>"
        if table
        else ""
    )
    return title + summary + brain + "\n".join(parts), ""


def _brain_figure(
    s: Reader, session: SessionInfo, located: Relocation, atlas: Any, quality: Any, run_index: int
) -> str:
    """The atlas, the tSNR and the last model's cross-validated r over run ``run_index``'s mean image."""
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    nifti: Any = nib.Nifti1Image
    mean = nifti(quality.mean.astype(np.float32), quality.affine)
    maps: list[tuple[str, Any]] = [
        ("ROIs of the atlas", nifti(atlas.labels, atlas.affine)),
        ("tSNR", nifti(quality.tsnr.astype(np.float32), quality.affine)),
    ]
    score = _score_map(s, session, located, atlas)
    if score is not None:
        maps.append(score)
    fig = plt.figure(figsize=(11, 2.3 * len(maps)))
    with warnings.catch_warnings():  # nilearn's own notes on masked and resampled images
        warnings.simplefilter("ignore")
        for k, (label, image) in enumerate(maps):
            axes = fig.add_axes((0, 1 - (k + 1) / len(maps), 1, 1 / len(maps)))
            common = {"bg_img": mean, "display_mode": "z", "cut_coords": 7, "axes": axes, "black_bg": True}
            if label.startswith("ROIs"):
                plotting.plot_roi(image, title=label, cmap="tab10", alpha=0.6, **common)
            else:
                plotting.plot_stat_map(image, title=label, cmap="inferno", colorbar=True, **common)
    caption = f"Over the mean image of run {run_index}"
    if score is not None:
        caption += "; the last model's r is drawn where it is above 0.1"
    return f"<p>{caption}.</p>{figure_html(fig, photo=True, layout=False)}"


def _score_map(s: Reader, session: SessionInfo, located: Relocation, atlas: Any) -> tuple[str, Any] | None:
    """The last model's cross-validated r per voxel, on the atlas's grid (None without a model file)."""
    import nibabel as nib

    from stimulus.encoding import read_model_file

    versions = model_versions(s, session.id)
    if not versions:
        return None
    path = located.path(versions[-1].artifact_path)
    if not path.is_file():
        return None
    _, tensors, _ = read_model_file(path)
    values = np.zeros(atlas.labels.size, dtype=np.float32)
    values[tensors["voxel_indices"].numpy()] = tensors["cv_r"].numpy()
    values[values < 0.1] = 0
    nifti: Any = nib.Nifti1Image
    image = nifti(values.reshape(atlas.labels.shape), atlas.affine)
    return f"cross-validated r of model {len(versions)}", image


def _carpet_figure(run_index: int, quality: Any) -> str:
    """A run's carpet plot over its six motion parameters."""
    import matplotlib.pyplot as plt

    fig, (carpet, move, turn) = plt.subplots(3, 1, figsize=(11, 5.5), sharex=True, height_ratios=(3, 1, 1))
    t = quality.times_s
    carpet.imshow(
        quality.carpet, aspect="auto", cmap="gray", vmin=-2, vmax=2, interpolation="nearest",
        extent=(t[0], t[-1], len(quality.carpet), 0),
    )  # fmt: skip
    starts = [start for _, start in quality.carpet_rois]
    for start in starts[1:]:
        carpet.axhline(start, color="tab:orange", lw=0.8)
    ends = [*starts[1:], len(quality.carpet)]
    carpet.set_yticks([(a + b) / 2 for a, b in zip(starts, ends, strict=True)])
    carpet.set_yticklabels([name for name, _ in quality.carpet_rois], fontsize=8)
    carpet.set(ylabel="ROI voxels", title=f"run {run_index}: each ROI voxel, less its trend, in sd")
    for axis, label in enumerate("xyz"):
        move.plot(t, quality.motion[:, axis], lw=0.8, label=label)
        turn.plot(t, quality.motion[:, 3 + axis], lw=0.8, label=label)
    move.set(ylabel="translation\n(mm)")
    turn.set(ylabel="rotation\n(degrees)", xlabel="seconds from the first trigger")
    move.legend(fontsize=7, ncol=3)
    return figure_html(fig, photo=True)


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


def _configuration(s: Reader, session: SessionInfo) -> tuple[str, str]:
    """The session file the session ran with, the machine it ran on, and the software of this report."""
    from db.schema import cortexloop_version
    from loop.software import describe

    recorded = (
        f"<pre>{html.escape(session.config_toml)}</pre>"
        if session.config_toml
        else "<p>No session file recorded.</p>"
    )
    starts = [e for e in session_events(s, session.id) if e.code in ("session.started", "session.resumed")]
    machines = [
        f"<li>{html.escape(e.code.removeprefix('session.'))} at {e.at:%Y-%m-%d %H:%M:%S}: "
        f"{html.escape(describe(found))}</li>"
        for e in starts
        if (found := (e.details or {}).get("environment"))
    ]
    ran_on = (
        f"<p>It ran on (the same session file and seed give the same images only where these match):</p>"
        f"<ul>{''.join(machines)}</ul>"
        if machines
        else "<p>Where it ran was not recorded (a session from before cortexloop recorded it).</p>"
    )
    return (
        "<h2>Session file and software</h2>"
        f"<p>Recorded by cortexloop {html.escape(session.cortexloop_version)}; this report by cortexloop "
        f"{html.escape(cortexloop_version())} on Python {platform.python_version()}.</p>{ran_on}{recorded}",
        "",
    )


def figure_html(fig: Any, *, photo: bool = False, layout: bool = True) -> str:
    """``fig`` inlined as an image: PNG for line plots, JPEG for ``photo`` (brain images, carpets)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    if layout:
        fig.tight_layout()
    kind = "jpeg" if photo else "png"
    options = {"pil_kwargs": {"quality": 85}} if photo else {}
    fig.savefig(buffer, format=kind, dpi=90 if not photo else 80, **options)
    plt.close(fig)
    return f'<img class=figure src="data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _n(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


PAGE = """<!doctype html>
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
