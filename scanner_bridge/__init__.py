"""From the scanner's files to validated volumes at the consumer.

Watching the export directory (:class:`DirectoryWatcher`), reading NIfTI and
DICOM (:mod:`scanner_bridge.readers`), writing them (:mod:`scanner_bridge.writers`),
delivery in index order with gaps and duplicates detected over the signed wire
(:class:`VolumePublisher`, :class:`VolumeReceiver`; docs/protocol.md), the
session's series announced and each run's picked (:mod:`scanner_bridge.series`), and
replay of recorded runs (:func:`replay_to_directory`, :class:`ReplaySource`).
Imports ``db.base`` (the wire, the clocks, the errors' root) and nothing else
of cortexloop; the names of ``db.base`` below are re-exported as part of the
bridge's own surface. Each name is imported when first used (:mod:`db.base.lazy`), so
that importing one part of the bridge does not load the readers' NIfTI and DICOM libraries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from db.base.lazy import lazy_exports

if TYPE_CHECKING:
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
    from scanner_bridge.replay import (
        RecordedRun,
        ReplayFaults,
        ReplayReport,
        ReplaySource,
        replay_to_directory,
    )
    from scanner_bridge.series import SeriesChoice, SeriesInfo
    from scanner_bridge.source import BridgeEvent, EventCode, VolumeSource
    from scanner_bridge.transport import Arrival, ReceiverStats, Spool, VolumePublisher, VolumeReceiver
    from scanner_bridge.volume import RunGeometry, Volume
    from scanner_bridge.watch import DirectoryWatcher

_EXPORTS = {
    "Arrival": "scanner_bridge.transport",
    "BridgeError": "scanner_bridge.errors",
    "BridgeEvent": "scanner_bridge.source",
    "Clock": "db.base",
    "DirectoryWatcher": "scanner_bridge.watch",
    "EventCode": "scanner_bridge.source",
    "IncompleteVolumeError": "scanner_bridge.errors",
    "KeyFileError": "db.base",
    "ProtocolError": "db.base",
    "PublisherConfig": "scanner_bridge.config",
    "ReceiveTimeoutError": "scanner_bridge.errors",
    "ReceiverConfig": "scanner_bridge.config",
    "ReceiverStats": "scanner_bridge.transport",
    "RecordedRun": "scanner_bridge.replay",
    "RejectReason": "db.base",
    "ReplayFaults": "scanner_bridge.replay",
    "ReplayReport": "scanner_bridge.replay",
    "ReplaySource": "scanner_bridge.replay",
    "RunGeometry": "scanner_bridge.volume",
    "ScaledClock": "db.base",
    "SeriesChoice": "scanner_bridge.series",
    "SeriesInfo": "scanner_bridge.series",
    "Spool": "scanner_bridge.transport",
    "SpoolError": "scanner_bridge.errors",
    "Volume": "scanner_bridge.volume",
    "VolumeMismatchError": "scanner_bridge.errors",
    "VolumePublisher": "scanner_bridge.transport",
    "VolumeReadError": "scanner_bridge.errors",
    "VolumeReceiver": "scanner_bridge.transport",
    "VolumeSource": "scanner_bridge.source",
    "WallClock": "db.base",
    "WatchConfig": "scanner_bridge.config",
    "generate_key_file": "db.base",
    "load_key": "db.base",
    "replay_to_directory": "scanner_bridge.replay",
}

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
__getattr__ = lazy_exports(__name__, _EXPORTS)
