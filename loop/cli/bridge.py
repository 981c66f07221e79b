"""``cortexloop bridge``: watch an export directory, listen for volumes, replay a run, make a key.

Other tools and the tests drive these commands exactly as documented in the
README; keep their options and output stable.
"""

from __future__ import annotations

import enum
import gzip
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from db.base import write_atomic
from loop.cli._common import console
from scanner_bridge import (
    BridgeError,
    ReceiverConfig,
    ReceiveTimeoutError,
    ScaledClock,
    SeriesChoice,
    Spool,
    VolumePublisher,
    VolumeReceiver,
    WatchConfig,
    generate_key_file,
    load_key,
)
from scanner_bridge.config import DEFAULT_AE_TITLE, DEFAULT_PORT
from scanner_bridge.source import BridgeEvent, log_event
from scanner_bridge.transport import default_spool_dir
from scanner_bridge.volume import Volume

if TYPE_CHECKING:  # the readers and writers load nibabel and pydicom: imported by the commands that use them
    from scanner_bridge import DirectoryWatcher
    from scanner_bridge.dicom_node import DicomNode

app = typer.Typer(help="The scanner bridge: watch, listen, replay, keygen.", no_args_is_help=True)
logger = logging.getLogger(__name__)

EndpointOption = Annotated[
    str,
    typer.Option(
        "--endpoint",
        help="ZeroMQ endpoint, e.g. tcp://*:5555 to bind, tcp://scanner-pc:5555 to connect, ipc:///tmp/b.",
        show_default=False,
    ),
]
KeyOption = Annotated[
    Path,
    typer.Option("--key-file", help="Shared key (cortexloop bridge keygen), mode 0600.", show_default=False),
]


def _stop_on_sigterm(stop: threading.Event, *closers: Callable[[], None]) -> None:
    """SIGTERM (what process managers send) ends the command as Ctrl-C does."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        for close in closers:
            close()

    signal.signal(signal.SIGTERM, handler)


@app.command()
def keygen(path: Annotated[Path, typer.Argument(help="Where to write the key.", show_default=False)]) -> None:
    """Write a new random shared key with mode 0600. Copy it to the controller's computer securely."""
    generate_key_file(path)
    console.print(f"wrote a new key to {path} (mode 0600); use the same file on both computers")


SeriesOption = Annotated[
    str | None,
    typer.Option(help="Follow this series (number or UID) alone; default: every series of the session."),
]
SpoolOption = Annotated[Path | None, typer.Option(help="Where validated volumes are kept for resending.")]
SlicesOption = Annotated[int | None, typer.Option(help="For single-slice DICOM that does not say.")]


@app.command()
def watch(
    export_dir: Annotated[
        Path, typer.Argument(help="The scanner's real-time export directory.", show_default=False)
    ],
    endpoint: EndpointOption,
    key_file: KeyOption,
    polling: Annotated[bool, typer.Option(help="Poll instead of inotify events (network shares).")] = False,
    series: SeriesOption = None,
    spool: SpoolOption = None,
    slices_per_volume: SlicesOption = None,
    incomplete_timeout: Annotated[
        float, typer.Option(help="Seconds to retry a file that does not parse.")
    ] = 5.0,
) -> None:
    """Publish every complete volume written into EXPORT_DIR on ENDPOINT, until interrupted.

    One bridge serves a whole session: every series that begins while it runs is announced to the
    receivers, each of which takes its run's series. Files already in EXPORT_DIR when it starts are
    earlier series, served only if their series goes on or a receiver asks for it by name. With
    --series the bridge follows that series alone. Volumes are kept in a spool of this bridge's own
    inside --spool (default: ~/.cache/cortexloop/spool, which must be a folder only you can write),
    so that any of them can be sent again.
    """
    from scanner_bridge import DirectoryWatcher

    config = WatchConfig(
        polling=polling,
        series=series,
        slices_per_volume=slices_per_volume,
        incomplete_timeout_s=incomplete_timeout,
    )

    def source(on_event: Callable[[BridgeEvent], None]) -> DirectoryWatcher:
        return DirectoryWatcher(export_dir, config=config, on_event=on_event)

    how = f"watching {export_dir} ({'polling' if config.polling else 'inotify'})"
    _serve(source, how, endpoint=endpoint, key_file=key_file, spool=spool)


