"""Device and dtype chosen once, at the edge, and passed down explicitly."""

from __future__ import annotations

from typing import Literal

import torch

from db.errors import ConfigError

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
