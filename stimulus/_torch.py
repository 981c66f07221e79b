"""Device and dtype chosen once, at the edge, and passed down explicitly; the allocator, likewise."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Literal

import torch

from db.base import ConfigError

log = logging.getLogger(__name__)

DtypeName = Literal["float32", "float64"]

_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to compute on: the one asked for, else the GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for but torch sees no CUDA GPU; use 'cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype itself) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ConfigError(f"dtype {dtype} is not supported; use float32 or float64")
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"dtype {dtype!r} is not supported; use 'float32' or 'float64'") from None


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the system.

    A CPU forward and backward pass at 224 px and batch 32 allocates activation
    buffers of hundreds of MB each step; by default glibc maps and unmaps each
    one, and the page faults made steps 2-5 times slower, and erratic, on the
    machines measured (benchmarks/synthesis.py). With this the process keeps
    its peak memory. Process-wide, so only the command line's entry points and
    the benchmarks call it, once. Returns whether it took effect (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        applied = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False
    log.debug("glibc keeps freed memory for reuse: %s", applied)
    return applied
