"""Package surfaces that import on first use (PEP 562), so that importing a light module stays light.

``import db.base.errors`` runs ``db/__init__.py`` first; if that imported the
ORM, the scanner's computer would load SQLAlchemy to raise an error. A
package's ``__init__`` therefore names its exports and where they live, and
:func:`lazy_exports` gives it the module ``__getattr__`` that imports each
one when it is first asked for. Type checkers read the same names from the
package's ``if TYPE_CHECKING:`` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each public name to its module."""

    def __getattr__(name: str) -> object:  # noqa: N807 (PEP 562's name)
        try:
            source = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    return __getattr__
