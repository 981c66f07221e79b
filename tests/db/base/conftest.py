"""Keys for the wire's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.base import generate_key_file, load_key


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_key(generate_key_file(tmp_path / "wire.key"))
