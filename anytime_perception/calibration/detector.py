"""The detector's frame gate: learned on the detector's own outputs (no labels), PTEEnet-style.

For each frame and early stage, the target is whether the stage's detections (score >= the
node's threshold) already match the last stage's: same classes, boxes paired one-to-one at
IoU >= 0.5. A logistic function of ``detection_features`` predicts it; thresholds on its
probability are tuned per vehicle mode like the classifiers' (the "accuracy" being the share of
frames whose published answer equals the last stage's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.voc import iou
from ..runtime.exit_rules import PEAK_FLOOR, LinearPolicy, detection_features
from ..runtime.model import AnytimeModel
from ..runtime.preprocess import Preprocessor
from ..runtime.types import Detection
from ..runtime.decoder import decode
from .policy import fit_decision

__all__ = ["DetectorRecords", "frames_match", "collect_detector", "learn_frame_gate"]


@dataclass(frozen=True)
class DetectorRecords:
    """Per stage and frame: the peaks and whether they match the last stage."""

    detections: list[list[list[Detection]]]  # [stages][frames] -> detections
    matches: np.ndarray  # [stages, frames] bool; the last stage matches itself
    features: np.ndarray  # [stages, frames, DETECTION_FEATURES]
    stage_macs: np.ndarray

    @property
    def cumulative_macs(self) -> np.ndarray:
        return np.cumsum(self.stage_macs).astype(np.float64)


def _xyxy(d: Detection) -> np.ndarray:
    return np.array([d.center_x - d.width / 2, d.center_y - d.height / 2, d.center_x + d.width / 2, d.center_y + d.height / 2])


def frames_match(a: list[Detection], b: list[Detection], score_threshold: float, iou_threshold: float = 0.5) -> bool:
    """Whether the detections >= ``score_threshold`` of ``a`` and ``b`` pair up one-to-one
    (same class, IoU >= ``iou_threshold``, greedy by score)."""
    a = [d for d in a if d.score >= score_threshold]
    b = [d for d in b if d.score >= score_threshold]
    if len(a) != len(b):
        return False
    unmatched = list(b)
    for d in sorted(a, key=lambda d: -d.score):
        candidates = [e for e in unmatched if e.class_id == d.class_id]
        if not candidates:
            return False
        overlaps = iou(_xyxy(d), np.stack([_xyxy(e) for e in candidates]))
        best = int(overlaps.argmax())
        if overlaps[best] < iou_threshold:
            return False
        unmatched.remove(candidates[best])
    return True


def collect_detector(model: AnytimeModel, images: list[np.ndarray], score_threshold: float,
                     floor: float = PEAK_FLOOR) -> DetectorRecords:
    """Run every stage on every image and record detections (score >= ``floor``), gate features
    and whether each stage matches the last at ``score_threshold``."""
    manifest = model.manifest
    preprocess = Preprocessor(manifest.input)
    stages = model.num_stages
    detections: list[list[list[Detection]]] = [[] for _ in range(stages)]
    for image in images:
        x, box = preprocess(image)
        for step in model.stages(x):
            detections[step.k].append(decode(step.heads, manifest.decoder, box, manifest.labels, floor))
    matches = np.array([[frames_match(d, final, score_threshold) for d, final in zip(detections[k], detections[-1])]
                        for k in range(stages)])
    features = np.array([[detection_features(np.array([d.score for d in frame])) for frame in stage]
                         for stage in detections])
    return DetectorRecords(detections, matches, features, np.array([s.macs for s in manifest.stages]))


def learn_frame_gate(records: DetectorRecords) -> list[LinearPolicy]:
    """One logistic frame gate per early stage, predicting ``matches`` from the features."""
    return [fit_decision(records.features[k], records.matches[k], np.ones(records.matches.shape[1]))
            for k in range(len(records.stage_macs) - 1)]
