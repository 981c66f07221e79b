"""From the scanner's files to validated volumes at the consumer.

Watching the export directory, reading NIfTI and DICOM, ordering by volume
index, the signed wire protocol, replay and the simulated scanner. Imports
``db`` at most, never ``loop``.
"""

from __future__ import annotations

__all__: list[str] = []
