"""A sweep's report: its settings ranked by how well their sessions controlled, with intervals over seeds.

One self-contained HTML file from the sweep database. For each setting, over
the seeds whose sessions completed: the last round's true response to each
target's images over the unseen pool's best (mean and 95% t interval over
seeds), the target ROIs above the pool's best, the ROIs measured above the
best natural control, and the seeds whose true drive rose round over round;
the settings ranked by the mean over targets of the true response over the
pool's best. Then the same by round, as a plot, and the failed sessions
with why they failed, and the sweep file.
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from db import Database, Status
from db.base import write_atomic
from db.sweeps import SweepSessionRow, list_sweeps, sweep_sessions
from loop.report import PAGE, ci_text, figure_html
from loop.sweep.plan import slug

__all__ = ["SettingFigures", "setting_figures", "write_sweep_report"]


class SettingFigures:
    """One setting's completed sessions, their figures gathered over seeds."""

    def __init__(self, setting: str, rows: list[SweepSessionRow]) -> None:
        self.setting = setting
        self.rows = [r for r in rows if r.status == Status.COMPLETED and r.figures]
        self.seeds = [r.seed for r in self.rows]
        self.overrides = rows[0].overrides if rows else {}

    def summary(self, key: str) -> list[float]:
        """Each seed's last-round summary figure ``key`` (see :func:`loop.sweep.efficacy.summary`)."""
        return [
            float(r.figures["summary"][key]) for r in self.rows if r.figures and key in r.figures["summary"]
        ]

    def by_roi(self, key: str = "true_vs_pool_best", round_: int | None = None) -> dict[str, list[float]]:
        """Each target ROI's figure ``key`` over seeds, in round ``round_`` (default: each seed's last)."""
        out: dict[str, list[float]] = defaultdict(list)
        for row in self.rows:
            assert row.figures is not None
            rounds = row.figures["rounds"]
            index = round_ if round_ is not None else max((f["round"] for f in rounds), default=0)
            for f in rounds:
                if f["round"] == index and f.get(key) is not None:
                    out[f["roi"]].append(float(f[key]))
        return dict(out)

    @property
    def rounds(self) -> list[int]:
        return sorted({f["round"] for r in self.rows if r.figures for f in r.figures["rounds"]})

    @property
    def score(self) -> float:
        """What the settings are ranked by: the mean over seeds and targets of true / the pool's best."""
        values = self.summary("mean_vs_pool_best")
        return float(np.mean(values)) if values else float("-inf")


def setting_figures(database: Database, name: str) -> list[SettingFigures]:
    """Sweep ``name``'s settings with their completed sessions' figures, best ranked first."""
    with database.reader() as s:
        rows = sweep_sessions(s, name)
    settings: dict[str, list[SweepSessionRow]] = defaultdict(list)
    for row in rows:
        settings[row.setting].append(row)
    return sorted((SettingFigures(k, v) for k, v in settings.items()), key=lambda f: -f.score)


def write_sweep_report(database: Database, name: str, out: Path, *, sessions: Path | None = None) -> Path:
    """Write sweep ``name``'s report to ``out``; ``sessions``: where each session's own report lies."""
    import matplotlib

    matplotlib.use("Agg")
    with database.reader() as s:
        rows = sweep_sessions(s, name)
    ranked = setting_figures(database, name)
    rois = sorted({roi for f in ranked for roi in f.by_roi()})
    body = [
        f"<h1>Sweep {html.escape(name)}</h1>",
        f"<p>{sum(r.status == Status.COMPLETED for r in rows)} sessions completed, "
        f"{sum(r.status != Status.COMPLETED for r in rows)} failed, over {len(ranked)} settings. "
        "Settings are ranked by the mean over target ROIs of the last round's true response to each "
        "target's images over the best image of an unseen natural pool (1 = as strong as the pool's best), "
        "with 95% t intervals over seeds.</p>",
        _ranking(ranked, rois),
    ]
    if any(f.rows for f in ranked):
        body += ["<h2>By round</h2>", _by_round_plot(ranked), _last_round_plot(ranked, rois)]
    body += [_sessions(rows, sessions, out.parent), _failures(rows)]
    with database.reader() as s:
        definition = next(w.definition for w in list_sweeps(s) if w.name == name)
    body.append(f"<h2>The sweep file</h2><pre>{html.escape(definition)}</pre>")
    write_atomic(
        out, PAGE.format(title=html.escape(f"cortexloop sweep {name}"), body="\n".join(body)).encode()
    )
    return out


