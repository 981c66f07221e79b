"""``cortexloop db``: create, upgrade, list, show and export session databases."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.table import Table

from db.base import CortexloopError, EventLevel
from loop.cli._common import (
    DEFAULT_DB_FILENAME,
    DbOption,
    FolderOption,
    JsonOption,
    console,
    print_json,
    when,
)

app = typer.Typer(help="The session database: create, upgrade, query, export.", no_args_is_help=True)

SessionArg = Annotated[str, typer.Argument(help="Session id, or sub-X/ses-Y.", show_default=False)]


@app.command()
def upgrade(db: DbOption = DEFAULT_DB_FILENAME) -> None:
    """Create the database, or upgrade its schema to this cortexloop's. Back it up first."""
    from db.database import upgrade_database

    before, after = upgrade_database(db)
    if before == after:
        console.print(f"{db}: schema already at revision {after}")
    else:
        console.print(f"{db}: schema {before or '(new database)'} -> {after}")


@app.command()
def sessions(
    db: DbOption = DEFAULT_DB_FILENAME,
    subject: Annotated[str | None, typer.Option(help="Only this subject's sessions.")] = None,
    json: JsonOption = False,
) -> None:
    """List the sessions in the database, oldest first."""
    from db import open_database
    from db.queries import list_sessions

    with open_database(db, read_only=True) as database, database.reader() as s:
        rows = list_sessions(s, subject=subject)
    if json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"sessions in {database.name}")
    for column in (
        "id",
        "session",
        "kind",
        "status",
        "started (UTC)",
        "ended (UTC)",
        "runs",
        "rounds",
        "volumes",
    ):
        table.add_column(column, justify="right" if column in {"id", "runs", "rounds", "volumes"} else "left")
    for r in rows:
        table.add_row(
            str(r.id), r.ref, r.kind, r.status, when(r.started_at), when(r.ended_at),
            str(r.n_runs), str(r.n_rounds), str(r.n_volumes),
        )  # fmt: skip
    console.print(table)
    if not rows:
        console.print("no sessions recorded yet")


