"""``cortexloop replay`` and ``cortexloop report``: a recorded session analysed again, and shown."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from loop.cli._common import DEFAULT_DB_FILENAME, DbOption, FolderOption, console

__all__ = ["replay", "report"]

SessionArgument = Annotated[str, typer.Argument(help="Session id or sub-X/ses-Y.", show_default=False)]


def replay(session: SessionArgument, db: DbOption = DEFAULT_DB_FILENAME, folder: FolderOption = None) -> None:
    """Re-run a recorded session's analysis from its volume files and compare it with the record.

    Exits with status 1 when a run cannot be read back in full or differs from what was recorded.
    A session folder that moved (with its database) is found beside the database, or give --folder.
    """
    from db import open_database
    from loop.replay import replay_session

    with open_database(db, read_only=True) as database:
        runs = replay_session(database, session, database_file=_file(db), folder=folder)
    table = Table(title=f"replay of {session}")
    for column in ("run", "kind", "volumes", "unreadable", "max |Δ signal|", "max |Δ FD| (mm)",
                   "max |Δ response| (%)", "r (responses)", "faithful"):  # fmt: skip
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            str(run.index), run.kind, f"{run.volumes}/{run.recorded}", str(len(run.unreadable)),
            _g(run.max_signal_diff), _g(run.max_fd_diff_mm), _g(run.max_response_diff), _g(run.response_r),
            "yes" if run.faithful else "[red]no[/]",
        )  # fmt: skip
    console.print(table)
    for run in runs:
        for path in run.unreadable[:5]:
            console.print(f"run {run.index}: {path} is gone or changed since it was recorded")
    if not all(run.faithful for run in runs):
        raise typer.Exit(1)


def report(
    session: SessionArgument,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    db: DbOption = DEFAULT_DB_FILENAME,
    folder: FolderOption = None,
) -> None:
    """Write a session's report: outcome, scores, images, predicted vs measured, time courses, motion.

    Exits with status 1, naming the file, when an image of the session is gone. A session folder that
    moved (with its database) is found beside the database, or give --folder.
    """
    from db import open_database
    from loop.report import write_report

    with open_database(db, read_only=True) as database:
        path = write_report(database, session, out, database_file=_file(db), folder=folder)
    console.print(f"wrote the report of {session} to {path}")


def _file(db: str) -> Path | None:
    """The database's file (None for a server's URL)."""
    return None if "://" in str(db) else Path(db)


def _g(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"
