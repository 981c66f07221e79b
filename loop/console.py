"""The operator's console: what a session is doing, in the terminal, as it happens.

A progress bar per run shows volumes as they arrive with the last
volume's processing time and framewise displacement and the count of
missing ones; warnings and errors are printed above it as they come; each
round ends with its table (target ROI, predicted, measured, drive against
the natural controls, target against non-target).
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from loop.analysis.realtime import VolumeResult
from loop.observer import Observer
from loop.scoring import RoundScores
from stimulus.present import RunPlan

__all__ = ["ConsoleObserver", "round_table"]


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def round_table(index: int, scores: RoundScores) -> Table:
    """A round's scores, one row per target ROI."""
    truth = any(row.true is not None for row in scores.targets)
    table = Table(title=f"round {index}: mean measured drive {_number(scores.drive)} % signal change")
    for column in (
        "target",
        "predicted",
        "measured",
        *(["true"] if truth else []),
        "vs best natural",
        "median→best natural",
        "t (vs non-target)",
        "p",
        "t (vs best natural)",
        "p (one-sided)",
    ):
        table.add_column(column, justify="left" if column == "target" else "right")
    for row in scores.targets:
        cells = [row.roi, _number(row.predicted), _number(row.measured)]
        if truth:
            cells.append(_number(row.true))
        significant = math.isfinite(row.p) and row.p < 0.05 and row.t > 0
        p = _number(row.p, 3)
        best_p = _number(row.best_p, 3)
        beats = math.isfinite(row.best_p) and row.best_p < 0.05 and row.best_t > 0
        cells += [
            _number(row.vs_best),
            _number(row.natural_range),
            _number(row.t),
            f"[bold]{p}[/]" if significant else p,
            _number(row.best_t),
            f"[bold]{best_p}[/]" if beats else best_p,
        ]
        table.add_row(*cells)
    return table


class ConsoleObserver(Observer):
    """Shows a session on a rich console (the CLI's)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._missing = 0

    def message(self, level: str, text: str) -> None:
        style = {"warning": "yellow", "error": "bold red"}.get(level, "")
        self.console.print(Text(text, style=style), highlight=False)  # "[atlas]" in a message is text

    def run_started(self, label: str, plan: RunPlan) -> None:
        self._missing = 0
        self._progress = Progress(
            TextColumn(f"{label:<14}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} volumes"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            label, total=plan.n_volumes, detail="waiting for the first volume"
        )

    def volume(
        self,
        label: str,
        index: int,
        n_volumes: int,
        status: str,
        result: VolumeResult | None,
        latency_ms: float | None = None,
    ) -> None:
        if self._progress is None or self._task is None:
            return
        self._missing += status == "missing"
        detail = f"{self._missing} missing"
        if result is not None:
            since = f"  {latency_ms:5.0f} ms from the scanner" if latency_ms is not None else ""
            detail = f"analysed in {1e3 * result.seconds:4.1f} ms{since}  FD {result.fd_mm:4.2f} mm  {detail}"
        self._progress.update(self._task, completed=index + 1, detail=detail)

    def run_ended(self, label: str, summary: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(
            f"{label}: {summary['volumes']} volumes ({summary['missing']} missing, {summary['late']} late), "
            f"median processing {_number(summary['median_ms'], 1)} ms per volume, "
            f"largest framewise displacement {_number(summary['max_fd_mm'])} mm"
        )

    def round_ended(self, index: int, scores: RoundScores) -> None:
        self.console.print(round_table(index, scores))
