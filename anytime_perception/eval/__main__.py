"""CLI: COCO mAP@0.5:0.95 and mAP@0.5 per stage (and per class) against cumulative MACs.

``python -m anytime_perception.eval --model models/road_signs_anywidth --data ../shared/datasets/road_signs``
Runs the exported ONNX stages through the runtime (every stage, no scheduler), so it measures
what the node ships. ``--data`` is any labelled set the training reads (COCO JSON, YOLO, VOC);
its validation split is scored (``--split``), classes matched to the model's by name. A static
detector is a one-stage model: e.g. ``models/road_signs_anywidth/static`` or an ultralytics YOLO
export given as its ``.onnx`` file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..data import FORMATS, DataError, DetectionSet, load_split, read_rgb
from ..runtime.decoder import decode
from ..runtime.manifest import ManifestError
from ..runtime.model import AnytimeModel
from ..runtime.preprocess import Preprocessor
from ..metrics.detection import score_stages

__all__ = ["evaluate_detector", "evaluate_set", "markdown_table", "main"]


def evaluate_set(model: AnytimeModel, data: DetectionSet, score_threshold: float = 0.01,
                 progress: bool = False) -> list[dict]:
    """Per stage: cumulative MACs, COCO mAP@0.5:0.95 / mAP@0.5, VOC mAP@0.5, per-class AP."""
    manifest = model.manifest
    if manifest.task != "detection":
        raise ValueError(f"{manifest.name} is a {manifest.task} model; this evaluates detectors")
    preprocess = Preprocessor(manifest.input)
    detections: list[list] = [[] for _ in manifest.stages]
    for sample in tqdm(data.samples, desc=f"eval {manifest.name}", disable=not progress, leave=False):
        x, box = preprocess(read_rgb(sample.image_path))
        for step in model.stages(x):
            detections[step.k].append(decode(step.heads, manifest.decoder, box, manifest.labels, score_threshold))
    rows, macs = score_stages(data, detections, manifest.labels), 0
    for row, stage in zip(rows, manifest.stages):
        macs += stage.macs
        row.update(cumulative_macs=macs, macs_fraction=macs / manifest.total_macs if manifest.total_macs else 1.0)
    return rows


def evaluate_detector(model: AnytimeModel, data: str | Path, split: str = "val", score_threshold: float = 0.01,
                      **read_args) -> list[dict]:
    """:func:`evaluate_set` on ``split`` of the set at ``data`` (any format)."""
    return evaluate_set(model, load_split(data, split, **read_args), score_threshold)


def _ap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown_table(rows: list[dict], labels: tuple[str, ...] | None = None) -> str:
    """Rows as a markdown table: stage, MACs, mAP@0.5:0.95, mAP@0.5 and per class AP@0.5:0.95."""
    labels = tuple(labels or rows[0]["per_class"])
    lines = ["| stage | cumulative MMACs | of full | mAP@0.5:0.95 | mAP@0.5 | "
             + " | ".join(f"{n} AP" for n in labels) + " |", "|---" * (5 + len(labels)) + "|"]
    for r in rows:
        aps = " | ".join(_ap(r["per_class"].get(n, {}).get("ap")) for n in labels)
        lines.append(f"| {r['stage']} | {r['cumulative_macs'] / 1e6:.1f} | {r['macs_fraction']:.1%} | "
                     f"**{_ap(r['map'])}** | {_ap(r['map50'])} | {aps} |")
    return "\n".join(lines)


def plot(rows_by_model: dict[str, list[dict]], path: Path) -> None:
    """mAP@0.5 and mAP@0.5:0.95 against cumulative MACs, one line per model."""
    from .plots import plt, save_plot  # pyplot with the Agg backend
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    for name, rows in rows_by_model.items():
        macs = [r["cumulative_macs"] / 1e6 for r in rows]
        axes[0].plot(macs, [r["map50"] for r in rows], "o-", label=name)
        axes[1].plot(macs, [r["map"] for r in rows], "o-", label=name)
    for ax, metric in zip(axes, ("mAP@0.5", "mAP@0.5:0.95")):
        ax.set_xlabel("cumulative MMACs per frame")
        ax.set_ylabel(f"{metric} (validation)")
    save_plot(fig, path, list(axes), legend_size=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anytime_perception.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, nargs="+",
                        help="model directories (with manifest.yaml) or ultralytics YOLO detection exports (.onnx)")
    parser.add_argument("--data", required=True, help="labelled set: COCO .json, YOLO folder or VOC folder")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--images", help="COCO: folder the JSON's file_name entries are relative to")
    parser.add_argument("--split", default="val", choices=["train", "val", "all"])
    parser.add_argument("--score-threshold", type=float, default=0.01)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--plot", type=Path, help="also plot mAP vs MACs of every model to this PNG")
    args = parser.parse_args(argv)
    results = {}
    try:
        data = load_split(args.data, args.split, args.format, images=args.images)
        print(data.summary())
        for path in args.model:
            model = AnytimeModel(path)
            rows = evaluate_set(model, data, args.score_threshold, progress=True)
            results[model.manifest.name] = rows
            print(f"\n{model.manifest.name} on {args.split} ({len(data)} images): COCO mAP per stage vs cumulative MACs\n")
            print(markdown_table(rows))
    except (DataError, ManifestError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
