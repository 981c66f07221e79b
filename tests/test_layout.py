"""The layout shows the architecture: which way the imports run, what each process loads, public surfaces.

From the bottom up (DESIGN.md, "Dependency direction"): ``db.base`` (errors,
enums, durable writes, the wire, clocks) imports nothing of cortexloop; the
rest of ``db`` builds on it; ``stimulus`` and ``scanner_bridge`` import
``db.base`` and nothing else of cortexloop, not each other; ``loop`` may
import them all. No arrow runs back up, and there is no list of exceptions.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("loop", "stimulus", "scanner_bridge", "db")


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, as a dotted name (``from db.base import X``: ``db.base``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _imports(path: Path) -> set[str]:
    """Every cortexloop module ``path`` imports, as a dotted name."""
    return {n for n in _imported(path) if n.split(".")[0] in PACKAGES}


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("package", ["stimulus", "scanner_bridge"])
def test_the_bridge_and_stimulus_import_only_the_shared_base(package: str) -> None:
    offenders = {
        _module(path): sorted(bad)
        for path in _files(package)
        if (bad := {n for n in _imports(path) if not _within(n, package) and not _within(n, "db.base")})
    }
    assert offenders == {}, f"{package} may import db.base and itself only"


def test_the_base_imports_nothing_of_cortexloop_above_it() -> None:
    offenders = {
        _module(path): sorted(bad)
        for path in _files("db/base")
        if (bad := {n for n in _imports(path) if not _within(n, "db.base")})
    }
    assert offenders == {}


def test_db_imports_no_other_package() -> None:
    offenders = {
        _module(path): sorted(bad)
        for path in _files("db")
        if (bad := {n for n in _imports(path) if not _within(n, "db")})
    }
    assert offenders == {}


def test_loop_reads_the_record_through_db_queries_only() -> None:
    """No ORM model, no SQLAlchemy, and of db.queries only what it makes public."""
    public = set(importlib.import_module("db.queries").__all__)
    offenders = {}
    for path in _files("loop"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = {alias.name for alias in node.names}
                if node.module.split(".")[0] in ("sqlalchemy", "alembic") or _within(
                    node.module, "db.models"
                ):
                    offenders[_module(path)] = node.module
                elif node.module == "db.queries" and names - public:
                    offenders[_module(path)] = f"db.queries {sorted(names - public)}"
            elif isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "sqlalchemy" for a in node.names
            ):
                offenders[_module(path)] = "sqlalchemy"
    assert offenders == {}


def test_the_controller_never_looks_inside_the_virtual_subject() -> None:
    """Only the simulation itself and what starts simulations (the CLI, a sweep) import loop.simulation."""
    offenders = {
        _module(path): sorted(n for n in _imports(path) if _within(n, "loop.simulation"))
        for path in _files("loop")
        if not _within(_module(path), "loop.simulation")
        and not _within(_module(path), "loop.cli")
        and not _within(_module(path), "loop.sweep")
        and any(_within(n, "loop.simulation") for n in _imports(path))
    }
    assert offenders == {}


def test_nothing_imports_the_command_line_and_the_analysis_imports_no_controller() -> None:
    offenders = {}
    for path in _files("loop"):
        module, imported = _module(path), _imports(path)
        if not _within(module, "loop.cli") and any(_within(n, "loop.cli") for n in imported):
            offenders[module] = "loop.cli"
        analysis_reach = {n for n in imported if _within(n, "loop") and not _within(n, "loop.analysis")}
        if _within(module, "loop.analysis") and analysis_reach:
            offenders[module] = sorted(analysis_reach)
    assert offenders == {}


@pytest.mark.parametrize(
    ("imports", "unloaded"),
    [
        ("scanner_bridge.errors", ("sqlalchemy",)),  # what the scanner's computer needs to raise an error
        ("scanner_bridge", ("sqlalchemy", "alembic", "torch")),  # the whole bridge
        ("stimulus.present, stimulus.present.channel, stimulus.present.server", ("sqlalchemy", "torch")),
        ("db.base", ("sqlalchemy", "torch")),
        ("loop.config", ("sqlalchemy", "torch")),  # `cortexloop session check` loads no model
    ],
)
def test_each_computer_loads_only_what_it_needs(imports: str, unloaded: tuple[str, ...]) -> None:
    code = f"import sys, {imports}; print(sorted(m for m in {unloaded!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"import {imports} loaded {result.stdout.strip()}"


def _isort(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetically: how ruff sorts ``__all__``."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


SURFACES = (
    "loop",
    "stimulus",
    "scanner_bridge",
    "db",
    "db.base",
    "stimulus.present",
    "loop.simulation",
    "loop.sweep",
)


@pytest.mark.parametrize("package", SURFACES)
def test_public_surface_is_what_all_says(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert sorted(module.__all__, key=_isort) == module.__all__, "keep __all__ sorted (ruff's RUF022 order)"
    lazy = getattr(module, "_EXPORTS", None)
    if lazy is not None:  # a lazy surface names each export once, where it lives
        assert sorted(lazy, key=_isort) == module.__all__
    if "." not in package:
        assert (ROOT / package / "py.typed").exists()


def _third_party(path: Path) -> set[str]:
    """Top-level names of what ``path`` imports that are neither the standard library nor cortexloop."""
    tops = {n.split(".")[0] for n in _imported(path)}
    return {n for n in tops if n not in sys.stdlib_module_names and n not in PACKAGES and n != "__future__"}


def test_every_package_cortexloop_imports_is_declared_in_pyproject() -> None:
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    requirements += [
        r for name, extra in project["optional-dependencies"].items() if name != "test" for r in extra
    ]
    declared = {re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}
    providers = importlib.metadata.packages_distributions()
    undeclared = {}
    for folder in PACKAGES:
        for path in _files(folder):
            for name in _third_party(path):
                dists = {d.lower().replace("_", "-") for d in providers.get(name, [name])}
                if not dists & declared:
                    undeclared.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert undeclared == {}, (
        f"imported but not declared in pyproject.toml (dependencies or an extra): {undeclared}"
    )


def test_the_missing_package_line_knows_every_package_of_each_computers_extra() -> None:
    import re
    import tomllib

    from loop.cli._computers import EXTRA_OF

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {
        (re.split(r"[\s<>=!~\[;]", r, maxsplit=1)[0].lower(), extra)
        for extra in ("bridge", "presenter", "controller")
        for r in extras[extra]
    }
    assert set(EXTRA_OF.values()) == declared
    assert extras["all"] == ["cortexloop[bridge,presenter,controller]"]
