"""Gates: is the current stage's answer good enough to stop refining? (hook for exit methods)"""
from __future__ import annotations

from typing import Protocol

__all__ = ["Gate", "ThresholdGate"]


class Gate(Protocol):
    """Decides early exit from a stage's frame-level confidence."""

    def is_confident(self, stage: int, confidence: float | None, mode: str) -> bool: ...


class ThresholdGate:
    """Exit when the stage's confidence reaches the calibrated threshold of the current mode.

    Args:
        thresholds: mode name -> one threshold per stage (the manifest's ``gates``). Modes without
            thresholds, and stages without a confidence output, never exit early.
    """

    def __init__(self, thresholds: dict[str, tuple[float, ...]]) -> None:
        self.thresholds = thresholds

    def is_confident(self, stage: int, confidence: float | None, mode: str) -> bool:
        per_stage = self.thresholds.get(mode)
        return confidence is not None and per_stage is not None and confidence >= per_stage[stage]
