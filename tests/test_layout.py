"""The layout shows the architecture: dependency direction and public surfaces."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("loop", "stimulus", "scanner_bridge", "db")
# What each package may import from the others (DESIGN.md, "Dependency direction").
ALLOWED = {
    "loop": {"stimulus", "scanner_bridge", "db"},
    "stimulus": {"db"},
    "scanner_bridge": {"db"},
    "db": set(),
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(PACKAGES)


# Two named crossings, each one way: the presenter speaks the bridge's wire protocol, and the virtual
# subject sees through stimulus's networks. Neither package's core imports the other.
CROSSINGS = {
    "stimulus/present/channel.py": {"scanner_bridge"},
    "stimulus/present/server.py": {"scanner_bridge"},
    "scanner_bridge/simulate/": {"stimulus"},
}


def _crossing(path: Path) -> set[str]:
    relative = path.relative_to(ROOT).as_posix()
    return {pkg for prefix, pkgs in CROSSINGS.items() if relative.startswith(prefix) for pkg in pkgs}


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_dependency_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in sorted((ROOT / package).rglob("*.py"))
        if (bad := _imported_packages(path) - ALLOWED[package] - {package} - _crossing(path))
    }
    assert offenders == {}, f"{package} may import only {sorted(ALLOWED[package])}"


def test_the_crossings_do_not_make_an_import_cycle() -> None:
    """stimulus never imports the simulator, so the two crossings cannot close an import cycle."""
    for path in sorted((ROOT / "stimulus").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(m.startswith("scanner_bridge.simulate") for m in modules), path


@pytest.mark.parametrize("package", PACKAGES)
def test_public_surface_is_what_all_says(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert sorted(module.__all__) == module.__all__, "keep __all__ sorted"
    assert (ROOT / package / "py.typed").exists()