@app.command()
def receive(
    endpoint: EndpointOption,
    key_file: KeyOption,
    store: Annotated[
        Path, typer.Option(help="Folder where every object received is kept (the session's record).")
    ],
    port: Annotated[int, typer.Option(help="The TCP port the scanner sends to.")] = DEFAULT_PORT,
    ae_title: Annotated[
        str, typer.Option(help="This node's AE title, as set on the scanner.")
    ] = DEFAULT_AE_TITLE,
    series: SeriesOption = None,
    spool: SpoolOption = None,
    slices_per_volume: SlicesOption = None,
    incomplete_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the rest of a volume's slices.")
    ] = 5.0,
) -> None:
    """Be the DICOM node the scanner pushes images to, and publish every complete volume on ENDPOINT.

    A DICOM Storage SCP (C-STORE) on --port, answering associations that call --ae-title. Each
    object received is written to --store; slices wait for the rest of their volume; every series is
    announced, as `bridge watch` does with files.
    """
    config = WatchConfig(
        series=series, slices_per_volume=slices_per_volume, incomplete_timeout_s=incomplete_timeout
    )

    from scanner_bridge.dicom_node import DicomNode  # pynetdicom: loaded by this command alone

    def source(on_event: Callable[[BridgeEvent], None]) -> DicomNode:
        return DicomNode(store, port=port, ae_title=ae_title, config=config, on_event=on_event)

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # not a line per association at INFO

    how = f"receiving DICOM as {ae_title} on port {port}, storing in {store}"
    _serve(source, how, endpoint=endpoint, key_file=key_file, spool=spool)


def _serve(
    make_source: Callable[[Callable[[BridgeEvent], None]], DirectoryWatcher | DicomNode],
    how: str,
    *,
    endpoint: str,
    key_file: Path,
    spool: Path | None,
) -> None:
    """Publish every volume of the source on ``endpoint`` until interrupted (SIGTERM or Ctrl-C)."""
    from scanner_bridge import DirectoryWatcher

    key = load_key(key_file)
    spool_root = spool or default_spool_dir()
    with VolumePublisher(endpoint, key, Spool(spool_root)) as publisher:

        def on_event(event: BridgeEvent) -> None:
            log_event(event)
            publisher.publish(event)

        with make_source(on_event) as source:
            if isinstance(source, DirectoryWatcher):
                publisher.on_wanted = source.want
            stop = threading.Event()
            _stop_on_sigterm(stop, source.close)
            logger.info("%s, publishing on %s, spool %s", how, publisher.endpoint, spool_root)
            try:
                for volume in source:
                    publisher.publish(volume)
                    logger.debug("volume %d from %s", volume.index, volume.source)
            except KeyboardInterrupt:
                pass
    logger.info("bridge stopped")


def _save(volume: Volume, out: Path) -> Path:
    from scanner_bridge.writers import nifti_bytes

    path = out / f"vol_{volume.index:05d}.nii.gz"
    data = gzip.compress(nifti_bytes(volume.data, volume.affine, tr_s=volume.tr_s), compresslevel=1)
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise BridgeError(
            f"cannot write volume {volume.index} to {out}: {exc}. Volumes before it are saved; the bridge "
            f"keeps this one: free space, then run listen again with --start-index {volume.index}"
        ) from exc
    return path