@app.command()
def subject(
    name: Annotated[str, typer.Argument(help="The subject, e.g. sub-01 or 01.", show_default=False)],
    db: DbOption = DEFAULT_DB_FILENAME,
    json: JsonOption = False,
) -> None:
    """One subject across sessions: each session's drive in its last round, and its models' lineage."""
    from db import open_database
    from db.queries import list_sessions, model_versions, session_scores
    from loop.scoring import Metric

    with open_database(db, read_only=True) as database, database.reader() as s:
        sessions = list_sessions(s, subject=name)
        rows: list[dict[str, Any]] = []
        for summary in sessions:
            last, mean = _last_round(session_scores(s, summary.id))
            models = model_versions(s, summary.id)
            rows.append(
                {
                    "id": summary.id, "session": summary.ref, "status": summary.status,
                    "started_at": summary.started_at, "rounds": summary.n_rounds, "last_round": last,
                    "drive": mean(Metric.DRIVE), "drive_vs_best": mean(Metric.DRIVE_VS_BEST),
                    "true_drive": mean(Metric.TARGET_TRUE),
                    "models": [
                        {"id": m.id, "parent": m.parent_id, "training_stimuli": m.n_training_stimuli,
                         "sha256": m.artifact_sha256, "path": m.artifact_path, "created_at": m.created_at}
                        for m in models
                    ],
                }
            )  # fmt: skip
    if json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no sessions of subject {name} in {database.name}")
        raise typer.Exit(1)
    table = Table(box=box.SIMPLE_HEAD, title=f"subject {name}: the drive by session (its last round)")
    for column in (
        "session",
        "status",
        "started (UTC)",
        "rounds",
        "drive (%)",
        "vs best natural",
        "true (sim.)",
    ):
        table.add_column(
            column, justify="left" if column in {"session", "status", "started (UTC)"} else "right"
        )

    def figure(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    for row in rows:
        table.add_row(
            row["session"], row["status"], when(row["started_at"]), str(row["rounds"]), figure(row["drive"]),
            figure(row["drive_vs_best"]), figure(row["true_drive"]),
        )  # fmt: skip
    console.print(table)
    lineage = Table(
        box=box.SIMPLE_HEAD, title=f"subject {name}: encoding models, each refitted from its parent"
    )
    for column in ("session", "model", "from", "training images", "sha256", "file"):
        lineage.add_column(
            column, justify="right" if column in {"model", "from", "training images"} else "left"
        )
    for row in rows:
        for m in row["models"]:
            lineage.add_row(
                row["session"], str(m["id"]), str(m["parent"] or "-"), str(m["training_stimuli"] or "-"),
                m["sha256"][:12], m["path"],
            )  # fmt: skip
    console.print(lineage)


def _last_round(scores: list[Any]) -> tuple[int | None, Callable[[str], float | None]]:
    """A session's last scored round, and the mean of a metric's values in it (None: none recorded)."""
    last = max((x.round_index for x in scores if x.round_index is not None), default=None)

    def mean(metric: str) -> float | None:
        values = [x.value for x in scores if x.metric == metric and x.round_index == last]
        return float(np.mean(values)) if values and last is not None else None

    return last, mean


@app.command()
def show(session: SessionArg, db: DbOption = DEFAULT_DB_FILENAME, json: JsonOption = False) -> None:
    """Show one session: its runs, rounds, counts and scores."""
    from db import open_database
    from db.queries import session_detail

    with open_database(db, read_only=True) as database, database.reader() as s:
        detail = session_detail(s, session)
    if json:
        print_json(detail)
        return
    summary = detail.session
    console.print(
        f"[bold]{summary.ref}[/bold] (id {summary.id}): {summary.kind}, {summary.status}, "
        f"started {when(summary.started_at)} UTC, ended {when(summary.ended_at)}"
    )
    console.print(f"ROIs: {', '.join(detail.rois) or '-'}; distinct stimuli shown: {detail.n_stimuli}")
    events = ", ".join(f"{n} {level}" for level, n in sorted(detail.events_by_level.items())) or "none"
    console.print(f"events: {events}")

    runs = Table(box=box.SIMPLE_HEAD, title="runs")
    for column in (
        "run",
        "kind",
        "round",
        "status",
        "TR (s)",
        "volumes",
        "missing",
        "late",
        "trials",
        "shown",
    ):
        runs.add_column(column)
    for r in detail.runs:
        planned = f"/{r.n_volumes_planned}" if r.n_volumes_planned else ""
        runs.add_row(
            str(r.index), r.kind, str(r.round_index or "-"), r.status, f"{r.tr_s:g}",
            f"{r.n_volumes}{planned}", str(r.n_missing), str(r.n_late),
            str(r.n_presentations), str(r.n_shown),
        )  # fmt: skip
    console.print(runs)

    if detail.rounds:
        rounds = Table(box=box.SIMPLE_HEAD, title="rounds")
        for column in ("round", "status", "policy", "targets", "started (UTC)"):
            rounds.add_column(column)
        for rd in detail.rounds:
            rounds.add_row(
                str(rd.index), rd.status, rd.policy or "-", ", ".join(rd.targets), when(rd.started_at)
            )
        console.print(rounds)
    if detail.scores:
        scores = Table(box=box.SIMPLE_HEAD, title="scores")
        for column in ("metric", "round", "run", "ROI", "value"):
            scores.add_column(column)
        for sc in detail.scores:
            scores.add_row(
                sc.metric,
                str(sc.round_index or "-"),
                str(sc.run_index or "-"),
                sc.roi or "-",
                f"{sc.value:.4g}",
            )
        console.print(scores)


@app.command()
def events(
    session: SessionArg,
    db: DbOption = DEFAULT_DB_FILENAME,
    level: Annotated[EventLevel | None, typer.Option(help="Only this level.", case_sensitive=False)] = None,
    json: JsonOption = False,
) -> None:
    """List a session's event log: warnings, gaps, errors."""
    from db import open_database
    from db.queries import session_events, session_id

    with open_database(db, read_only=True) as database, database.reader() as s:
        rows = session_events(s, session_id(s, session))
    if level is not None:
        rows = [r for r in rows if r.level == level.value]
    if json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"events of {session}")
    for column in ("time (UTC)", "level", "source", "code", "run", "volume", "message"):
        table.add_column(column)
    for e in rows:
        table.add_row(
            when(e.at), e.level, e.source, e.code, str(e.run_index or "-"),
            "-" if e.volume_index is None else str(e.volume_index), e.message,
        )  # fmt: skip
    console.print(table)


