"""Shared factories: a seeded rng, temporary session databases, recorders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from db import Database, RoiSpec, SessionKind, SessionRecorder, make_engine, open_database

ROI_NAMES = [f"roi{i:02d}" for i in range(20)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sessions.sqlite"


@pytest.fixture
def database(db_path: Path) -> Iterator[Database]:
    with open_database(db_path, create=True) as db:
        yield db


@pytest.fixture
def make_recorder(database: Database) -> Callable[..., SessionRecorder]:
    """Start a session with 20 ROIs; pass ``session=`` for more than one."""

    def make(session: str = "01", subject: str = "01") -> SessionRecorder:
        return SessionRecorder.start(
            database,
            subject=subject,
            session=session,
            kind=SessionKind.SIMULATION,
            rois=[RoiSpec(name=name) for name in ROI_NAMES],
        )

    return make


@pytest.fixture
def pg_url() -> str:
    """CORTEXLOOP_TEST_POSTGRES_URL, its public schema emptied (the tests that use it skip without one)."""
    url = os.environ.get("CORTEXLOOP_TEST_POSTGRES_URL")
    assert url is not None
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP SCHEMA public CASCADE")
        connection.exec_driver_sql("CREATE SCHEMA public")
    engine.dispose()
    return url


_UNINSTALLER = '''\
"""Makes the packages named in CORTEXLOOP_TEST_UNINSTALLED fail to import, as on a computer without them."""
import os
import sys

_GONE = frozenset(filter(None, os.environ.get("CORTEXLOOP_TEST_UNINSTALLED", "").split(",")))


class _Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _GONE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Uninstalled())
'''


def _installed_by(extras: tuple[str, ...]) -> set[str]:
    """The distributions ``pip install '.[EXTRAS]'`` installs: cortexloop's core and extras, and theirs."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted: list[tuple[str, tuple[str, ...]]] = [("cortexloop", extras)]
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    while wanted:
        name, its_extras = wanted.pop()
        for extra in ("", *its_extras):
            if (canonicalize_name(name), extra) in seen:
                continue
            seen.add((canonicalize_name(name), extra))
            names.add(canonicalize_name(name))
            try:
                requirements = metadata.requires(name) or []
            except metadata.PackageNotFoundError:  # an optional package nobody installed here
                continue
            for line in requirements:
                requirement = Requirement(line)
                if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                    wanted.append((requirement.name, tuple(sorted(requirement.extras))))
    return names


@pytest.fixture(scope="session")
def installed_only(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, str]]:
    """The environment of a computer that installed ``pip install '.[EXTRAS]'`` and nothing else.

    Every package of this test environment that such an install would not bring fails to import
    (a finder first on ``sys.meta_path``, set up by a ``sitecustomize`` on PYTHONPATH), so a
    command run under it starts as it would on that computer.
    """
    import importlib.metadata as metadata

    from packaging.utils import canonicalize_name

    folder = tmp_path_factory.mktemp("uninstaller")
    (folder / "sitecustomize.py").write_text(_UNINSTALLER)
    providers = metadata.packages_distributions()
    always = {"pip", "setuptools", "_distutils_hack", "pkg_resources"}  # in every virtual environment

    def env(*extras: str) -> dict[str, str]:
        kept = _installed_by(extras)
        gone = sorted(
            top
            for top, dists in providers.items()
            if top not in always and not {canonicalize_name(d) for d in dists} & kept
        )
        return {**os.environ, "PYTHONPATH": str(folder), "CORTEXLOOP_TEST_UNINSTALLED": ",".join(gone)}

    return env