@app.command()
def listen(
    endpoint: EndpointOption,
    key_file: KeyOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for the received volumes.", show_default=False)],
    count: Annotated[int | None, typer.Option(help="Stop after this many volumes; exit 0.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
    start_index: Annotated[
        int, typer.Option(help="First index wanted (after a restart: one past the last one kept).")
    ] = 0,
    missing_after_trs: Annotated[
        float, typer.Option(help="Declare a volume missing this many TRs after it was due.")
    ] = 2.0,
    speed: Annotated[
        float, typer.Option(help="The replay's speed factor, so that TRs are counted on its clock.")
    ] = 1.0,
    series: Annotated[
        str | None,
        typer.Option(help="The series to receive (name, number or UID); default: the first the bridge has."),
    ] = None,
) -> None:
    """Receive one series' volumes from a bridge, write each as DIR/vol_NNNNN.nii.gz, print a JSON line each.

    Lines: {"index", "status" (ok, late or missing), "shape", "latency_ms"}, then
    {"summary": {...}} with the counts of received, missing, duplicate and rejected messages.
    """
    key = load_key(key_file)
    out.mkdir(parents=True, exist_ok=True)
    config = ReceiverConfig(missing_after_trs=missing_after_trs)
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    if not speed > 0:
        raise typer.BadParameter(f"--speed must be positive, got {speed}")
    clock = ScaledClock(speed)
    choice = SeriesChoice(name=series)
    with VolumeReceiver(
        endpoint, key, start_index=start_index, config=config, clock=clock, choice=choice
    ) as receiver:
        stop = threading.Event()
        _stop_on_sigterm(stop)
        try:
            while not stop.is_set() and (count is None or receiver.stats.received < count):
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    arrival = receiver.get(timeout_s=wait if wait is not None else 0.5)
                except ReceiveTimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        timed_out = True
                        break
                    continue
                line: dict[str, object] = {"index": arrival.index, "status": arrival.status.value}
                if arrival.volume is not None:
                    _save(arrival.volume, out)
                    line["shape"] = list(arrival.volume.shape)
                    latency = arrival.volume.latency_ms("seen", "received")
                    line["latency_ms"] = None if latency is None else round(latency, 3)
                else:
                    line["shape"], line["latency_ms"] = None, None
                typer.echo(json.dumps(line))
        except KeyboardInterrupt:
            pass
        stats = receiver.stats.as_dict()
    typer.echo(json.dumps({"summary": stats}))
    if count is None and stats["received"] == 0 and not stop.is_set():
        logger.error(
            "received no volume from %s%s; is a bridge serving there, with this key?",
            endpoint, f" in {timeout:g} s" if timed_out else "",
        )  # fmt: skip
        raise typer.Exit(1)
    if count is not None and stats["received"] < count:
        reason = f"timed out after {timeout:g} s" if timed_out else "stopped"
        logger.error("%s with %d of %d volumes", reason, stats["received"], count)
        raise typer.Exit(1)


def _indices(text: str | None) -> frozenset[int]:
    if not text:
        return frozenset()
    try:
        return frozenset(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of volume indices") from None


class ExportFormat(enum.StrEnum):
    """How ``bridge replay`` writes volumes (``scanner_bridge.replay.FORMATS``)."""

    NIFTI = "nifti"
    DICOM = "dicom"


@app.command()
def replay(
    source: Annotated[
        Path, typer.Argument(help="A 4D NIfTI, or a folder of 3D NIfTI or DICOM files.", show_default=False)
    ],
    export_dir: Annotated[
        Path, typer.Argument(help="Where to write, as the scanner would.", show_default=False)
    ],
    tr: Annotated[float, typer.Option("--tr", help="Seconds between volumes.", show_default=False)],
    speed: Annotated[float, typer.Option(help="Replay this many times faster than real time.")] = 1.0,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="nifti (one file per volume) or dicom (slices).")
    ] = ExportFormat.NIFTI,
    count: Annotated[int | None, typer.Option(help="Only the first N volumes.")] = None,
    drop: Annotated[str | None, typer.Option(help="Indices never written, e.g. 3,7.")] = None,
    duplicate: Annotated[str | None, typer.Option(help="Indices written twice.")] = None,
    corrupt: Annotated[str | None, typer.Option(help="Indices written cut in half, never completed.")] = None,
    shuffle_window: Annotated[int, typer.Option(help="Shuffle the order within blocks of N volumes.")] = 0,
    chunks: Annotated[int, typer.Option(help="Write each file in N pieces (a slow exporter).")] = 1,
    chunk_delay: Annotated[float, typer.Option(help="Seconds between pieces.")] = 0.0,
    atomic: Annotated[bool, typer.Option(help="Write under a hidden name and rename into place.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 0,
    series: Annotated[
        str | None, typer.Option(help="Which run of a folder holding several, e.g. run02_vol_#####.nii.")
    ] = None,
) -> None:
    """Write a recorded run into EXPORT_DIR one volume per TR, optionally with the faults of real exports."""
    if not tr > 0:
        raise typer.BadParameter(f"--tr must be positive, got {tr}")
    if not speed > 0:
        raise typer.BadParameter(f"--speed must be positive, got {speed}")
    from scanner_bridge import RecordedRun, ReplayFaults, replay_to_directory

    run = RecordedRun.load(source, series=series)
    faults = ReplayFaults(
        drop=_indices(drop),
        duplicate=_indices(duplicate),
        corrupt=_indices(corrupt),
        shuffle_window=shuffle_window,
        chunks=chunks,
        chunk_delay_s=chunk_delay,
    )
    stop = threading.Event()
    _stop_on_sigterm(stop)
    n = run.n_volumes if count is None else min(count, run.n_volumes)
    logger.info("replaying %d volumes of %s into %s every %g s (x%g)", n, source, export_dir, tr, speed)
    try:
        report = replay_to_directory(
            run,
            export_dir,
            tr_s=tr,
            clock=ScaledClock(speed),
            fmt=format.value,
            faults=faults,
            atomic=atomic,
            count=count,
            seed=seed,
            stop=stop,
        )
    except KeyboardInterrupt:
        logger.info("replay interrupted")
        return
    complete = len(set(report.written) - set(report.corrupted))
    console.print(
        f"wrote {complete} volumes to {export_dir}"
        + (f"; dropped {sorted(report.dropped)}" if report.dropped else "")
        + (f"; corrupted {sorted(report.corrupted)}" if report.corrupted else "")
        + (f"; duplicated {sorted(report.duplicated)}" if report.duplicated else "")
    )


@app.command()
def simulate(
    export_dir: Annotated[
        Path, typer.Argument(help="Where to write the volumes (the bridge watches it).", show_default=False)
    ],
    tr: Annotated[float, typer.Option("--tr", help="Seconds between volumes.", show_default=False)],
    subject: Annotated[
        str, typer.Option(help="`default`, or a TOML file of SubjectConfig fields (docs/simulation.md).")
    ] = "default",
    seed: Annotated[int | None, typer.Option(help="The subject's seed (overrides the spec's).")] = None,
    speed: Annotated[
        float, typer.Option(help="Times faster than real time; 0 = as fast as possible (with --plan only).")
    ] = 1.0,
    format: Annotated[
        ExportFormat, typer.Option("--format", help="nifti (one file per volume) or dicom (slices).")
    ] = ExportFormat.NIFTI,
    volumes: Annotated[
        int | None, typer.Option(help="Volumes per run (default: the plan's, as the presenter announces it).")
    ] = None,
    presenter: Annotated[
        str | None, typer.Option(help="The presenter's endpoint: send it triggers, take its onsets.")
    ] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="Shared key, with --presenter.")] = None,
    plan: Annotated[
        Path | None, typer.Option(help="A run plan (JSON) to show the subject without a presenter.")
    ] = None,
    runs: Annotated[int, typer.Option(help="With --presenter: how many runs to acquire, one per plan.")] = 1,
    arm_timeout: Annotated[
        float,
        typer.Option(
            help="Real seconds to wait for the presenter to arm each run (the controller may be "
            "refitting and synthesizing between runs)."
        ),
    ] = 600.0,
    first_run: Annotated[
        int, typer.Option(help="Number of the first run (names its files, seeds its noise).")
    ] = 1,
    stimulus_dir: Annotated[Path, typer.Option(help="Where the plans' image paths point.")] = Path("."),
    truth: Annotated[
        Path | None, typer.Option(help="Where the ground truth goes (default: EXPORT_DIR-truth).")
    ] = None,
) -> None:
    """Scan a virtual subject: triggers out, the presenter's onsets in, volumes written as each TR ends."""
    from loop.simulation.scanner import SimulatedScanner
    from loop.simulation.subject import SubjectConfig, VirtualSubject
    from stimulus.present import RunPlan, VirtualClock
    from stimulus.present.channel import PresenterClient

    if (presenter is None) == (plan is None):
        raise typer.BadParameter("give either --presenter ENDPOINT (with --key-file) or --plan FILE")
    if speed < 0 or (speed == 0 and presenter is not None):
        raise typer.BadParameter(
            "--speed must be positive with a presenter (0, as fast as possible, needs --plan)"
        )
    if presenter is not None and key_file is None:
        raise typer.BadParameter("--presenter needs --key-file")
    config = SubjectConfig.from_spec(subject, seed=seed)
    run_plan = None
    if plan is not None:
        try:
            run_plan = RunPlan.from_json(plan.read_text())
        except OSError as exc:
            raise typer.BadParameter(f"cannot read the plan {plan}: {exc.strerror or exc}") from None
        if run_plan.tr_s != tr:
            raise typer.BadParameter(f"the plan's TR is {run_plan.tr_s} s, not --tr {tr}")
    clock = VirtualClock() if speed == 0 else ScaledClock(speed)
    console.print(f"building virtual subject {config.name} (seed {config.seed})...")
    scanner = SimulatedScanner(
        VirtualSubject(config), export_dir, tr_s=tr, clock=clock, fmt=format, stimulus_dir=stimulus_dir,
        truth_dir=truth,
    )  # fmt: skip
    stop = threading.Event()
    _stop_on_sigterm(stop)
    client = None
    if presenter is not None:
        assert key_file is not None
        client = PresenterClient(presenter, load_key(key_file), role="scanner")
    try:
        for number in range(first_run, first_run + (runs if client is not None else 1)):
            started = time.monotonic()
            record = scanner.run(
                volumes, run=number, presenter=client, plan=run_plan, stop=stop, armed_timeout_s=arm_timeout
            )
            took = time.monotonic() - started
            console.print(
                f"run {number} ({record.run_id}): {len(record.files)} volumes in {took:.1f} s, "
                f"{record.presentations} presentations; truth in {record.truth}"
            )
            if stop.is_set():
                break
    except KeyboardInterrupt:
        logger.info("simulation interrupted")
    finally:
        if client is not None:
            client.close()
