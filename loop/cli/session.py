"""``cortexloop session``: write and check a session's configuration."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from db.base import ConfigError, CortexloopError
from loop.cli._common import console
from loop.config import EXAMPLE, SessionConfig, load_config

if TYPE_CHECKING:
    from db import Database
    from stimulus.image_sets import ImageSet

app = typer.Typer(help="A session's configuration: init, check.", no_args_is_help=True)


@app.command()
def atlas(
    labels: Annotated[Path, typer.Argument(help="The lab's ROI label image (NIfTI).", show_default=False)],
    names: Annotated[Path, typer.Argument(help="Its names (TSV: index, name).", show_default=False)],
    reference: Annotated[
        Path,
        typer.Option(
            help="A volume on the session's grid: a NIfTI the scanner wrote, or a session's reference.npz.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="The label image to write on that grid (NIfTI).", show_default=False)
    ],
) -> None:
    """Put a lab's ROI atlas on the session's grid (each voxel takes the label at its centre), saying
    how many voxels each ROI has there; then name it in [atlas] labels."""
    import gzip

    import nibabel as nib
    import numpy as np

    from db.base import write_atomic
    from loop.analysis.roi import RoiAtlas, resample_atlas
    from loop.recording import read_reference

    found = RoiAtlas.load(labels, names)
    shape, affine = read_reference(reference)
    placed = resample_atlas(found, shape, affine)
    table = Table(
        "ROI", "voxels (mm³) in the lab's atlas", "voxels (mm³) on the session's grid", box=box.SIMPLE_HEAD
    )
    lost = []
    for index, name in sorted(found.names.items()):
        before, after = int((found.labels == index).sum()), int((placed.labels == index).sum())
        table.add_row(name, f"{before} ({before * np.prod(found.voxel_mm):.0f})",
                      f"{after} ({after * np.prod(placed.voxel_mm):.0f})")  # fmt: skip
        if before and not after:
            lost.append(name)
    if lost:
        raise ConfigError(
            f"{', '.join(lost)} of {labels} cover no voxel centre of the grid of {reference}: the atlas is "
            "not where that volume is (check both are of this subject, in scanner coordinates)"
        )
    image = nib.Nifti1Image(placed.labels, placed.affine)
    image.set_sform(placed.affine, code="scanner")
    image.set_qform(placed.affine, code="scanner")
    write_atomic(
        out, gzip.compress(image.to_bytes(), mtime=0) if out.name.endswith(".gz") else image.to_bytes()
    )
    console.print(table)
    console.print(f"wrote {out}; in the session file: [atlas] labels = \"{out}\", names = \"{names}\"",
                  markup=False, soft_wrap=True)  # fmt: skip


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the example.")] = Path("session.toml"),
) -> None:
    """Write a commented example session file (every key, with its default)."""
    try:
        with open(path, "x") as f:
            f.write(EXAMPLE)
    except FileExistsError:
        raise ConfigError(f"{path} exists; choose another name or move it away first") from None
    console.print(f"wrote {path}; edit it, then check it with `cortexloop session check {path}`")


@app.command()
def check(
    path: Annotated[Path, typer.Argument(help="The session file.", show_default=False)],
    live: Annotated[
        bool, typer.Option("--live", help="Also ask the bridge, the presenter and the database.")
    ] = False,
    wait: Annotated[float, typer.Option(help="With --live: seconds to wait for each to answer.")] = 5.0,
) -> None:
    """Validate a session file, naming every problem at once, and print the runs the scanner must acquire.

    With --live, also ask the bridge and the presenter at the file's endpoints (with its key) and the
    database whether each answers and is ready for this session, and say what the bridge holds.
    """
    try:
        config = load_config(path, checks=[_simulation_problems, _image_set_problems])
    except ConfigError as exc:
        problems = exc.problems
        prefix = f"{path}: "
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"{path}: {len(problems)} problem(s); nothing was started", markup=False)
        for problem in problems:
            err.print(f"  - {problem.removeprefix(prefix)}", markup=False)
        raise typer.Exit(1) from None
    s, t, r = config.session, config.training, config.rounds
    shown = t.images + t.repeated * (t.repeats - 1)
    console.print(f"{path}: valid. {s.kind} session {s.subject}/{s.session}, TR {config.scanner.tr_s:g} s")
    if t.images:
        console.print(
            f"training: {t.images} natural images ({t.repeated} shown {t.repeats} times), {shown} trials, "
            f"{t.design} design, {t.trial_s:g} s every {t.isi_s:g} s"
        )
    else:
        console.print("training: none; round 1 synthesizes with the start model")
    if config.model.start:
        console.print(f"model: starts from {', '.join(config.model.start)}", soft_wrap=True)
    console.print(
        f"rounds: {r.count} x {r.targets_per_round} targets ({r.policy}) x {r.images_per_target} images, "
        f"controls: {', '.join(r.controls) or 'none'}"
    )
    if t.image_set:
        found = _image_set(config.resolve(t.image_set))  # read once, by the check above
        converted = (
            f" ({len(found.converted)} used as RGB: {', '.join(found.converted)})" if found.converted else ""
        )
        console.print(
            f"image set {found.source}: {len(found)} images, each readable and distinct{converted}",
            soft_wrap=True,
        )
    table = Table("run", "trials", "volumes", "scanner time", box=box.SIMPLE_HEAD,
                  title="set the scanner's sequence to these volumes per run")  # fmt: skip
    total = 0.0
    for name, trials, volumes in config.scanner_runs():
        seconds = volumes * config.scanner.tr_s
        total += seconds
        table.add_row(name, str(trials), str(volumes), _minutes(seconds))
    table.add_row("all", "", "", _minutes(total))
    console.print(table)
    if live:
        problems = _live_problems(config, path, wait)
        if problems:
            err = Console(stderr=True, highlight=False, soft_wrap=True)
            err.print(f"{path}: {len(problems)} problem(s) with the computers of the session:", markup=False)
            for problem in problems:
                err.print(f"  - {problem}", markup=False)
            raise typer.Exit(1)


def _live_problems(config: SessionConfig, path: Path, wait_s: float) -> list[str]:
    """Ask the bridge, the presenter and the database; print what each says; return what is wrong."""
    from db import open_database
    from scanner_bridge import ReceiveTimeoutError, VolumeReceiver, load_key
    from stimulus import PresenterError
    from stimulus.present.channel import PresenterClient

    problems = []
    key = load_key(config.resolve(config.scanner.key_file))
    bridge = config.scanner.bridge
    try:
        with VolumeReceiver(bridge, key, choice=None) as receiver:
            held = receiver.wait_joined(wait_s)
    except ReceiveTimeoutError as exc:
        problems.append(f"bridge: {exc}")
    else:
        console.print(f"bridge at {bridge}: answers, {len(held)} series so far", soft_wrap=True)
        for info in held[-5:]:
            console.print(f"  {info.describe()}", soft_wrap=True, markup=False)
    presenter = config.scanner.presenter
    try:
        with PresenterClient(presenter, key, timeout_s=wait_s) as client:
            status = client.hello(timeout_s=wait_s)
    except PresenterError as exc:
        problems.append(f"presenter: {exc}")
    else:
        state, run_id = status.get("state"), status.get("run_id")
        console.print(
            f"presenter at {presenter}: answers, {state}{f' ({run_id})' if run_id else ''}, "
            f"{status.get('refresh_hz')} Hz, {status.get('peers')} peer(s)",
            soft_wrap=True,
        )
        if status.get("refresh_warning"):
            problems.append(f"presenter: {status['refresh_warning']}")
        if state not in ("idle", None):
            problems.append(f"presenter: it is {state} with run {run_id}; the session's next plan would wait")
    target = config.database_target
    if isinstance(target, Path) and not target.exists():  # made at the start; a check makes nothing
        if not os.access(target.parent, os.W_OK):
            problems.append(f"database: {target} would be made in {target.parent}, which cannot be written")
        else:
            console.print(f"database {target}: made when the session starts", soft_wrap=True)
        return problems
    again = f"cortexloop session run --config {path} --resume"
    try:
        with open_database(target, read_only=True) as database:
            _check_can_run(database, config, resume=False, again=again)
    except CortexloopError as exc:
        problems.append(f"database: {exc}")
    else:
        ref = f"{config.session.subject}/{config.session.session}"
        console.print(f"database {target}: answers, ready for session {ref}", soft_wrap=True)
    return problems


def _check_can_run(database: Database, config: SessionConfig, *, resume: bool, again: str) -> None:
    """Refuse, before waiting on any other computer, a session that cannot be started or resumed."""
    from db.base import RecordNotFoundError, Status
    from db.queries import model_versions, session_id, session_info
    from loop.config import start_source

    ref = f"{config.session.subject}/{config.session.session}"
    for entry in config.model.start:  # an earlier session to start from must be there, with a model
        if isinstance(start_source(config, entry), str):
            with database.reader() as s:
                try:
                    found = session_id(s, entry)
                except RecordNotFoundError as exc:
                    raise CortexloopError(f"[model] start {entry}: {exc}") from None
                if not model_versions(s, found):
                    raise CortexloopError(f"[model] start {entry}: that session recorded no model")
    try:
        with database.reader() as s:
            status = session_info(s, ref).status
    except RecordNotFoundError:
        if resume:
            raise CortexloopError(
                f"nothing to resume: the database has no session {ref}; start it without --resume"
            ) from None
        return
    if not resume:
        raise CortexloopError(
            f"session {ref} is in the database already ({status}); continue it with `{again}`, "
            "or start another with a new [session] session label"
        )
    if status == Status.COMPLETED:
        raise CortexloopError(
            f"session {ref} is completed; nothing is left to run. Its report: "
            f"`cortexloop report {ref} --db {config.database_target} --out report.html`"
        )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def _image_set_problems(config: SessionConfig) -> list[str]:
    """Every file of the lab's image set opened (each bad one named), and enough of them to train on."""
    t = config.training
    if not t.image_set or not config.resolve(t.image_set).exists():
        return []  # none, or its absence is a problem already
    from stimulus.image_sets import ImageSetError

    try:
        found = _image_set(config.resolve(t.image_set))
    except ImageSetError as exc:
        return [f"[training] image_set {config.resolve(t.image_set)}: {p}" for p in exc.problems]
    if len(found) < t.images:
        return [f"[training] images is {t.images}, but the image set has {len(found)} usable image(s)"]
    return []


