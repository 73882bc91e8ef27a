"""Tables of the bring-your-own-data runs (experiments/own_data/run.sh) from their run folders:
per stage COCO mAP@0.5 and mAP@0.5:0.95 of the exported model on the validation set, training
wall time, and validation mAP while training.

    python experiments/own_data/report.py --runs runs/own_data [--names road_signs_noflip ...]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def _row(run: Path) -> str:
    report = json.loads((run / "eval.json").read_text())
    stages = report["stages"]
    cells = " | ".join(f"{s['map50']:.3f} / **{s['map']:.3f}**" for s in stages)
    with (run / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    last = len(stages) - 1
    validated = [r for r in rows if r[f"val_map_s{last}"]]
    best = max(validated, key=lambda r: sum(float(r[f"val_map_s{k}"]) for k in range(len(stages))))
    minutes = sum(float(r["time_s"]) for r in rows) / 60  # training epochs only; survives --resume
    return (f"| {run.name} | {cells} | {len(rows)} | {best['epoch']} | {minutes:.1f} | "
            f"{report['val_images']} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/own_data"))
    p.add_argument("--names", nargs="*", help="run folders to tabulate (default: every one with eval.json)")
    args = p.parse_args()
    runs = [args.runs / n for n in args.names] if args.names else sorted(p.parent for p in args.runs.glob("*/eval.json"))
    print("| run | stage 0 mAP@0.5 / mAP@0.5:0.95 | stage 1 | stage 2 | epochs | best epoch | train min (epochs) | val images |")
    print("|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(_row(run))
    for run in runs:
        report = json.loads((run / "eval.json").read_text())
        print(f"\n`{run.name}` per class (final stage, AP@0.5 / AP@0.5:0.95): " + ", ".join(
            f"{n} {c['ap50']:.3f} / {c['ap']:.3f}" for n, c in report["stages"][-1]["per_class"].items()
            if c["ap"] is not None) + f"  \ncommand: `{report['command']}`")


if __name__ == "__main__":
    main()
