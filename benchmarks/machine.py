"""What a benchmark ran on, printed with its figures: the processor and the versions that set its rounding.

Two runs of the same code on different processors (or torch, numpy and
scikit-learn builds) round differently, and a closed-loop session follows
its rounding: every round starts from the images the last one made. A
figure is comparable with another only where this line matches.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "numpy", "scipy", "scikit-learn")


def processor() -> str:
    """The processor's model name as the kernel reports it (``platform.processor()`` is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    """One line: processor, CPUs, torch's vector instruction set, Python and the numerical packages."""
    import torch

    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} not installed")
    kernels = torch.backends.cpu.get_cpu_capability()
    return (
        f"machine: {processor()}, {os.cpu_count()} CPUs, torch kernels {kernels}; "
        f"Python {platform.python_version()}, {', '.join(versions)}"
    )


if __name__ == "__main__":
    print(describe())
