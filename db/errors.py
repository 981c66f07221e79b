"""The exceptions cortexloop raises.

``db`` is the bottom of the dependency graph (it imports no other cortexloop
package), so the root of the tree lives here and every package builds on it::

    CortexloopError
    ├── ConfigError(ValueError)                 a setting is missing, misspelt or out of range
    └── DatabaseError
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

__all__ = [
    "ConfigError",
    "CortexloopError",
    "DatabaseError",
    "DatabaseNotFoundError",
    "NotADatabaseError",
    "RecordNotFoundError",
    "SchemaMismatchError",
    "SchemaTooNewError",
    "SchemaTooOldError",
]


class CortexloopError(Exception):
    """Root of every error cortexloop raises on purpose."""


class ConfigError(CortexloopError, ValueError):
    """A configuration value is missing, unknown or out of range."""


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
