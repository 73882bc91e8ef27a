"""CLI: MAC savings vs mAP@0.5 of the detector's calibrated frame gate, per vehicle mode.

    python -m anytime_perception.eval.detector_gate --model models/road_signs_anywidth \
        --data ../shared/datasets/road_signs --modes config/modes.yaml --out docs/results

On the road_signs validation split (the gate was learned and calibrated on the training split):
per mode, each frame stops at the first stage whose gate probability reaches the mode's threshold,
or at the last stage the mode's MAC budget allows. Compared with the same mode without the gate
(budget only). Deadlines and CPU load are left out: they depend on the machine, not the model.
Writes ``<out>/detector_gate.json`` and ``<out>/detector_gate.md``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..calibration.detector import collect_detector
from ..data import load_split, read_rgb
from ..runtime.model import AnytimeModel
from ..runtime.modes import load_modes
from ..metrics.voc import mean_average_precision

__all__ = ["main", "gated_map"]


def _map(records, chosen: np.ndarray, samples, labels: tuple[str, ...]) -> float:
    predictions = [[] for _ in labels]
    for i, k in enumerate(chosen):
        for d in records.detections[k][i]:
            box = np.array([d.center_x - d.width / 2, d.center_y - d.height / 2, d.center_x + d.width / 2,
                            d.center_y + d.height / 2])
            predictions[d.class_id].append((i, d.score, box))
    truths = [{i: s.boxes[s.labels == c] for i, s in enumerate(samples)} for c in range(len(labels))]
    return mean_average_precision(predictions, truths)[0]


def gated_map(model: AnytimeModel, data: str, modes_file: str, score_threshold: float = 0.3) -> list[dict]:
    """One row per mode: stage shares, mean MACs and mAP@0.5 with and without the gate."""
    manifest = model.manifest
    if manifest.gate_rule != "policy" or not manifest.policies:
        raise ValueError(f"{manifest.name}: no calibrated frame gate; "
                         "run python -m anytime_perception.calibration first")
    samples = load_split(data, "val", classes=manifest.labels)
    records = collect_detector(model, [read_rgb(s.image_path) for s in samples], score_threshold, floor=0.01)
    cumulative = records.cumulative_macs
    stages, frames = records.matches.shape
    probability = np.stack([p.exit_probability(records.features[k]) for k, p in enumerate(manifest.policies)])
    rows = []
    for mode in load_modes(modes_file, manifest.total_macs).modes.values():
        allowed = max([0] + [k for k in range(stages) if cumulative[k] <= mode.mac_budget])
        budget_only = np.full(frames, allowed)
        thresholds = manifest.gates["policy"].get(mode.name)
        if thresholds is None:
            gated = budget_only
        else:
            exits = np.concatenate([probability >= np.array(thresholds[:-1])[:, None], np.ones((1, frames), bool)])
            gated = np.minimum(exits.argmax(0), allowed)
        rows.append({
            "mode": mode.name, "target": mode.exit_target, "budget_stage": int(allowed),
            "stage_share": (np.bincount(gated, minlength=stages) / frames).tolist(),
            "macs_fraction": float(cumulative[gated].mean() / cumulative[-1]),
            "macs_fraction_without_gate": float(cumulative[budget_only].mean() / cumulative[-1]),
            "map50": _map(records, gated, samples, manifest.labels),
            "map50_without_gate": _map(records, budget_only, samples, manifest.labels),
            "agreement_with_last_stage": float(records.matches[gated, np.arange(frames)].mean()),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.eval.detector_gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/road_signs_anywidth")
    p.add_argument("--data", required=True, help="road_signs root")
    p.add_argument("--modes", default="config/modes.yaml")
    p.add_argument("--out", default="docs/results")
    args = p.parse_args(argv)
    rows = gated_map(AnytimeModel(args.model), args.data, args.modes)
    lines = ["| mode | exit target | frames per stage | mean MACs (of full) | mAP@0.5 | without gate: MACs | mAP@0.5 "
             "| MAC saving | mAP@0.5 change | frames as the last stage |", "|---" * 10 + "|"]
    for r in rows:
        target = "none" if r["target"] is None else f"{r['target'][0]} {r['target'][1]}"
        saving = 1 - r["macs_fraction"] / r["macs_fraction_without_gate"]
        lines.append(f"| {r['mode']} | {target} | {' / '.join(f'{100 * s:.0f} %' for s in r['stage_share'])} | "
                     f"{r['macs_fraction']:.3f} | {r['map50']:.3f} | {r['macs_fraction_without_gate']:.3f} | "
                     f"{r['map50_without_gate']:.3f} | {100 * saving:.1f} % | "
                     f"{r['map50'] - r['map50_without_gate']:+.3f} | "
                     f"{100 * r['agreement_with_last_stage']:.1f} % |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detector_gate.json").write_text(json.dumps({"model": args.model, "rows": rows}, indent=2))
    header = ("# Detector frame gate per vehicle mode (generated)\n\n"
              f"`python -m anytime_perception.eval.detector_gate --model {args.model} --data {args.data} "
              f"--modes {args.modes}` on the road_signs validation split (140 frames).\n\n")
    (out / "detector_gate.md").write_text(header + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
