"""``cortexloop demo``: run the whole simulated session on the embedded defaults.

What runs today is what exists: a rehearsal run recorded through the session
database, listed and exported. The closed loop itself (bridge, encoding model,
synthesis, presenter, simulated scanner, controller) is not built yet, and
the command says so rather than pretending.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db import export_session, open_database
from db.queries import session_detail
from loop.cli._common import console
from loop.rehearsal import record_rehearsal

NOT_YET = (
    "The closed loop (scanner bridge, encoding model, synthesis, presenter, simulated scanner "
    "and controller) is not built yet. This demo records a synthetic rehearsal run through the "
    "session database and exports it, which is the part of cortexloop that exists today."
)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's database and files.")] = Path(
        "demo-output"
    ),
) -> None:
    """Run the simulated session end to end on the embedded defaults."""
    console.print(f"[yellow]{NOT_YET}[/yellow]")
    out.mkdir(parents=True, exist_ok=True)
    db_path = out / "demo.sqlite"
    db_path.unlink(missing_ok=True)  # the demo's own scratch database, remade each time
    with open_database(db_path, create=True) as database:
        result = record_rehearsal(database, out / "stimuli")
        with database.reader() as s:
            detail = session_detail(s, str(result.session_id))
        written = export_session(database, str(result.session_id), out / "export")
    run = detail.runs[0]
    console.print(
        f"recorded {detail.session.ref} in {db_path}: run {run.index} ({run.kind}), "
        f"{run.n_volumes} volumes of {len(detail.rois)} ROIs, {run.n_missing} missing (logged), "
        f"{run.n_shown}/{run.n_presentations} trials with measured onsets"
    )
    console.print(f"exported {len(written)} files to {out / 'export'}")
    console.print(f"look further with: cortexloop db show {result.session_id} --db {db_path}")
