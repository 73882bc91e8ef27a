"""CLI: mAP@0.5 per stage against cumulative MACs on the road_signs validation split.

``python -m anytime_perception.eval --model models/road_signs_anywidth --data ../shared/datasets/road_signs``
Runs the exported ONNX stages through the runtime (every stage, no scheduler), so it measures
what the node ships.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..data.road_signs import load_split, read_rgb
from ..runtime.decoder import decode_centernet
from ..runtime.model import AnytimeModel
from ..runtime.preprocess import preprocess
from .metrics import mean_average_precision

__all__ = ["evaluate_detector", "main"]


def evaluate_detector(model: AnytimeModel, data: str | Path, split: str = "val",
                      score_threshold: float = 0.01) -> list[dict]:
    """Per stage: cumulative MACs, mAP@0.5 and per-class AP over ``split``."""
    manifest = model.manifest
    samples = load_split(data, split)
    num_classes = len(manifest.labels)
    predictions = [[[] for _ in range(num_classes)] for _ in manifest.stages]
    truths = [{i: s.boxes[s.labels == c] for i, s in enumerate(samples)} for c in range(num_classes)]
    for i, sample in enumerate(samples):
        x, box = preprocess(read_rgb(sample.image_path), manifest.input)
        carry: dict[str, np.ndarray] = {}
        for k in range(model.num_stages):
            new, heads, _ = model.run_stage(k, x, carry)
            carry.update(new)
            for d in decode_centernet(heads, manifest.decoder, box, manifest.labels, score_threshold):
                xyxy = np.array([d.center_x - d.width / 2, d.center_y - d.height / 2,
                                 d.center_x + d.width / 2, d.center_y + d.height / 2])
                predictions[k][d.class_id].append((i, d.score, xyxy))
    rows, macs = [], 0
    for k, stage in enumerate(manifest.stages):
        macs += stage.macs
        mean_ap, aps = mean_average_precision(predictions[k], truths)
        rows.append({"stage": k, "cumulative_macs": macs, "macs_fraction": macs / manifest.total_macs,
                     "map50": mean_ap, "ap50": dict(zip(manifest.labels, aps))})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="model directory (with manifest.yaml)")
    parser.add_argument("--data", required=True, help="road_signs root")
    parser.add_argument("--split", default="val", choices=["train", "val", "all"])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    model = AnytimeModel(args.model)
    rows = evaluate_detector(model, args.data, args.split)
    labels = model.manifest.labels
    print(f"{model.manifest.name} on {args.split}: mAP@0.5 per stage vs cumulative MACs")
    print(f"{'stage':>5} {'MMACs':>8} {'of full':>8} {'mAP@0.5':>8} " + " ".join(f"{l:>12}" for l in labels))
    for r in rows:
        print(f"{r['stage']:>5} {r['cumulative_macs'] / 1e6:>8.1f} {r['macs_fraction']:>8.1%} {r['map50']:>8.3f} "
              + " ".join(f"{r['ap50'][l]:>12.3f}" for l in labels))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
