"""The exceptions cortexloop raises, from one root.

The base is imported by every process (the scanner's computer, the stimulus
computer, the controller), so the root of the tree lives here and every
package builds on it::

    CortexloopError
    ├── ConfigError(ValueError)                 a setting is missing, misspelt or out of range
    ├── WireError                               the signed wire between processes
    │   ├── ProtocolError(ValueError)           a message that was dropped; ``.reason`` says why
    │   ├── KeyFileError(ValueError)            a missing, malformed or insecure key file
    │   └── EndpointError(OSError)              an endpoint that cannot be bound or connected
    └── DatabaseError                           the session database
        ├── DatabaseNotFoundError(FileNotFoundError)   no database at that path
        ├── NotADatabaseError(ValueError)       the file exists but is not a session database
        ├── SchemaMismatchError(RuntimeError)
        │   ├── SchemaTooOldError               run `cortexloop db upgrade`
        │   └── SchemaTooNewError               written by a newer cortexloop
        └── RecordNotFoundError(LookupError)    a session, run... that does not exist

Each class also subclasses the builtin it refines, so ``except ValueError``
in a caller that knows nothing of cortexloop still catches what it should.
Messages name the thing, what was expected, what came, and what to do.
"""

from __future__ import annotations

import enum

__all__ = [
    "ConfigError",
    "CortexloopError",
    "DatabaseError",
    "DatabaseNotFoundError",
    "EndpointError",
    "KeyFileError",
    "NotADatabaseError",
    "ProtocolError",
    "RecordNotFoundError",
    "RejectReason",
    "SchemaMismatchError",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "WireError",
]


class CortexloopError(Exception):
    """Root of every error cortexloop raises on purpose."""


class ConfigError(CortexloopError, ValueError):
    """A configuration value is missing, unknown or out of range; ``problems`` lists every one found."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


# --- the wire ----------------------------------------------------------------------------------------


class WireError(CortexloopError):
    """The signed wire between cortexloop's processes cannot be used as asked."""


class RejectReason(enum.StrEnum):
    """Why an incoming message was dropped; every side counts its refusals by reason."""

    MALFORMED = "malformed"  # not a cortexloop message: wrong tag, bad JSON, missing or ill-typed fields
    UNSIGNED = "unsigned"  # no signature
    FORGED = "forged"  # the signature does not match the key and the frames
    REPLAYED = "replayed"  # a message seen before, or one addressed to another session
    TRUNCATED = "truncated"  # frames or buffer bytes missing
    OVERSIZED = "oversized"  # larger than the configured limit
    UNSUPPORTED = "unsupported"  # a protocol version or message type this side does not take
    FLOODED = "flooded"  # more messages a second from one sender than the protocol allows


class ProtocolError(WireError, ValueError):
    """An incoming message was dropped; ``reason`` is a :class:`RejectReason`."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.detail = message  # what was wrong, without the reason


class KeyFileError(WireError, ValueError):
    """The shared key file is missing, malformed or readable by others."""


class EndpointError(WireError, OSError):
    """A ZeroMQ endpoint cannot be bound (taken, or not an endpoint) or connected."""


# --- the session database ----------------------------------------------------------------------------


class DatabaseError(CortexloopError):
    """The session database cannot be used as asked."""


class DatabaseNotFoundError(DatabaseError, FileNotFoundError):
    """There is no database at the given path."""


class NotADatabaseError(DatabaseError, ValueError):
    """The path holds something that is not a cortexloop session database."""


class SchemaMismatchError(DatabaseError, RuntimeError):
    """The database's schema revision is not the one this cortexloop uses."""


class SchemaTooOldError(SchemaMismatchError):
    """The database predates this cortexloop; ``cortexloop db upgrade`` fixes it."""


class SchemaTooNewError(SchemaMismatchError):
    """The database was written by a newer cortexloop than this one."""


class RecordNotFoundError(DatabaseError, LookupError):
    """A session, run or other record that was asked for does not exist."""