def _ranking(ranked: list[SettingFigures], rois: list[str]) -> str:
    head = "".join(f"<th>{html.escape(r)}</th>" for r in rois)
    lines = [
        "<table><tr><th>rank</th><th>setting</th><th>seeds</th><th>mean over targets</th>"
        f"{head}<th>ROIs above the pool's best</th><th>measured above the best natural control</th>"
        "<th>seeds whose true drive rose every round</th></tr>"
    ]
    for rank, f in enumerate(ranked, 1):
        per_roi = f.by_roi()
        rising = f.summary("rising")
        cells = "".join(f"<td>{ci_text(per_roi.get(r, []))}</td>" for r in rois)
        lines.append(
            f"<tr><td>{rank}</td><td>{html.escape(f.setting)}</td><td>{len(f.seeds)}</td>"
            f"<td>{ci_text(f.summary('mean_vs_pool_best'))}</td>{cells}"
            f"<td>{ci_text(f.summary('above_pool_best'))}</td><td>{ci_text(f.summary('measured_above_best'))}</td>"
            f"<td>{f'{int(sum(rising))} of {len(rising)}' if rising else '-'}</td></tr>"
        )
    return "\n".join([*lines, "</table>"])


def _by_round_plot(ranked: list[SettingFigures]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for f in ranked:
        rounds = f.rounds
        means = [float(np.mean([np.mean(v) for v in f.by_roi(round_=k).values()])) for k in rounds]
        ax.plot(rounds, means, "o-", label=f.setting)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(sorted({k for f in ranked for k in f.rounds}))
    ax.set(xlabel="round", ylabel="true response / pool's best", title="mean over targets and seeds")
    ax.legend(fontsize=6)
    return figure_html(fig)


def _last_round_plot(ranked: list[SettingFigures], rois: list[str]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(ranked), 1)
    for k, f in enumerate(ranked):
        per_roi = f.by_roi()
        means = [float(np.mean(per_roi[r])) if per_roi.get(r) else np.nan for r in rois]
        spread = [float(np.std(per_roi[r], ddof=1)) if len(per_roi.get(r, [])) > 1 else 0.0 for r in rois]
        ax.bar(np.arange(len(rois)) + k * width, means, width, yerr=spread, label=f.setting, capsize=2)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(rois)) + width * (len(ranked) - 1) / 2, rois)
    ax.set(ylabel="true response / pool's best", title="last round, by target (bars: SD over seeds)")
    ax.legend(fontsize=6)
    return figure_html(fig)


def _sessions(rows: list[SweepSessionRow], sessions: Path | None, here: Path) -> str:
    lines = [
        "<h2>Sessions</h2><table><tr><th>setting</th><th>seed</th><th>session</th><th>worker</th>"
        "<th>minutes</th><th>report</th></tr>"
    ]
    for r in rows:
        if r.status != Status.COMPLETED:
            continue
        link = "-"
        if sessions is not None:
            report = sessions / slug(r.setting) / f"seed{r.seed}" / "report.html"
            if report.exists():
                link = f'<a href="{html.escape(str(_relative(report, here)))}">report</a>'
        minutes = f"{r.seconds / 60:.1f}" if r.seconds is not None else "-"
        lines.append(
            f"<tr><td>{html.escape(r.setting)}</td><td>{r.seed}</td><td>{html.escape(r.session or '-')}</td>"
            f"<td>{html.escape(r.worker or '-')}</td><td>{minutes}</td><td>{link}</td></tr>"
        )
    return "\n".join([*lines, "</table>"])


def _failures(rows: list[SweepSessionRow]) -> str:
    failed = [r for r in rows if r.status != Status.COMPLETED]
    if not failed:
        return "<h2>Failed sessions</h2><p>None.</p>"
    items = "".join(
        f"<li>{html.escape(r.setting)}, seed {r.seed}: {html.escape(r.error or '?')}</li>" for r in failed
    )
    return f"<h2>Failed sessions</h2><ul>{items}</ul>"


def _relative(path: Path, here: Path) -> Path:
    try:
        return path.resolve().relative_to(here.resolve())
    except ValueError:
        return path.resolve()
