"""The virtual subject's atlas: its ROIs' names in label order (no torch: checks made before a session)."""

from __future__ import annotations

__all__ = ["ROI_DESCRIPTIONS", "ROI_NAMES"]

ROI_NAMES = ("V1", "V2", "V4", "LO", "FFA", "PPA")
ROI_DESCRIPTIONS = {
    "V1": "primary visual cortex (retinotopic, oriented energy)",
    "V2": "secondary visual cortex (retinotopic, larger receptive fields)",
    "V4": "extrastriate area V4 (retinotopic, mid-level features)",
    "LO": "lateral occipital object area",
    "FFA": "fusiform face area (faces and animals)",
    "PPA": "parahippocampal place area (places and scenes)",
}
