"""Images in, predictions out; and images out.

Backbones and feature extraction, the encoding model, synthesis by
activation maximization, decoding by encoder inversion, and presentation
with PsychoPy. Imports ``db`` at most, never ``loop``.
"""

from __future__ import annotations

__all__: list[str] = []
