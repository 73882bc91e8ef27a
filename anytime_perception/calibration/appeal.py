"""Appeal thresholds per vehicle mode, written into the little model's manifest (``appeal`` section).

    python -m anytime_perception.calibration.appeal --model models/cifar10_appealnet_mobilenet \
        --big models/cifar10_resnet56 --data ../shared/datasets/cifar10/cifar10_jpg.zip
    python -m anytime_perception.calibration.appeal --model models/road_signs_anywidth \
        --big models/road_signs_anywidth --data ../shared/datasets/road_signs

Runs the deployed ONNX graphs: the little model's appeal stage (its answer and q(x)) and the big
model (what ``big_model_node`` answers). A frame is appealed when q < t; the system then answers
with the big model. For each mode of the modes file with an ``appeal`` target, t is chosen on a
labelled set:

- ``max_accuracy_drop: d``: the lowest t (fewest appeals) whose system quality is within ``d`` of
  the big model's (classifiers: accuracy on the calibration half of the test split; detectors:
  mAP@0.5 on the road_signs training split);
- ``max_appeal_rate: r``: the highest t that appeals at most a share ``r`` of the frames.

Modes without a target get no threshold (no appeals), and so do modes in which a model whose big
network is its own full model runs its last stage anyway (``runtime.appeal.appealing_modes``). A summary is printed and written next to
the manifest (``appeal_calibration.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.image_folder import load_image_folder
from ..data import load_split, read_rgb
from ..metrics.voc import mean_average_precision
from ..runtime.appeal import BigModel, appealing_modes
from ..runtime.decoder import decode
from ..runtime.manifest import APPEAL_OUTPUT as APPEAL
from ..runtime.manifest import AppealSpec, Manifest, ManifestError, load_manifest, save_manifest
from ..runtime.model import AnytimeModel
from ..runtime.modes import ModeError, ModeTable, load_modes
from ..runtime.preprocess import Preprocessor
from ..runtime.types import Detection
from .calibrate import print_summary

__all__ = ["AppealRecords", "appeal_stage", "collect_appeals", "classification_quality", "detection_quality", "appeal_threshold",
           "mode_appeal_thresholds", "write_appeal", "main"]

# appealed (bool per input) -> quality of the system that answers those with the big model
Quality = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class AppealRecords:
    """q(x) of every input and how good the little/big mixture is for any set of appeals."""

    q: np.ndarray  # [N]
    quality: Quality

    def rate(self, threshold: float) -> float:
        """Share of inputs appealed at ``threshold``."""
        return float((self.q < threshold).mean())

    def at(self, threshold: float) -> float:
        """Quality of the system at ``threshold``."""
        return self.quality(self.q < threshold)

    def big(self) -> float:
        """Quality when every input is appealed (the big model alone)."""
        return self.quality(np.ones(len(self.q), bool))


def collect_appeals(little: AnytimeModel, big: BigModel, images: list[np.ndarray],
                    score_threshold: float = 0.01) -> tuple[np.ndarray, list[list[Detection]], list[list[Detection]]]:
    """q(x), the little model's answers after the stage with q(x) and the big model's answers."""
    manifest = little.manifest
    stage = appeal_stage(manifest)
    preprocess = Preprocessor(manifest.input)
    q, little_answers, big_answers = [], [], []
    for image in images:
        x, box = preprocess(image)
        *_, last = little.stages(x, stage)
        q.append(last.confidences[APPEAL])
        little_answers.append(decode(last.heads, manifest.decoder, box, manifest.labels, score_threshold))
        big_answers.append(list(big.answer(image).detections))
    return np.asarray(q), little_answers, big_answers


def classification_quality(little: list[list[Detection]], big: list[list[Detection]], labels: np.ndarray) -> Quality:
    """Accuracy of the mixture (a classifier's answer is one whole-image detection)."""
    def correct(answers: list[list[Detection]]) -> np.ndarray:
        return np.array([bool(a) and a[0].class_id == y for a, y in zip(answers, labels)])

    little_correct, big_correct = correct(little), correct(big)
    return lambda appealed: float(np.where(appealed, big_correct, little_correct).mean())


def detection_quality(little: list[list[Detection]], big: list[list[Detection]], boxes: list[np.ndarray],
                      labels: list[np.ndarray], num_classes: int) -> Quality:
    """mAP@0.5 of the mixture against the ground truth (``boxes`` x0, y0, x1, y1 per image)."""
    truths = [{i: b[l == c] for i, (b, l) in enumerate(zip(boxes, labels))} for c in range(num_classes)]

    def quality(appealed: np.ndarray) -> float:
        predictions: list[list[tuple[int, float, np.ndarray]]] = [[] for _ in range(num_classes)]
        for i, appeal in enumerate(appealed):
            for d in big[i] if appeal else little[i]:
                xyxy = np.array([d.center_x - d.width / 2, d.center_y - d.height / 2,
                                 d.center_x + d.width / 2, d.center_y + d.height / 2])
                predictions[d.class_id].append((i, d.score, xyxy))
        return mean_average_precision(predictions, truths)[0]

    return quality


def appeal_threshold(records: AppealRecords, target: tuple[str, float], candidates: int = 200) -> float:
    """The threshold meeting ``target`` (``max_accuracy_drop`` or ``max_appeal_rate``), in [0, 1]."""
    kind, value = target
    levels = np.unique(np.concatenate([[0.0], np.quantile(records.q, np.linspace(0, 1, candidates)), [1.0]]))
    if kind == "max_appeal_rate":
        return float(max(t for t in levels if records.rate(t) <= value + 1e-12))
    goal = records.big() - value
    return float(next((t for t in levels if records.at(t) >= goal - 1e-12), 1.0))


def mode_appeal_thresholds(records: AppealRecords, modes: ModeTable, names: list[str]) -> tuple[dict[str, float], list[dict]]:
    """A threshold per mode of ``names`` (modes with an ``appeal`` target), and summary rows
    (rate and quality)."""
    thresholds, summary = {}, []
    for mode in (modes.get(name) for name in names):
        t = appeal_threshold(records, mode.appeal_target)
        thresholds[mode.name] = t
        kind, value = mode.appeal_target
        summary.append({"mode": mode.name, "target": f"{kind}={value}", "threshold": t,
                        "appeal_rate": records.rate(t), "quality": records.at(t),
                        "little_quality": records.at(0.0), "big_quality": records.big()})
    return thresholds, summary


def appeal_stage(manifest: Manifest) -> int:
    """The first stage with AppealNet's q(x) among its confidence outputs."""
    stage = next((k for k, s in enumerate(manifest.stages) if APPEAL in s.confidence_outputs), None)
    if stage is None:
        raise ValueError(f"{manifest.name}: no stage outputs q(x) ({APPEAL!r}); export it with a predictor head")
    return stage


def write_appeal(model_dir: str | Path, big_model: str, thresholds: dict[str, float]) -> Path:
    """Write the ``appeal`` section (the stage with q(x), the big model's name and the thresholds)
    into ``model_dir/manifest.yaml`` (checked by loading it)."""
    manifest = load_manifest(model_dir)
    spec = AppealSpec(appeal_stage(manifest), APPEAL, big_model, {m: float(t) for m, t in thresholds.items()})
    return save_manifest(replace(manifest, appeal=spec))


def _records(args: argparse.Namespace, little: AnytimeModel, big: BigModel) -> tuple[AppealRecords, int]:
    labels = little.manifest.labels
    if little.manifest.task == "classification":
        calibration, _ = load_image_folder(args.data, "test", little.manifest.input.size).halves(args.seed)
        if args.limit:
            calibration = calibration.subset(args.limit, args.seed)
        if tuple(calibration.classes) != labels:
            raise ValueError(f"{args.data}: classes differ from the model's labels")
        q, small, large = collect_appeals(little, big, list(calibration.images), 0.0)
        return AppealRecords(q, classification_quality(small, large, calibration.labels)), len(q)
    samples = load_split(args.data, "train", classes=labels)[: args.limit or None]
    q, small, large = collect_appeals(little, big, [read_rgb(s.image_path) for s in samples])
    quality = detection_quality(small, large, [s.boxes for s in samples], [s.labels for s in samples], len(labels))
    return AppealRecords(q, quality), len(q)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.calibration.appeal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the little model's directory (its manifest is updated)")
    p.add_argument("--big", required=True, help="the big model's directory (what the appeal server runs)")
    p.add_argument("--data", required=True, help="image-folder dataset (classifiers) or road_signs root")
    p.add_argument("--modes", default="config/modes.yaml", help="vehicle modes with per-mode appeal targets")
    p.add_argument("--limit", type=int, default=0, help="use only this many calibration images")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        little, big = AnytimeModel(args.model), BigModel(AnytimeModel(args.big), 0.01)
        if big.model.manifest.labels != little.manifest.labels:
            raise ValueError(f"{args.big}: labels differ from {args.model}'s")
        modes = load_modes(args.modes, little.manifest.total_macs)
        records, images = _records(args, little, big)
        names = appealing_modes(little.manifest, big.model.manifest.name, modes)
        thresholds, summary = mode_appeal_thresholds(records, modes, names)
        path = write_appeal(args.model, big.model.manifest.name, thresholds)
    except (OSError, ValueError, ManifestError, ModeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (Path(args.model) / "appeal_calibration.json").write_text(json.dumps(
        {"big_model": big.model.manifest.name, "images": images, "summary": summary}, indent=2))
    print_summary(summary, [("mode", "mode", 14, ""), ("target", "target", 26, ""),
                            ("threshold", "threshold", 10, ".4f"), ("appealed", "appeal_rate", 10, ".3f"),
                            ("quality", "quality", 9, ".4f"),
                            ("little", "little_quality", 8, ".4f"), ("big", "big_quality", 8, ".4f")])
    print(f"wrote the appeal section into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
