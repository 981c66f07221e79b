"""The ``cortexloop`` command: one CLI for every part of the system.

The CLI owns the terminal. Library code logs; here logs go to stderr through
rich, tables and progress bars go to stdout, and every error cortexloop
raises on purpose becomes one line on stderr and a non-zero exit status,
never a traceback (set ``CORTEXLOOP_DEBUG=1`` to see one).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from db.base import CortexloopError
from loop.cli._computers import missing_package
from loop.cli.analysis import replay, report
from loop.cli.bridge import app as bridge_app
from loop.cli.db import app as db_app
from loop.cli.insilico import app as insilico_app
from loop.cli.model import app as model_app
from loop.cli.present import present
from loop.cli.session import app as session_app
from loop.cli.simulate import simulate
from loop.cli.sweep import sweep
from loop.cli.synth import decode, synth
from loop.cli.timeseries import app as timeseries_app
from loop.cli.web import web_console

__all__ = ["app", "main"]

app = typer.Typer(
    name="cortexloop",
    help="Closed-loop experiment control for fMRI of the visual cortex.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app.add_typer(timeseries_app, name="timeseries")
app.add_typer(bridge_app, name="bridge")
app.add_typer(db_app, name="db")
app.add_typer(insilico_app, name="insilico")
app.add_typer(model_app, name="model")
app.add_typer(session_app, name="session")
app.command()(synth)
app.command()(decode)
app.command()(present)
app.command()(simulate)
app.command()(sweep)
app.command()(replay)
app.command()(report)
app.command("console")(web_console)

EXIT_ERROR = 1


@app.callback()
def _root(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.", envvar="CORTEXLOOP_LOG_LEVEL")
    ] = "info",
) -> None:
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}; use debug, info, warning or error")
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
        force=True,
    )
    # Alembic narrates every migration step at INFO, and numexpr (under the report's nilearn) its thread
    # count; the CLI reports the outcome itself.
    for chatty in ("alembic", "numexpr"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))


def main() -> None:
    """Entry point of the ``cortexloop`` console script."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        app()
    except CortexloopError as exc:  # the database's own failures come as DatabaseError, named
        if os.environ.get("CORTEXLOOP_DEBUG"):
            raise
        err.print(f"cortexloop: error: {exc}", markup=False)
        sys.exit(EXIT_ERROR)
    except OSError as exc:  # a file or folder the system refused: name it, never a traceback
        if os.environ.get("CORTEXLOOP_DEBUG"):
            raise
        where = f" {exc.filename}" if exc.filename else ""
        err.print(f"cortexloop: error: cannot use{where}: {exc.strerror or exc}", markup=False)
        sys.exit(EXIT_ERROR)
    except ModuleNotFoundError as exc:  # a package of another computer's extra (pyproject.toml)
        advice = missing_package(exc)
        if advice is None or os.environ.get("CORTEXLOOP_DEBUG"):
            raise
        err.print(f"cortexloop: error: {advice}", markup=False)
        sys.exit(EXIT_ERROR)
