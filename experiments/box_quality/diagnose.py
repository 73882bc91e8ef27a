"""Where do a detector's mAP@0.5:0.95 points go? Oracle replacements on the validation split.

    python experiments/box_quality/diagnose.py --model models/road_signs_anywidth \\
        --model ../shared/peers/yolo11n_road_signs_320.onnx --data ../shared/datasets/road_signs

Each detection is matched to the ground-truth box of its class it overlaps most (IoU >= 0.3).
Then, for the matched ones only, one property at a time is replaced by the truth's and the set is
scored again with the package's COCO evaluation (pycocotools):
- ``size``: width and height from the truth, centre kept (the size regression's share);
- ``centre``: centre from the truth, size kept (stride quantisation + offset regression's share);
- ``box``: both (what perfect boxes on the same detections and scores would reach);
- ``score = IoU``: scores replaced by the detection's IoU with its truth, boxes kept (what a
  localisation-aware ranking would reach: COCO ranks by score at every IoU threshold).
Also the distribution of IoU of matched detections and their relative size / centre errors.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from anytime_perception.data import load_split, read_rgb
from anytime_perception.letterbox import Letterbox
from anytime_perception.metrics.detection import score_stages, xyxy
from anytime_perception.metrics.voc import iou
from anytime_perception.runtime.decoder import decode
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.preprocess import Preprocessor


def oracle(dets, sample, labels, data_labels, what: str):
    """The detections of one image with ``what`` replaced by the matched truth's."""
    out, stats = [], []
    for d in dets:
        name = labels[d.class_id]
        if name not in data_labels:
            continue
        truth = sample.boxes[sample.labels == data_labels.index(name)]
        if not len(truth):
            out.append(d)
            continue
        ious = iou(xyxy(d), truth)
        j = int(ious.argmax())
        if ious[j] < 0.3:
            out.append(d)
            continue
        x0, y0, x1, y1 = truth[j]
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
        stats.append((float(ious[j]), d.width / w - 1, d.height / h - 1, (d.center_x - cx) / w, (d.center_y - cy) / h))
        if what == "size":
            d = replace(d, width=float(w), height=float(h))
        elif what == "centre":
            d = replace(d, center_x=float(cx), center_y=float(cy))
        elif what == "box":
            d = replace(d, center_x=float(cx), center_y=float(cy), width=float(w), height=float(h))
        elif what == "score":
            d = replace(d, score=float(ious[j]))
        out.append(d)
    return out, stats


def peak_cells(finals, data, manifest, box_of) -> dict:
    """For each truth, the best-scored detection of its class with IoU >= 0.3: how often its centre
    lies in the truth's centre cell of the output grid, and its mean IoU there and elsewhere
    (CenterNet trains size and offset at the centre cell only). Only for stride-based decoders."""
    stride = getattr(manifest.decoder, "stride", 0) if manifest.decoder.type == "centernet" else 0
    if not stride:
        return {}
    same, other = [], []
    for dets, sample in zip(finals, data.samples):
        box = box_of(sample)
        for truth, label in zip(sample.boxes, sample.labels):
            name = data.labels[label]
            cands = [d for d in dets if manifest.labels[d.class_id] == name]
            if not cands:
                continue
            ious = iou(truth, np.stack([xyxy(d) for d in cands]))
            ok = [(d.score, i, d) for d, i in zip(cands, ious) if i >= 0.3]
            if not ok:
                continue
            _, best_iou, best = max(ok, key=lambda t: t[0])
            canvas = box.to_canvas(np.array([[best.center_x, best.center_y, best.center_x, best.center_y],
                                             [(truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2,
                                              (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2]]))[:, :2]
            cell_det, cell_truth = np.floor(canvas / stride)
            (same if (cell_det == cell_truth).all() else other).append(best_iou)
    total = len(same) + len(other)
    return {"best_detection_in_truth_centre_cell": len(same) / max(total, 1),
            "best_iou_in_centre_cell": float(np.mean(same)) if same else float("nan"),
            "best_iou_elsewhere": float(np.mean(other)) if other else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--data", default="../shared/datasets/road_signs")
    p.add_argument("--score-threshold", type=float, default=0.01)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    data = load_split(args.data, "val")
    report = {}
    for path in args.model:
        model = AnytimeModel(path, threads=1)
        m = model.manifest
        pre = Preprocessor(m.input)
        finals = []
        for sample in data.samples:
            x, box = pre(read_rgb(sample.image_path))
            *_, last = model.stages(x)
            finals.append(decode(last.heads, m.decoder, box, m.labels, args.score_threshold))
        rows, stats = {}, []
        for what in ("as is", "size", "centre", "box", "score"):
            per_image = []
            for dets, sample in zip(finals, data.samples):
                replaced, s = oracle(dets, sample, m.labels, data.labels, what)
                per_image.append(replaced)
                if what == "as is":
                    stats += [v for v in s if v[0] >= 0.5]
            row = score_stages(data, [per_image], m.labels)[0]
            rows[what] = {"map": row["map"], "map50": row["map50"]}
        cells = peak_cells(finals, data, m, box_of=lambda sample: Letterbox.fit(*sample.size, m.input.size))
        s = np.array(stats)
        summary = {"matched_iou_mean": float(s[:, 0].mean()), "matched_iou_median": float(np.median(s[:, 0])),
                   "share_iou_ge_0.75": float((s[:, 0] >= 0.75).mean()),
                   "abs_rel_width_error_median": float(np.median(np.abs(s[:, 1]))),
                   "abs_rel_height_error_median": float(np.median(np.abs(s[:, 2]))),
                   "abs_rel_centre_x_error_median": float(np.median(np.abs(s[:, 3]))),
                   "abs_rel_centre_y_error_median": float(np.median(np.abs(s[:, 4]))),
                   "mean_rel_width_error": float(s[:, 1].mean()), "mean_rel_height_error": float(s[:, 2].mean())}
        summary.update(cells)
        report[m.name] = {"oracles": rows, "matched": summary}
        print(f"\n{m.name} (final stage, {len(data)} validation images)")
        print("| replaced by the truth | mAP@0.5:0.95 | mAP@0.5 |\n|---|---|---|")
        for what, r in rows.items():
            print(f"| {what} | {r['map']:.3f} | {r['map50']:.3f} |")
        print("matched detections (IoU >= 0.5): " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
