"""The exceptions the scanner bridge raises, under cortexloop's root::

    CortexloopError (db.base.errors)
    └── BridgeError
        ├── VolumeReadError(ValueError)          a file that is not a volume we can read
        │   └── IncompleteVolumeError            not all of it is there yet (retried until a deadline)
        ├── VolumeMismatchError(ValueError)      shape, affine or dtype differs from the run's first volume
        ├── SpoolError                           a spool folder that is not private to its user
        └── ReceiveTimeoutError(TimeoutError)    nothing arrived in the time allowed

The wire's own errors (a refused message, a bad key file, an endpoint that
cannot be bound) are :mod:`db.base.errors`'s ``WireError`` branch, shared
with the presenter.

Messages name the thing, what was expected, what came, and what to do.
"""

from __future__ import annotations

from db.base import CortexloopError

__all__ = [
    "BridgeError",
    "IncompleteVolumeError",
    "ReceiveTimeoutError",
    "SpoolError",
    "VolumeMismatchError",
    "VolumeReadError",
]


class BridgeError(CortexloopError):
    """The bridge cannot do what was asked."""


class VolumeReadError(BridgeError, ValueError):
    """A file cannot be read as a volume."""


class IncompleteVolumeError(VolumeReadError):
    """A file (or a volume's set of slice files) is not complete yet."""


class DuplicateSliceError(VolumeReadError):
    """A slice at a position its volume holds already."""


class VolumeMismatchError(BridgeError, ValueError):
    """A volume's shape, affine or dtype differs from the run's first volume."""


class SpoolError(BridgeError):
    """The spool folder cannot be used: not private to its user, or not a folder."""


class ReceiveTimeoutError(BridgeError, TimeoutError):
    """No volume arrived within the time allowed."""
