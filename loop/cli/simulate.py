"""``cortexloop simulate``: a whole closed-loop session against the virtual subject."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from db.base import ConfigError
from loop.cli._common import console
from loop.config import SessionConfig, load_config

__all__ = ["simulate"]


def simulate(
    config_path: Annotated[
        Path | None, typer.Option("--config", help="A session file (default: the embedded defaults).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Closed-loop rounds (default: the file's).")] = None,
    speed: Annotated[
        float | None, typer.Option(help="Times faster than real time (default: the file's).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="The session's and the virtual subject's seed.")] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="The session database (default: OUT/cortexloop.sqlite).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="The session folder (must not hold a session yet).")
    ] = Path("simulation"),
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Scan and present in this process, as fast as it goes (no network, no processes).",
        ),
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: the GPU when there is one).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help=(
                "Continue the session in OUT that stopped (a part or the whole killed), from its last "
                "committed point; with --in-process again if it ran in process."
            ),
        ),
    ] = False,
) -> None:
    """Run a whole session against the virtual subject: presenter, scanner, bridge and controller.

    Each part runs in a process of its own and they talk over ZeroMQ, as in the scanner; the round
    tables are printed as the rounds end, and the session's database, images, models, logs and
    report are left in OUT. A session whose presenter or scanner died continues with --resume.
    """
    if resume:
        config = _resumable(out, config_path, rounds, speed, seed, db)
    else:
        config = load_config(config_path) if config_path is not None else SessionConfig()
        config = _override(config, rounds=rounds, speed=speed, seed=seed, db=db, out=out)
        if (out / "session.toml").exists():
            raise ConfigError(
                f"{out} holds a session already: continue it with --resume, choose another --out, "
                "or delete it to start over"
            )
    started = time.monotonic()
    if in_process:
        from loop.console import ConsoleObserver
        from loop.simulation.inprocess import simulate_in_process

        simulate_in_process(config, out, device=device, resume=resume, observer=ConsoleObserver(console))
    else:
        from loop.simulation.processes import SimulatedSession

        threading.Thread(target=_load_the_reports_libraries, name="report-imports", daemon=True).start()
        SimulatedSession(config, out, console=console, resume=resume).run()
    report = _print_outcome(config, out)
    console.print(
        f"session done in {time.monotonic() - started:.0f} s; everything is in {out}, the report in {report}"
    )


def _resumable(out: Path, *given: object) -> SessionConfig:
    """The session file of the session in ``out`` to resume; nothing else may be given."""
    if any(value is not None for value in given):
        raise ConfigError(
            "--resume continues the session in --out as its session file says: give no --config, --rounds, "
            "--speed, --seed or --db with it"
        )
    path = out / "session.toml"
    if not path.exists():
        raise ConfigError(f"{out} holds no session to resume (no {path}); start one without --resume")
    config = load_config(path)
    started_in, here = Path(config.session.output), out.resolve()
    database = config.database_target
    if started_in == here or not isinstance(database, Path):
        return config  # where it was started, or recording into a server's database wherever it is
    if not database.is_relative_to(started_in):
        raise ConfigError(
            f"the session in {out} was started in {started_in} and records into {database}, outside it; "
            f"resume it in {started_in}, or copy its database into {out} and set [session] database"
        )
    # A session folder moved or copied elsewhere continues there, into its own database (never the
    # original's): every other path of a simulation is set from its folder (simulation_config).
    moved = dataclasses.replace(
        config.session, output=str(here), database=str(here / database.relative_to(started_in))
    )
    return dataclasses.replace(config, session=moved)


def _override(
    config: SessionConfig,
    *,
    rounds: int | None,
    speed: float | None,
    seed: int | None,
    db: str | None,
    out: Path,
) -> SessionConfig:
    session = dataclasses.replace(
        config.session,
        output=str(out.resolve()),
        database=db or str((out / "cortexloop.sqlite").resolve()),
        kind="simulation",
        seed=config.session.seed if seed is None else seed,
    )
    if rounds is not None and rounds < 0:
        raise ConfigError(f"--rounds must be 0 or more, not {rounds}")
    if speed is not None and not speed > 0:
        raise ConfigError(f"--speed must be positive, not {speed}")
    if rounds is not None:
        config = dataclasses.replace(config, rounds=dataclasses.replace(config.rounds, count=rounds))
    if speed is not None:
        config = dataclasses.replace(config, simulation=dataclasses.replace(config.simulation, speed=speed))
    return dataclasses.replace(config, session=session)


def _load_the_reports_libraries() -> None:
    """Import what the report needs while the session's processes do the work.

    This process only watches them until the session ends; then it writes the report, whose libraries
    (torch, nilearn's plotting, matplotlib) took about 7 s to import at the end of a default session.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import nilearn.plotting  # noqa: F401

        import stimulus.saliency  # noqa: F401
        from loop import quality, replay, report  # noqa: F401
    except Exception:  # the report itself names what is missing, when it is written
        logging.getLogger(__name__).debug("could not import the report's libraries ahead", exc_info=True)


def _print_outcome(config: SessionConfig, out: Path) -> Path:
    """Print the session's outcome; write its report and return where."""
    from db import open_database
    from loop.report import write_report
    from loop.summary import session_outcome

    ref = f"{config.session.subject}/{config.session.session}"
    with open_database(config.database_target) as database:
        with database.reader() as s:
            outcome = session_outcome(s, ref)
        report = write_report(database, ref, out / "report.html", folder=out.resolve())
    table = Table(title=f"{outcome.session}: target vs non-target images over all rounds")
    for column in ("target", "target images", "non-target images", "t", "p", "Cohen's d", "driven"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for c in outcome.contrasts:
        table.add_row(
            c.roi,
            f"{c.target_mean:.2f} (n={c.n_target})",
            f"{c.nontarget_mean:.2f} (n={c.n_nontarget})",
            f"{c.t:.2f}",
            f"{c.p:.3g}",
            f"{c.cohens_d:.2f}",
            "yes" if c.drives_target else "no",
        )
    console.print(table)
    drive = ", ".join(f"round {k}: {v:.2f}" for k, v in outcome.round_drive.items())
    console.print(
        f"{len(outcome.driven)} of {len(outcome.contrasts)} target ROIs driven above non-target images; "
        f"mean measured drive by round (% signal change): {drive or '-'}"
    )
    return report
