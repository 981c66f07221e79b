"""From the scanner's files to validated volumes at the consumer.

Watching the export directory (:class:`DirectoryWatcher`), reading NIfTI and
DICOM (:mod:`scanner_bridge.readers`), the signed wire protocol
(:mod:`scanner_bridge.protocol`, documented in docs/protocol.md), delivery in
index order with gaps and duplicates detected (:class:`VolumePublisher`,
:class:`VolumeReceiver`), and replay of recorded runs
(:func:`replay_to_directory`, :class:`ReplaySource`). Imports ``db`` at most,
never ``loop``; the one exception is :mod:`scanner_bridge.simulate` (the
virtual subject and the simulated scanner), which imports ``stimulus`` and is
not imported here.
"""

from __future__ import annotations

from db.base import Clock, ScaledClock, WallClock
from scanner_bridge.config import PublisherConfig, ReceiverConfig, WatchConfig
from scanner_bridge.errors import (
    BridgeError,
    IncompleteVolumeError,
    KeyFileError,
    ProtocolError,
    ReceiveTimeoutError,
    RejectReason,
    VolumeMismatchError,
    VolumeReadError,
)
from scanner_bridge.protocol import generate_key_file, load_key
from scanner_bridge.replay import RecordedRun, ReplayFaults, ReplayReport, ReplaySource, replay_to_directory
from scanner_bridge.source import BridgeEvent, EventCode, VolumeSource
from scanner_bridge.transport import Arrival, ReceiverStats, Spool, VolumePublisher, VolumeReceiver
from scanner_bridge.volume import RunGeometry, Volume
from scanner_bridge.watch import DirectoryWatcher

__all__ = [
    "Arrival",
    "BridgeError",
    "BridgeEvent",
    "Clock",
    "DirectoryWatcher",
    "EventCode",
    "IncompleteVolumeError",
    "KeyFileError",
    "ProtocolError",
    "PublisherConfig",
    "ReceiveTimeoutError",
    "ReceiverConfig",
    "ReceiverStats",
    "RecordedRun",
    "RejectReason",
    "ReplayFaults",
    "ReplayReport",
    "ReplaySource",
    "RunGeometry",
    "ScaledClock",
    "Spool",
    "Volume",
    "VolumeMismatchError",
    "VolumePublisher",
    "VolumeReadError",
    "VolumeReceiver",
    "VolumeSource",
    "WallClock",
    "WatchConfig",
    "generate_key_file",
    "load_key",
    "replay_to_directory",
]
