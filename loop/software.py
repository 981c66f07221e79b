"""What a session ran on: the processor and the numerical software that set its rounding.

A closed-loop session follows its float rounding (each round starts from
the images the last one made), so the same session file and seed give the
same images only on the same processor kind and package versions. The
controller records this with the session's start (the ``session.started``
and ``session.resumed`` events), the report shows it, and the benchmarks
print it beside their figures.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["PACKAGES", "describe", "environment"]

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn")


def _processor() -> str:
    """The processor's model name as the kernel reports it (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """The processor, CPUs, torch's kernel set and device, Python, and the numerical packages' versions."""
    import torch

    found = {"processor": _processor(), "cpus": str(os.cpu_count()), "python": platform.python_version()}
    found["torch_kernels"] = torch.backends.cpu.get_cpu_capability()
    found["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def describe(found: dict[str, str] | None = None) -> str:
    """:func:`environment` (or one recorded earlier) in one line."""
    e = environment() if found is None else found
    packages = ", ".join(f"{p} {e[p]}" for p in PACKAGES if p in e)
    return (
        f"{e.get('processor', '?')}, {e.get('cpus', '?')} CPUs, torch kernels {e.get('torch_kernels', '?')}, "
        f"device {e.get('device', '?')}; Python {e.get('python', '?')}, {packages}"
    )
