"""Scoring a stream of published results against time: what a subscriber holds tau ms after each
frame reached the node. Pure functions (numpy + the COCO metric), no ROS: the harness
(``eval/stream.py``) records, this module scores, tests check the arithmetic on hand-built cases.

    answers[i] = every result the node published for frame i (any stage), with its latency
    profile(truths, answers, labels)  ->  {"2": mAP@0.5 of what was available at 2 ms, "5": ...}

A frame the node never answered, or whose first answer came after tau, counts as no detections
at tau: missed frames cost recall, as they would cost a tracker downstream.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..metrics.coco import coco_map

__all__ = ["TAUS_MS", "Answer", "available_at", "map50_at", "profile", "stream_summary"]

TAUS_MS = (2, 5, 10, 20, 33, 50, 100)


@dataclass(frozen=True)
class Answer:
    """One published result of one frame: the node's own receipt -> publish latency, the stage,
    and its detections as (label, score, [x0, y0, x1, y1] pixels of the frame)."""

    latency_ms: float
    stage: int
    is_final: bool = False
    stop_reason: str = ""
    detections: tuple[tuple[str, float, tuple[float, float, float, float]], ...] = field(default_factory=tuple)


def available_at(answers: Sequence[Answer], tau_ms: float) -> Answer | None:
    """The latest answer published within ``tau_ms`` of the frame's receipt (None: none yet)."""
    ready = [a for a in answers if a.latency_ms <= tau_ms]
    return max(ready, key=lambda a: (a.latency_ms, a.stage)) if ready else None


def map50_at(truths: Sequence[tuple[np.ndarray, np.ndarray]], answers: Sequence[Sequence[Answer]],
             labels: Sequence[str], tau_ms: float) -> float:
    """COCO mAP@0.5 over all frames of what was available ``tau_ms`` after each frame's receipt.

    Args:
        truths: per frame, boxes [M, 4] (x0, y0, x1, y1 pixels) and class ids [M] into ``labels``.
        answers: per frame (same order), every answer published for it.
        labels: class names by id; detections of other names are dropped.
    """
    if len(truths) != len(answers):
        raise ValueError(f"{len(truths)} frames of ground truth but {len(answers)} of answers")
    index = {name: i for i, name in enumerate(labels)}
    predictions = []
    for frame in answers:
        best = available_at(frame, tau_ms)
        predictions.append([] if best is None else [(index[n], s, np.asarray(b, np.float32))
                                                    for n, s, b in best.detections if n in index])
    return coco_map(truths, predictions, labels).map50


def profile(truths: Sequence[tuple[np.ndarray, np.ndarray]], answers: Sequence[Sequence[Answer]],
            labels: Sequence[str], taus_ms: Sequence[float] = TAUS_MS) -> dict[str, float]:
    """{str(tau): mAP@0.5 at tau} for each tau."""
    return {f"{t:g}": round(map50_at(truths, answers, labels, t), 4) for t in taus_ms}


def stream_summary(answers: Sequence[Sequence[Answer]], deadline_ms: float) -> dict:
    """Frames, frames answered at all, finals published within the deadline, the final stage's
    histogram, the stop reasons of the finals and how many finals ended a stage that was started
    and cut off at the deadline (the final repeats a stage already published)."""
    finals = [next((a for a in frame if a.is_final), None) for frame in answers]
    cut_off = sum(1 for frame, f in zip(answers, finals) if f is not None and f.stop_reason == "deadline"
                  and any(a.stage == f.stage and not a.is_final for a in frame))
    return {
        "frames": len(answers),
        "answered": sum(1 for frame in answers if frame),
        "final_in_deadline": sum(1 for f in finals if f is not None and f.latency_ms <= deadline_ms),
        "final_stage_histogram": {str(k): v for k, v in sorted(Counter(f.stage for f in finals if f).items())},
        "stop_reasons": dict(sorted(Counter(f.stop_reason for f in finals if f).items())),
        "cut_off_at_deadline": cut_off,
    }
