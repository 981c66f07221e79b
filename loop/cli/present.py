"""``cortexloop present``: the presenter on the stimulus computer, serving run plans until told to quit."""

from __future__ import annotations

import enum
import functools
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from loop.cli._common import console
from loop.cli.bridge import EndpointOption, KeyOption
from scanner_bridge import ScaledClock, load_key

if TYPE_CHECKING:
    from stimulus.present.channel import PresenterChannel
    from stimulus.present.plan import RunPlan
    from stimulus.present.schedule import Display, TriggerSource
    from stimulus.present.window import PsychoPyClock, PsychoPyDisplay


class TriggerInput(enum.StrEnum):
    keyboard = "keyboard"
    network = "network"
    emulator = "emulator"
    serial = "serial"


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"--size takes WIDTHxHEIGHT in pixels, e.g. 1920x1080; got {text!r}"
        ) from None
    if width < 1 or height < 1:
        raise typer.BadParameter(f"--size must be positive, got {text!r}")
    return width, height


def present(
    endpoint: EndpointOption,
    key_file: KeyOption,
    screen: Annotated[int, typer.Option(help="The screen the subject sees (0 = the first).")] = 0,
    fullscreen: Annotated[bool, typer.Option("--fullscreen", help="Cover the whole screen.")] = False,
    size: Annotated[str, typer.Option(help="Window size WIDTHxHEIGHT in pixels.")] = "1024x768",
    monitor: Annotated[
        str | None,
        typer.Option(
            help="A PsychoPy Monitor Center calibration; sizes are then in degrees of visual angle."
        ),
    ] = None,
    refresh_hz: Annotated[
        float | None,
        typer.Option(
            "--refresh-hz", help="The rate the monitor is set to; a different measured rate is flagged."
        ),
    ] = None,
    image_size: Annotated[
        float | None, typer.Option(help="Image side: degrees with --monitor (default 8), else pixels (400).")
    ] = None,
    trigger_key: Annotated[str, typer.Option(help="The key the scanner types for each volume.")] = "5",
    triggers: Annotated[
        TriggerInput | None,
        typer.Option(
            help="keyboard (the scanner's key), serial (a trigger box's byte on --serial-port), network "
            "(trigger messages on --endpoint), or emulator (PsychoPy's launchScan metronome, for "
            "rehearsal). Default: keyboard; network with --no-window."
        ),
    ] = None,
    serial_port: Annotated[
        str | None,
        typer.Option(help="With --triggers serial: the trigger box's port (/dev/ttyUSB0, COM3)."),
    ] = None,
    serial_baud: Annotated[int, typer.Option(help="With --triggers serial: the box's line speed.")] = 115200,
    trigger_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a run's first trigger.")
    ] = 120.0,
    no_window: Annotated[
        bool, typer.Option("--no-window", help="Schedule without drawing (simulations); triggers by network.")
    ] = False,
    speed: Annotated[
        float,
        typer.Option(help="With --no-window: clock seconds per real second, as the simulated scanner's."),
    ] = 1.0,
    stimulus_dir: Annotated[
        Path, typer.Option(help="Where the plans' image paths point (the shared stimulus folder).")
    ] = Path("."),
    events_dir: Annotated[Path, typer.Option(help="Where each run's BIDS events.tsv is written.")] = Path(
        "presenter-events"
    ),
) -> None:
    """Show run plans from the controller, locked to the scanner's triggers, and report every onset.

    Serves plans until the controller sends quit (or Ctrl-C). Each run waits for
    its first trigger; escape aborts it and keeps what was measured.
    """
    from stimulus.present.channel import ChannelTriggers, PresenterChannel
    from stimulus.present.schedule import VirtualDisplay
    from stimulus.present.server import Presenter

    key = load_key(key_file)
    source = triggers or (TriggerInput.network if no_window else TriggerInput.keyboard)
    if no_window and source is not TriggerInput.network:
        raise typer.BadParameter("--no-window has no keyboard: use --triggers network")
    if speed != 1.0 and not no_window:
        raise typer.BadParameter("--speed is for --no-window; a window runs in real time")
    if (source is TriggerInput.serial) != (serial_port is not None):
        raise typer.BadParameter("--triggers serial and --serial-port go together")
    if source is TriggerInput.serial and len(trigger_key.encode()) != 1:
        raise typer.BadParameter(f"a serial trigger is one byte; --trigger-key {trigger_key!r} is not")
    display: Display
    clock: PsychoPyClock | ScaledClock
    if no_window:
        clock = ScaledClock(speed)
        display = VirtualDisplay(clock, refresh_hz=refresh_hz or 60.0, history=0)
        channel = PresenterChannel(endpoint, key, clock)

        def make_triggers(plan: RunPlan) -> TriggerSource:
            return ChannelTriggers(channel)
    else:
        from stimulus.present.window import PsychoPyDisplay

        window = PsychoPyDisplay(
            size=_size(size), fullscreen=fullscreen, screen=screen, monitor=monitor,
            image_size=image_size or (8.0 if monitor else 400.0), fixation_size=0.3 if monitor else 8.0,
            expected_hz=refresh_hz,
            trigger_keys=(trigger_key,) if source in (TriggerInput.keyboard, TriggerInput.emulator) else (),
        )  # fmt: skip
        display, clock = window, window.clock
        if serial_port is not None:  # the operator hears of a wrong port now, not when the first run is armed
            from stimulus.present.triggers import SerialTriggers

            SerialTriggers(serial_port, clock, byte=trigger_key.encode(), baudrate=serial_baud).stop()
        channel = PresenterChannel(endpoint, key, clock)
        make_triggers = functools.partial(
            _window_triggers, source, window, channel, trigger_key, (serial_port or "", serial_baud)
        )

    presenter = Presenter(
        channel,
        display,
        clock,
        triggers=make_triggers,
        stimulus_dir=stimulus_dir,
        events_dir=events_dir,
        trigger_timeout_s=trigger_timeout * (speed if no_window else 1.0),
    )  # fmt: skip  (the run loop counts on its own clock; the operator's timeout is in real seconds)

    def stop(signum: int, frame: FrameType | None) -> None:
        presenter.stop()  # a run in progress ends aborted, and its events are written and sent

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mode = "no window" if no_window else f"{display.refresh_hz:.2f} Hz"
    console.print(f"presenter at {channel.endpoint} ({mode}, triggers: {source.value}); waiting for plans")
    try:
        presenter.serve()
        console.print("presenter stopped")
    finally:
        channel.close()
        close = getattr(display, "close", None)
        if close is not None:
            close()


def _window_triggers(
    source: TriggerInput,
    window: PsychoPyDisplay,
    channel: PresenterChannel,
    key: str,
    serial: tuple[str, int],
    plan: RunPlan,
) -> TriggerSource:
    from stimulus.present.channel import ChannelTriggers
    from stimulus.present.triggers import EmulatedScanTriggers, KeyboardTriggers, SerialTriggers

    if source is TriggerInput.network:
        return ChannelTriggers(channel)
    if source is TriggerInput.serial:
        port, baudrate = serial
        return SerialTriggers(port, window.clock, byte=key.encode(), baudrate=baudrate)
    if source is TriggerInput.emulator:
        return EmulatedScanTriggers(window, window.clock, plan.tr_s, plan.n_volumes, key=key)
    return KeyboardTriggers(window, window.clock, key=key)
