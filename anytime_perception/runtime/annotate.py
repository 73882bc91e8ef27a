"""Draw a stage result onto an image (debug image topic, demo frames)."""
from __future__ import annotations

import cv2
import numpy as np

from .types import StageResult

__all__ = ["draw_detections"]

COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def draw_detections(rgb: np.ndarray, result: StageResult) -> np.ndarray:
    """A copy of ``rgb`` with boxes, labels and a stage/MAC/latency banner."""
    out = rgb.copy()
    for d in result.detections:
        colour = COLOURS[d.class_id % len(COLOURS)]
        x0, y0 = int(d.center_x - d.width / 2), int(d.center_y - d.height / 2)
        x1, y1 = int(d.center_x + d.width / 2), int(d.center_y + d.height / 2)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(out, f"{d.label} {d.score:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    banner = (f"stage {result.stage + 1}/{result.num_stages}  {result.macs / 1e6:.0f}M MACs  "
              f"{result.latency_ms:.1f} ms  {result.mode}  {result.stop_reason}")
    (width, height), _ = cv2.getTextSize(banner, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(out, (0, 0), (width + 12, height + 12), (0, 0, 0), -1)
    cv2.putText(out, banner, (6, height + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
