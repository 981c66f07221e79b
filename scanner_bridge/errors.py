"""The exceptions the scanner bridge raises, under cortexloop's root::

    CortexloopError (db.errors)
    └── BridgeError
        ├── VolumeReadError(ValueError)          a file that is not a volume we can read
        │   └── IncompleteVolumeError            not all of it is there yet (retried until a deadline)
        ├── VolumeMismatchError(ValueError)      shape, affine or dtype differs from the run's first volume
        ├── ProtocolError(ValueError)            a message that was dropped; ``.reason`` says why
        ├── KeyFileError(ValueError)             a missing, malformed or insecure key file
        └── ReceiveTimeoutError(TimeoutError)    nothing arrived in the time allowed

Messages name the thing, what was expected, what came, and what to do.
"""

from __future__ import annotations

import enum

from db.base import CortexloopError

__all__ = [
    "BridgeError",
    "IncompleteVolumeError",
    "KeyFileError",
    "ProtocolError",
    "ReceiveTimeoutError",
    "RejectReason",
    "VolumeMismatchError",
    "VolumeReadError",
]


class BridgeError(CortexloopError):
    """The bridge cannot do what was asked."""


class VolumeReadError(BridgeError, ValueError):
    """A file cannot be read as a volume."""


class IncompleteVolumeError(VolumeReadError):
    """A file (or a volume's set of slice files) is not complete yet."""


class VolumeMismatchError(BridgeError, ValueError):
    """A volume's shape, affine or dtype differs from the run's first volume."""


class RejectReason(enum.StrEnum):
    """Why an incoming message was dropped; counted per reason by the receiver."""

    MALFORMED = "malformed"  # not a cortexloop message: wrong tag, bad JSON, missing fields
    UNSIGNED = "unsigned"  # no signature
    FORGED = "forged"  # the signature does not match the key and the frames
    REPLAYED = "replayed"  # a message seen before, or one addressed to another receiver
    TRUNCATED = "truncated"  # frames or buffer bytes missing
    OVERSIZED = "oversized"  # larger than the configured limit
    UNSUPPORTED = "unsupported"  # a protocol version or message type this side does not speak


class ProtocolError(BridgeError, ValueError):
    """An incoming message was dropped; ``reason`` is a :class:`RejectReason`."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class KeyFileError(BridgeError, ValueError):
    """The shared key file is missing, malformed or readable by others."""


class ReceiveTimeoutError(BridgeError, TimeoutError):
    """No volume arrived within the time allowed."""
