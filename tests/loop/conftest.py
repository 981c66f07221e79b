"""The ``cortexloop`` command as an operator runs it: a separate process, output captured."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]

CORTEXLOOP = Path(sys.executable).with_name("cortexloop")


@pytest.fixture(scope="session")
def cortexloop() -> Cli:
    """Run ``cortexloop --log-level warning ARGS...``; pass ``env=`` to replace the environment."""

    def run(
        *args: str | Path, env: dict[str, str] | None = None, timeout: float = 110
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CORTEXLOOP), "--log-level", "warning", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )

    return run


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
