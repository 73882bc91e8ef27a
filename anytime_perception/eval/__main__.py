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
from ..runtime.preprocess import Preprocessor
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
    preprocess = Preprocessor(manifest.input)
    for i, sample in enumerate(samples):
        x, box = preprocess(read_rgb(sample.image_path))
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


def markdown_table(rows: list[dict], labels: tuple[str, ...]) -> str:
    """Rows as a markdown table: stage, MACs, mAP@0.5 and AP per class."""
    lines = ["| stage | cumulative MMACs | of full | mAP@0.5 | " + " | ".join(labels) + " |",
             "|---" * (4 + len(labels)) + "|"]
    for r in rows:
        aps = " | ".join(f"{r['ap50'][label]:.3f}" for label in labels)
        lines.append(f"| {r['stage']} | {r['cumulative_macs'] / 1e6:.1f} | {r['macs_fraction']:.1%} | "
                     f"**{r['map50']:.3f}** | {aps} |")
    return "\n".join(lines)


def plot(rows_by_model: dict[str, list[dict]], path: Path) -> None:
    """mAP@0.5 against cumulative MACs, one line per model (matplotlib, imported on demand)."""
    from .plots import plt, save_plot  # pyplot with the Agg backend
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, rows in rows_by_model.items():
        ax.plot([r["cumulative_macs"] / 1e6 for r in rows], [r["map50"] for r in rows], "o-", label=name)
    ax.set_xlabel("cumulative MMACs per frame")
    ax.set_ylabel("mAP@0.5 (road_signs val)")
    save_plot(fig, path, [ax], legend_size=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, nargs="+", help="model directories (with manifest.yaml)")
    parser.add_argument("--data", required=True, help="road_signs root")
    parser.add_argument("--split", default="val", choices=["train", "val", "all"])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--plot", type=Path, help="also plot mAP vs MACs of every model to this PNG")
    args = parser.parse_args(argv)
    results = {}
    for path in args.model:
        model = AnytimeModel(path)
        rows = evaluate_detector(model, args.data, args.split)
        results[model.manifest.name] = rows
        print(f"\n{model.manifest.name} on {args.split}: mAP@0.5 per stage vs cumulative MACs\n")
        print(markdown_table(rows, model.manifest.labels))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
