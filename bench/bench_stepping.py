"""Benchmark: SteppingNet increments (one ONNX graph each, carry kept) vs the largest subnet as one graph.

    python bench/bench_stepping.py --model models/gtsrb_lenet5_stepping --data ../shared/datasets/gtsrb/gtsrb32_jpg.zip

For real test images, interleaved in one run: the time of each increment with the carry of the
earlier ones, their sum (the whole anytime path) and the static full graph, and the MACs counted
from every graph. ONNX Runtime CPU, one thread, batch 1 (one camera crop at a time).
Writes ``docs/results/stepping_benchmark.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from anytime_perception.data.image_folder import load_image_folder
from anytime_perception.runtime import AnytimeModel
from anytime_perception.runtime.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported SteppingNet classifier directory")
    parser.add_argument("--data", required=True, help="image-folder dataset (its test split is used)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "stepping_benchmark"))
    args = parser.parse_args(argv)
    model = AnytimeModel(args.model, threads=1)
    images = load_image_folder(args.data, "test").subset(args.images, seed=0)
    preprocess = Preprocessor(model.manifest.input)  # what the runtime does to a frame
    inputs = [preprocess(im)[0].copy() for im in images.images]
    stage_ms: list[list[float]] = [[] for _ in range(model.num_stages)]
    full_ms, correct_stages, correct_full = [], np.zeros(model.num_stages), 0
    for x in inputs[:20]:  # warm-up
        model.run_full(x)
    for i, (x, label) in enumerate(zip(inputs, images.labels)):
        for static in ((True, False) if i % 2 else (False, True)):
            if static:
                t0 = time.perf_counter()
                logits = model.run_full(x)["logits"]
                full_ms.append(1e3 * (time.perf_counter() - t0))
                correct_full += int(logits.argmax() == label)
                continue
            carry: dict[str, np.ndarray] = {}
            for k in range(model.num_stages):
                t0 = time.perf_counter()
                new, heads, _ = model.run_stage(k, x, carry)
                stage_ms[k].append(1e3 * (time.perf_counter() - t0))
                carry.update(new)
                correct_stages[k] += int(heads["logits"].argmax() == label)
    total = np.sum(stage_ms, axis=0)
    macs = [s.macs for s in model.manifest.stages]
    rows = [{"graph": f"increment {k}", "macs": macs[k], "cumulative_macs": int(sum(macs[: k + 1])),
             "p50_ms": float(np.median(stage_ms[k])), "p99_ms": float(np.percentile(stage_ms[k], 99)),
             "accuracy": float(correct_stages[k] / len(inputs))} for k in range(model.num_stages)]
    rows.append({"graph": "all increments", "macs": int(sum(macs)), "cumulative_macs": int(sum(macs)),
                 "p50_ms": float(np.median(total)), "p99_ms": float(np.percentile(total, 99)),
                 "accuracy": rows[-1]["accuracy"]})
    rows.append({"graph": "static largest subnet", "macs": model.manifest.full_model.macs,
                 "cumulative_macs": model.manifest.full_model.macs, "p50_ms": float(np.median(full_ms)),
                 "p99_ms": float(np.percentile(full_ms, 99)), "accuracy": correct_full / len(inputs)})
    ratio_time = rows[-2]["p50_ms"] / rows[-1]["p50_ms"]
    ratio_macs = rows[-2]["macs"] / rows[-1]["macs"]
    lines = [f"# SteppingNet increments vs the static largest subnet (`{Path(args.model).name}`)", "",
             f"`python bench/bench_stepping.py --model {args.model} --data {args.data} --images {args.images}`",
             f"({len(inputs)} test images, batch 1, ONNX Runtime CPU, 1 thread, {platform.processor() or platform.machine()}).",
             "", "| graph | MACs | cumulative MACs | p50 (ms) | p99 (ms) | top-1 accuracy |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['graph']} | {r['macs']:,} | {r['cumulative_macs']:,} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
              f"| {100 * r['accuracy']:.2f} % |" for r in rows]
    lines += ["", f"All increments / static graph: time **{ratio_time:.2f}x**, MACs **{ratio_macs:.3f}x** "
              "(MACs counted from the graphs: the increments recompute nothing; the time ratio is the price of "
              "several small graph calls and carry copies)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps({"rows": rows, "time_ratio": ratio_time, "macs_ratio": ratio_macs},
                                                   indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