@functools.cache
def _image_set(source: Path) -> ImageSet:
    """A lab's image set, every file opened; kept, so that checking and describing it read it once."""
    from stimulus.image_sets import read_image_set

    return read_image_set(source)


def _simulation_problems(config: SessionConfig) -> list[str]:
    """A simulation's targets against the virtual subject's atlas (a scanner session's: its own atlas)."""
    if config.session.kind != "simulation":
        return []
    from loop.simulation.rois import ROI_NAMES

    missing = [roi for roi in config.rounds.targets if roi not in ROI_NAMES]
    if not missing:
        return []
    return [
        f"[rounds] targets {', '.join(missing)} are not ROIs of the virtual subject "
        f"(it has {', '.join(ROI_NAMES)})"
    ]


@app.command()
def run(
    config_path: Annotated[Path, typer.Option("--config", help="The session file.", show_default=False)],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the session from its last committed point.")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: the GPU when there is one).")
    ] = None,
) -> None:
    """Run a session: the training run, then the rounds, with the operator's console.

    The presenter (`cortexloop present`) and the bridge (`cortexloop bridge watch`) must be running at
    the session file's endpoints with the same key file. A session stopped for any reason (a crash, a
    killed process, Ctrl-C) continues where it was with --resume.
    """
    from db import open_database
    from loop.acquisition import NetworkAcquisition, NetworkSettings
    from loop.console import ConsoleObserver
    from loop.errors import AcquisitionError
    from loop.session import Controller
    from scanner_bridge import load_key
    from stimulus._torch import reuse_freed_memory

    reuse_freed_memory()
    config = load_config(config_path)
    simulated = config.session.kind == "simulation"
    settings = NetworkSettings(
        presenter=config.scanner.presenter,
        bridge=config.scanner.bridge,
        key=load_key(config.resolve(config.scanner.key_file)),
        volume_timeout_s=config.scanner.volume_timeout_s,
        trigger_timeout_s=config.scanner.trigger_timeout_s,
        speed=config.simulation.speed if simulated else 1.0,
    )
    observer = ConsoleObserver(console)
    again = f"cortexloop session run --config {config_path} --resume"
    # The database first: a session that cannot be started or resumed says so before any wait.
    with open_database(config.database_target, create=True) as database:
        _check_can_run(database, config, resume=resume, again=again)
        acquisition = NetworkAcquisition(settings)
        try:
            controller = Controller(config, database, acquisition, observer=observer, device=device)
            if simulated:  # the simulated scanner must be listening before the first plan is armed
                acquisition.wait_for_peers(2, timeout_s=config.scanner.trigger_timeout_s)
            controller.run(resume=resume)
        except KeyboardInterrupt:
            Console(stderr=True).print(
                f"cortexloop: stopped; everything committed is kept: continue with `{again}`", markup=False
            )
            raise typer.Exit(130) from None
        except AcquisitionError as exc:  # the bridge, the presenter or the scanner stopped the run
            raise CortexloopError(f"{exc}; everything committed is kept: continue with `{again}`") from None
        finally:
            acquisition.close()
