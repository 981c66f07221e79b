"""``cortexloop console``: the live console in the browser (:mod:`loop.web_console`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated

import typer

from loop.cli._common import DEFAULT_DB_FILENAME, DbOption, console

__all__ = ["web_console"]


def web_console(
    db: DbOption = DEFAULT_DB_FILENAME,
    session: Annotated[
        str | None, typer.Option(help="SUBJECT/SESSION to show first (default: the newest).")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to serve on (0.0.0.0: every interface of this computer).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to serve on.")] = 8765,
    token: Annotated[
        str | None, typer.Option(help="The token the URL must carry (default: a new random one).")
    ] = None,
    fd_threshold: Annotated[
        float, typer.Option(help="Framewise displacement (mm) above which a volume is flagged.")
    ] = 0.5,
) -> None:
    """Serve the session in progress (and past ones) to a browser, live, read-only, behind a token.

    Volumes arriving per run (missing and late ones counted), processing time, framewise displacement
    against --fd-threshold, ROI time courses, warnings: read from the database as they are recorded.
    """
    import uvicorn

    from db import open_database
    from loop.web_console import ConsoleSettings, console_app

    if token is not None and len(token) < 8:
        raise typer.BadParameter("--token must have at least 8 characters")
    settings = ConsoleSettings(session=session, fd_threshold_mm=fd_threshold)
    if token is not None:
        settings = dataclasses.replace(settings, token=token)
    with open_database(db, read_only=True) as database:
        app = console_app(database, settings)
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
        console.print(f"console at http://{shown}:{port}/?token={settings.token}", soft_wrap=True)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
