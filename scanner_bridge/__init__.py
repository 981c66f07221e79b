"""From the scanner's files to validated volumes at the consumer.

Watching the export directory (:class:`DirectoryWatcher`), reading NIfTI and
DICOM (:mod:`scanner_bridge.readers`), writing them (:mod:`scanner_bridge.writers`),
delivery in index order with gaps and duplicates detected over the signed wire
(:class:`VolumePublisher`, :class:`VolumeReceiver`; docs/protocol.md), the
session's series announced and each run's picked (:mod:`scanner_bridge.series`), and
replay of recorded runs (:func:`replay_to_directory`, :class:`ReplaySource`).
Imports ``db.base`` (the wire, the clocks, the errors' root) and nothing else
of cortexloop; the names of ``db.base`` below are re-exported as part of the
bridge's own surface.
"""

from __future__ import annotations

from db.base import (
    Clock,
    KeyFileError,
    ProtocolError,
    RejectReason,
    ScaledClock,
    WallClock,
    generate_key_file,
    load_key,
)
from scanner_bridge.config import PublisherConfig, ReceiverConfig, WatchConfig
from scanner_bridge.errors import (
    BridgeError,
    IncompleteVolumeError,
    ReceiveTimeoutError,
    SpoolError,
    VolumeMismatchError,
    VolumeReadError,
)
from scanner_bridge.replay import RecordedRun, ReplayFaults, ReplayReport, ReplaySource, replay_to_directory
from scanner_bridge.series import SeriesChoice, SeriesInfo
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
    "SeriesChoice",
    "SeriesInfo",
    "Spool",
    "SpoolError",
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
