"""What the controller tells the operator, as it happens: one interface, shown by the console (or logged)."""

from __future__ import annotations

import logging
from typing import Any

from loop.analysis.realtime import VolumeResult
from loop.scoring import RoundScores
from stimulus.present import RunPlan

__all__ = ["Observer"]

log = logging.getLogger(__name__)


class Observer:
    """Subclass to show a session (the CLI's console draws it); this one logs messages and nothing else."""

    def message(self, level: str, text: str) -> None:
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)

    def run_started(self, label: str, plan: RunPlan) -> None:
        pass

    def volume(
        self,
        label: str,
        index: int,
        n_volumes: int,
        status: str,
        result: VolumeResult | None,
        latency_ms: float | None = None,
    ) -> None:
        """A volume analysed (``result``) or missing; ``latency_ms`` from its file's writing to now."""

    def run_ended(self, label: str, summary: dict[str, Any]) -> None:
        pass

    def round_ended(self, index: int, scores: RoundScores) -> None:
        pass