@app.command()
def export(
    session: SessionArg,
    out: Annotated[Path, typer.Option("--out", help="The BIDS dataset to write into (made if needed).")],
    db: DbOption = DEFAULT_DB_FILENAME,
    folder: FolderOption = None,
) -> None:
    """Export a session as a BIDS dataset: events, stimuli, BOLD runs; cortexloop's analysis as derivatives.

    The images and volume files are read where the session wrote them; a session folder that moved (with
    its database) is found beside the database, or give --folder.
    """
    from db import export_session, open_database
    from db.queries import session_info
    from loop.folder import Relocation
    from scanner_bridge.readers import VolumeFiles

    with open_database(db, read_only=True) as database:
        with database.reader() as s:
            config_toml = session_info(s, session).config_toml
        located = Relocation.find(config_toml, database_file=None if "://" in db else Path(db), folder=folder)
        try:
            written = export_session(
                database, session, out, stimuli=located.stimuli(config_toml), locate=located.path,
                read_volume=VolumeFiles().arrays,  # DICOM too: slices, mosaics, multi-frame
            )  # fmt: skip
        except OSError as exc:
            raise CortexloopError(
                f"cannot write the export into {exc.filename or out} ({exc.strerror or exc}); "
                "choose a folder you can write with --out"
            ) from None
    console.print(f"{len(written)} files written into {out}")


@app.command()
def sweeps(db: DbOption = DEFAULT_DB_FILENAME, json: JsonOption = False) -> None:
    """List the protocol sweeps (cortexloop sweep) in the database, with their sessions' counts."""
    from db import open_database
    from db.sweeps import list_sweeps

    with open_database(db, read_only=True) as database, database.reader() as s:
        rows = list_sweeps(s)
    if json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"sweeps in {database.name}")
    for column in ("id", "sweep", "created (UTC)", "completed", "failed"):
        table.add_column(column, justify="left" if column in {"sweep", "created (UTC)"} else "right")
    for r in rows:
        table.add_row(str(r.id), r.name, when(r.created_at), str(r.completed), str(r.failed))
    console.print(table)
    if not rows:
        console.print("no sweeps recorded yet")


@app.command()
def sweep(
    name: Annotated[str, typer.Argument(help="The sweep's name.", show_default=False)],
    db: DbOption = DEFAULT_DB_FILENAME,
    json: JsonOption = False,
) -> None:
    """List one sweep's sessions: each setting and seed, its session, where it ran, or why it failed."""
    from db import open_database
    from db.sweeps import sweep_sessions

    with open_database(db, read_only=True) as database, database.reader() as s:
        rows = sweep_sessions(s, name)
    if json:
        print_json(rows)
        return
    table = Table(box=box.SIMPLE_HEAD, title=f"sweep {name}")
    for column in (
        "setting",
        "seed",
        "status",
        "session",
        "worker",
        "minutes",
        "true / pool's best",
        "error",
    ):
        table.add_column(column)
    for r in rows:
        figure = (r.figures or {}).get("summary", {}).get("mean_vs_pool_best")
        table.add_row(
            r.setting, str(r.seed), r.status, r.session or "-", r.worker or "-",
            "-" if r.seconds is None else f"{r.seconds / 60:.1f}",
            "-" if figure is None else f"{figure:.3f}", r.error or "",
        )  # fmt: skip
    console.print(table)


@app.command()
def revision() -> None:
    """Print the newest schema revision this cortexloop knows."""
    from db.schema import head_revision

    console.print(head_revision())
