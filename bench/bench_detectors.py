"""Benchmark: our detector's stages against a peer (YOLO11n), accuracy and latency in one run.

    make bench-detectors            # or: python bench/bench_detectors.py --model models/road_signs_anywidth \\
                                    #         --model ../shared/peers/yolo11n_road_signs_320.onnx

Every model is scored with the same evaluator (pycocotools COCO mAP@0.5:0.95 and mAP@0.5 on the
validation split, ``anytime_perception.eval.evaluate_set``) and timed in the same process, frame
by frame interleaved, on ONNX Runtime with one thread: preprocessing + each stage's graph +
decoding, cumulative per stage (what a subscriber waits for that stage's answer). A YOLO export
is a one-stage model. Writes ``docs/results/detector_vs_peer.md`` and ``.json``, with the
targets of issue 20 checked for every model against the last one (the peer).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from anytime_perception.data import load_split, read_rgb
from anytime_perception.eval.__main__ import evaluate_set
from anytime_perception.runtime import AnytimeModel
from anytime_perception.runtime.decoder import decode
from anytime_perception.runtime.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]


def time_stages(models: list[AnytimeModel], frames: list[np.ndarray], repeats: int, threshold: float
                ) -> list[list[list[float]]]:
    """Per model, per stage: cumulative ms from the frame in memory to that stage's decoded
    detections; models interleaved frame by frame (rotating which goes first)."""
    preprocessors = [Preprocessor(m.manifest.input) for m in models]
    times = [[[] for _ in m.manifest.stages] for m in models]
    for model, pre in zip(models, preprocessors):  # warm-up: first-run allocations out of the way
        for _ in model.stages(pre(frames[0])[0]):
            pass
    for i, frame in enumerate(frames * repeats):
        order = list(range(len(models)))
        order = order[i % len(order):] + order[:i % len(order)]
        for j in order:
            model, manifest = models[j], models[j].manifest
            t0 = time.perf_counter()
            x, box = preprocessors[j](frame)
            for step in model.stages(x):
                decode(step.heads, manifest.decoder, box, manifest.labels, threshold)
                times[j][step.k].append((time.perf_counter() - t0) * 1e3)
    return times


def markdown(report: dict) -> str:
    lines = [
        "# Our detector's stages against the YOLO11n peer: one evaluator, one timing run",
        "",
        f"Command: `{report['command']}`. Machine: {report['machine']}; ONNX Runtime CPU, "
        f"{report['threads']} thread; {report['frames']} validation frames x {report['repeats']} timed "
        "(interleaved); accuracy with pycocotools on the road_signs validation split "
        f"({report['images']} images, score threshold {report['score_threshold']}).",
        "",
        "| model | stage | cumulative MMACs | of full | mAP@0.5:0.95 | mAP@0.5 | latency p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        for s in m["stages"]:
            lines.append(f"| {m['name']} | {s['stage']} | {s['cumulative_macs'] / 1e6:.1f} | "
                         f"{s['macs_fraction']:.1%} | **{s['map']:.3f}** | {s['map50']:.3f} | "
                         f"{s['latency_ms']['p50']:.2f} | {s['latency_ms']['p99']:.2f} |")
    peer = report["models"][-1]["name"]
    for name, checks in report["targets"].items():
        lines += ["", f"Targets of issue 20, {name} against {peer} (same run):", ""]
        for t in checks:
            lines.append(f"- {t['target']}: {t['value']} -> **{'met' if t['met'] else 'not met'}**")
    return "\n".join(lines) + "\n"


def targets(ours: dict, peer: dict, map50_floor: float) -> list[dict]:
    first, final, peer_final = ours["stages"][0], ours["stages"][-1], peer["stages"][-1]
    lat = lambda s: s["latency_ms"]["p50"]  # noqa: E731
    return [
        {"target": "final mAP@0.5:0.95 >= peer's", "met": final["map"] >= peer_final["map"],
         "value": f"{final['map']:.3f} vs {peer_final['map']:.3f}"},
        {"target": f"final mAP@0.5 not lower than before ({map50_floor:.3f})", "met": final["map50"] >= map50_floor,
         "value": f"{final['map50']:.3f}"},
        {"target": "stage 0 mAP@0.5 >= 0.65 at <= 8 % of the MACs",
         "met": first["map50"] >= 0.65 and first["macs_fraction"] <= 0.08,
         "value": f"{first['map50']:.3f} at {first['macs_fraction']:.1%}"},
        {"target": "all stages no slower than the peer (p50)", "met": lat(final) <= lat(peer_final),
         "value": f"{lat(final):.2f} vs {lat(peer_final):.2f} ms ({lat(final) / lat(peer_final):.2f}x)"},
        {"target": "stage 0 <= 1/8 of the peer's latency (p50)", "met": lat(first) <= lat(peer_final) / 8,
         "value": f"{lat(first):.2f} vs {lat(peer_final) / 8:.2f} ms ({lat(first) / lat(peer_final):.3f} of it)"},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="model directory or YOLO .onnx; repeat (ours first, the peer last)")
    parser.add_argument("--name", action="append", default=[],
                        help="table name of the n-th --model (default: its manifest name)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "road_signs"))
    parser.add_argument("--frames", type=int, default=60, help="validation frames to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--score-threshold", type=float, default=0.01)
    parser.add_argument("--map50-floor", type=float, default=0.784,
                        help="final mAP@0.5 of the model shipped before issue 20 (the floor of the target)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "detector_vs_peer.md")
    args = parser.parse_args(argv)
    data = load_split(args.data, "val")
    models = [AnytimeModel(path, threads=args.threads) for path in args.model]
    entries = []
    for model in models:
        rows = evaluate_set(model, data, args.score_threshold)
        name = args.name[len(entries)] if len(entries) < len(args.name) else model.manifest.name
        entries.append({"name": name, "path": str(Path(model.manifest.root)),
                        "stages": [{k: r[k] for k in ("stage", "map", "map50", "cumulative_macs", "macs_fraction")}
                                   for r in rows]})
        print(f"{model.manifest.name}: mAP@0.5:0.95 " + " / ".join(f"{r['map']:.3f}" for r in rows))
    frames = [read_rgb(s.image_path) for s in data.samples[: args.frames]]
    times = time_stages(models, frames, args.repeats, args.score_threshold)
    for entry, per_stage in zip(entries, times):
        for stage, values in zip(entry["stages"], per_stage):
            stage["latency_ms"] = {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}
    report = {
        "command": "python bench/bench_detectors.py " + " ".join(f"--model {m}" for m in args.model)
                   + "".join(f" --name {n}" for n in args.name),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "threads": args.threads, "frames": len(frames), "repeats": args.repeats, "images": len(data),
        "score_threshold": args.score_threshold, "models": entries,
    }
    report["targets"] = {e["name"]: targets(e, entries[-1], args.map50_floor) for e in entries[:-1]}
    text = markdown(report)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
