"""CLI: calibrate the early-exit thresholds of a model for every vehicle mode.

    python -m anytime_perception.calibration --model models/cifar10_resnet20_pteenet \
        --data ../shared/datasets/cifar10/cifar10_jpg.zip --modes config/modes.yaml

Runs the model's ONNX stages (as deployed) on the calibration half of the test split, tunes one
threshold per exit for each rule and each mode's ``exit`` target in the modes file (exit by
exit, lowest threshold that keeps the target), learns the Bolukbasi exit policy, and writes the
``gate`` section (default rule, policy, thresholds per rule and mode) into the model's manifest.
A summary (accuracy and mean MACs on the calibration half) is printed and written next to it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.image_folder import load_image_folder
from ..runtime.manifest import ManifestError
from ..runtime.model import AnytimeModel
from ..runtime.modes import ModeError, load_modes
from .calibrate import available_rules, calibrate, collect, write_gate


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.calibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model directory (its manifest is updated)")
    p.add_argument("--data", required=True, help="image-folder dataset (zip or directory)")
    p.add_argument("--modes", default="config/modes.yaml", help="vehicle modes with per-mode exit targets")
    p.add_argument("--rules", nargs="+", help="rules to calibrate (default: all the model supports)")
    p.add_argument("--rule", help="the rule the runtime uses (default: the heads' own confidence)")
    p.add_argument("--policy-lambda", type=float, default=0.1, help="cost weight of the learned policy")
    p.add_argument("--limit", type=int, default=0, help="use only this many calibration images")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        model = AnytimeModel(args.model)
        if model.manifest.task != "classification":
            raise ValueError(f"{args.model}: calibration on labelled images needs a classification model "
                             f"(this one is {model.manifest.task})")
        calibration, _ = load_image_folder(args.data, "test", model.manifest.input.size).halves(args.seed)
        if args.limit:
            calibration = calibration.subset(args.limit, args.seed)
        if tuple(calibration.classes) != model.manifest.labels:
            raise ValueError(f"{args.data}: classes differ from the model's labels")
        modes = load_modes(args.modes, model.manifest.total_macs)
        records = collect(model, calibration.images, calibration.labels)
        supported = available_rules(records)
        rules = args.rules or supported
        unknown = [r for r in rules if r not in supported]
        rule = args.rule or next((r for r in ("confidence", "distance") if r in rules), rules[0])
        if unknown or rule not in rules:
            raise ValueError(f"rules {unknown or [rule]} not available for this model; available: {supported}")
        thresholds, policies, summary = calibrate(records, modes, rules, args.policy_lambda)
        path = write_gate(args.model, rule, thresholds, policies)
    except (FileNotFoundError, ValueError, ManifestError, ModeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (Path(args.model) / "calibration.json").write_text(json.dumps({"rule": rule, "images": len(calibration),
                                                                    "summary": summary}, indent=2))
    print(f"{'rule':<11}{'mode':<14}{'target':<26}{'accuracy':>9}{'final':>8}{'MACs':>7}")
    for row in summary:
        print(f"{row['rule']:<11}{row['mode']:<14}{row['target']:<26}{row['accuracy']:>9.4f}"
              f"{row['final_accuracy']:>8.4f}{row['mean_macs_fraction']:>7.3f}")
    print(f"wrote the gate section (default rule {rule!r}) into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
