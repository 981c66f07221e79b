"""The controller: sessions, rounds, real-time analysis, scoring, the CLI and reports.

``loop`` may import ``stimulus``, ``scanner_bridge`` and ``db``; none of them
imports ``loop``.
"""

from __future__ import annotations

__all__: list[str] = []
