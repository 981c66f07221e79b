"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

DEFAULT_DB_ENV = "CORTEXLOOP_DB"
DEFAULT_DB_FILENAME = "cortexloop.sqlite"  # in the folder the command runs in

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=DEFAULT_DB_ENV,
        help=f"Session database: a SQLite path or a SQLAlchemy URL. Default: ${DEFAULT_DB_ENV}, "
        f"else ./{DEFAULT_DB_FILENAME}.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
FolderOption = Annotated[
    Path | None,
    typer.Option("--folder", help="Where the session's folder is now, if it moved away from its database."),
]

# Piped output (a log file, `less`) gets room for whole tables rather than 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def print_json(data: Any) -> None:
    """Write ``data`` (dataclasses, lists, dicts, datetimes) as JSON on stdout."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    elif isinstance(data, list):
        data = [
            dataclasses.asdict(d) if dataclasses.is_dataclass(d) and not isinstance(d, type) else d
            for d in data
        ]
    typer.echo(json.dumps(data, indent=2, default=_default))


def choice(kind: Any, value: str, option: str) -> Any:
    """``value`` if it is one of the ``Literal`` type ``kind``'s choices, else a usage error naming it."""
    choices = typing.get_args(kind)
    if value not in choices:
        raise typer.BadParameter(f"{option} is {value!r}; use {', '.join(choices)}")
    return value


def when(value: dt.datetime | None) -> str:
    """A timestamp for tables: UTC, to the second."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def progress_bars(*, transient: bool, label_width: int = 28) -> Progress:
    """Labelled bars with counts and elapsed time on the CLI's console; ``transient`` clears them after."""
    return Progress(
        TextColumn(f"{{task.description:<{label_width}}}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


def save_figure(fig: Any, path: Path, *, dpi: int = 100) -> None:
    """Write a matplotlib figure to ``path`` as a PNG (atomically) and close it."""
    import io

    import matplotlib.pyplot as plt

    from db.base import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())
