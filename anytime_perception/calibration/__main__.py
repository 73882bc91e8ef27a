"""CLI: calibrate the early-exit thresholds of a model for every vehicle mode.

    python -m anytime_perception.calibration --model models/cifar10_resnet20_pteenet \
        --data ../shared/datasets/cifar10/cifar10_jpg.zip --modes config/modes.yaml
    python -m anytime_perception.calibration --model models/road_signs_anywidth --data ../shared/datasets/road_signs

Runs the model's ONNX stages (as deployed), tunes one threshold per exit for each rule and each
mode's ``exit`` target in the modes file (exit by exit, lowest threshold that keeps the target),
and writes the ``gate`` section (the rule the runtime uses, learned policy, thresholds per rule and
mode) into the model's manifest; unless ``--rule`` names it, the runtime's rule is the one with the
lowest mean MACs at the modes' accuracy-drop targets on the calibration images. A summary is
printed and written next to it (``calibration.json``).

- Classifiers: on the calibration half of the test split; rules MSP, gap, entropy, the heads' own
  confidence, and the learned Bolukbasi policy.
- Detectors: on the road_signs training split, without its labels: the frame gate learns whether a
  stage's detections already match the last stage's; "accuracy" is the share of frames answered as
  the last stage would.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..data.image_folder import load_image_folder
from ..data import load_split, read_rgb
from ..runtime.manifest import ManifestError
from ..runtime.model import AnytimeModel
from ..runtime.modes import ModeError, ModeTable, default_modes_file, load_modes
from .calibrate import (SINGLE_THRESHOLD_RULES, available_rules, calibrate, cheapest_rule, collect, mode_thresholds,
                        print_summary, write_gate)
from .detector import collect_detector, learn_frame_gate


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.calibration", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported model directory (its manifest is updated)")
    p.add_argument("--data", required=True, help="classifiers: image-folder dataset (zip or directory); detectors: "
                   "a labelled set in any format the training reads (its training split's images are used)")
    p.add_argument("--format", default="auto", help="detectors: format of --data (auto, coco, yolo, voc)")
    p.add_argument("--images", help="detectors, COCO: folder the JSON's file_name entries are relative to")
    p.add_argument("--modes", help="vehicle modes with per-mode exit targets (default: the package's config/modes.yaml)")
    p.add_argument("--rules", nargs="+", help="rules to calibrate (default: all the model supports)")
    p.add_argument("--rule", help="the rule the runtime uses (default: the cheapest on these images, "
                   "the lowest mean MACs over the modes with an accuracy-drop target)")
    p.add_argument("--policy-lambda", type=float, default=0.1, help="cost weight of the learned policy")
    p.add_argument("--per-exit-thresholds", action="store_true",
                   help="classifiers: one threshold per exit for every rule (ours); default: PTEEnet's single T "
                        "for the confidence head's rule, per exit for the others")
    p.add_argument("--limit", type=int, default=0, help="use only this many calibration images")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detectors: the node's score threshold")
    return p.parse_args(argv)


def _single_rules(args: argparse.Namespace, task: str) -> tuple[str, ...]:
    """The rules calibrated with one threshold for every exit (detectors: none, one gate per stage)."""
    return () if args.per_exit_thresholds or task == "detection" else SINGLE_THRESHOLD_RULES


def _classifier(args: argparse.Namespace, model: AnytimeModel, modes: ModeTable) -> tuple[str, list, dict, list, int]:
    calibration, _ = load_image_folder(args.data, "test", model.manifest.input.size).halves(args.seed)
    if args.limit:
        calibration = calibration.subset(args.limit, args.seed)
    if tuple(calibration.classes) != model.manifest.labels:
        raise ValueError(f"{args.data}: classes differ from the model's labels")
    records = collect(model, calibration.images, calibration.labels)
    supported = available_rules(records)
    rules = args.rules or supported
    unknown = [r for r in rules + ([args.rule] if args.rule else []) if r not in supported]
    if unknown:
        raise ValueError(f"rules {unknown} not available for this model; available: {supported}")
    if args.rule and args.rule not in rules:
        raise ValueError(f"--rule {args.rule} is not among the calibrated --rules {rules}")
    thresholds, policies, summary = calibrate(records, modes, rules, args.policy_lambda,
                                              single_rules=_single_rules(args, model.manifest.task))
    return args.rule or cheapest_rule(summary, modes), policies, thresholds, summary, len(calibration)


def _detector(args: argparse.Namespace, model: AnytimeModel, modes: ModeTable) -> tuple[str, list, dict, list, int]:
    if (args.rules and args.rules != ["policy"]) or args.rule not in (None, "policy"):
        raise ValueError("detectors are calibrated with the learned frame gate only (rule 'policy')")
    samples = load_split(args.data, "train", args.format, images=args.images)[: args.limit or None]
    records = collect_detector(model, [read_rgb(s.image_path) for s in samples], args.score_threshold)
    policies = learn_frame_gate(records)
    scores = np.stack([p.exit_probability(records.features[k]) for k, p in enumerate(policies)]
                      + [np.zeros(len(samples))])
    thresholds, summary = mode_thresholds("policy", scores, records.matches, records.cumulative_macs, modes)
    return "policy", policies, {"policy": thresholds}, summary, len(samples)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        model = AnytimeModel(args.model)
        modes = load_modes(args.modes or default_modes_file(), model.manifest.total_macs)
        run = _detector if model.manifest.task == "detection" else _classifier
        rule, policies, thresholds, summary, images = run(args, model, modes)
        path = write_gate(args.model, rule, thresholds, policies)
    except (OSError, ValueError, ManifestError, ModeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    single = _single_rules(args, model.manifest.task)
    (Path(args.model) / "calibration.json").write_text(json.dumps({"rule": rule, "images": images,
                                                                    "single_threshold_rules": list(single),
                                                                    "summary": summary}, indent=2))
    print_summary(summary, [("rule", "rule", 11, ""), ("mode", "mode", 14, ""), ("target", "target", 26, ""),
                            ("accuracy", "accuracy", 9, ".4f"), ("final", "final_accuracy", 8, ".4f"),
                            ("MACs", "mean_macs_fraction", 7, ".3f")])
    print(f"wrote the gate section (default rule {rule!r}) into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
