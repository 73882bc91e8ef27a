"""CLI: the detector's appeals on the road_signs validation split: mAP@0.5 vs appealing rate.

    python -m anytime_perception.eval.detector_appeal --model models/road_signs_anywidth \
        --big models/road_signs_anywidth --data ../shared/datasets/road_signs --out docs/results

The little detector is the model's appeal stage, the big one what the appeal server runs. A frame
is appealed when its score is below a threshold; the curve sweeps the threshold from "never" to
"always" for AppealNet's q(x) and for rules on the little detector's own peaks, the detection
analogues of the classifiers' baselines: ``peak`` (highest peak score, like MSP), ``gap`` (top-1
minus top-2 peak score) and ``certainty`` (minus the summed ambiguity ``min(s, 1 - s)`` of the peaks,
like negative entropy). Also measures the thresholds calibrated into the manifest per vehicle mode.
Writes ``detector_appeal.md``, ``detector_appeal.json`` and ``detector_appeal.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

from ..calibration.appeal import AppealRecords, collect_appeals, detection_quality  # noqa: E402
from ..data import load_split, read_rgb  # noqa: E402
from ..runtime.appeal import BigModel  # noqa: E402
from ..runtime.exit_rules import detection_features  # noqa: E402
from ..runtime.model import AnytimeModel  # noqa: E402
from ..runtime.types import Detection  # noqa: E402
from .plots import save_plot  # noqa: E402

__all__ = ["peak_rules", "rate_curve", "main"]

RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
RULE_NAMES = {"appeal": "AppealNet q(x)", "peak": "peak score (MSP-like)", "gap": "top-1 - top-2 peak (Gap-like)",
              "certainty": "- summed ambiguity (entropy-like)"}


def peak_rules(little: list[list[Detection]]) -> dict[str, np.ndarray]:
    """Scores of the little detector's own peaks per frame (higher: surer)."""
    features = np.stack([detection_features(np.array([d.score for d in answer])) for answer in little])
    return {"peak": features[:, 0], "gap": features[:, 0] - features[:, 1], "certainty": -features[:, 5]}


def rate_curve(scores: np.ndarray, records: AppealRecords, rates: tuple[float, ...] = RATES) -> list[float]:
    """mAP when the ``rate`` share of frames with the lowest scores is appealed, per rate."""
    order = np.argsort(scores, kind="stable")
    curve = []
    for rate in rates:
        appealed = np.zeros(len(scores), bool)
        appealed[order[: int(round(rate * len(scores)))]] = True
        curve.append(records.quality(appealed))
    return curve


def _plot(curves: dict[str, list[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for rule, values in curves.items():
        ax.plot([100 * r for r in RATES], values, marker=".", label=RULE_NAMES[rule])
    ax.set(xlabel="frames appealed to the big detector (%)", ylabel="mAP@0.5 (validation)",
           title="Detector appeals: which frames to send")
    save_plot(fig, path, [ax])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.eval.detector_appeal", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the little detector (exported with a predictor head)")
    p.add_argument("--big", required=True, help="the big detector (what the appeal server runs)")
    p.add_argument("--data", required=True, help="road_signs root")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--limit", type=int, default=0)
    args = p.parse_args(argv)
    little, big = AnytimeModel(args.model), BigModel(AnytimeModel(args.big), 0.01)
    samples = load_split(args.data, "val", classes=little.manifest.labels)[: args.limit or None]
    q, small, large = collect_appeals(little, big, [read_rgb(s.image_path) for s in samples])
    records = AppealRecords(q, detection_quality(small, large, [s.boxes for s in samples],
                                                 [s.labels for s in samples], len(little.manifest.labels)))
    curves = {"appeal": rate_curve(q, records), **{r: rate_curve(s, records) for r, s in peak_rules(small).items()}}
    spec = little.manifest.appeal
    modes = {mode: {"threshold": t, "appeal_rate": records.rate(t), "map50": records.at(t)}
             for mode, t in (spec.thresholds.items() if spec else ())}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": little.manifest.name, "big_model": big.model.manifest.name, "frames": len(samples),
              "little_map50": records.at(0.0), "big_map50": records.big(), "rates": list(RATES), "curves": curves,
              "modes": modes}
    (out / "detector_appeal.json").write_text(json.dumps(report, indent=2))
    _plot(curves, out / "detector_appeal.png")
    lines = [f"`python -m anytime_perception.eval.detector_appeal --model {args.model} --big {args.big}` on the "
             f"road_signs validation split ({len(samples)} frames). Little: stage {spec.stage if spec else 0} alone, "
             f"mAP@0.5 {records.at(0.0):.3f}; big: {big.model.manifest.name}, {records.big():.3f}.", "",
             "| frames appealed | " + " | ".join(f"{100 * r:.0f} %" for r in RATES) + " |",
             "|---" * (len(RATES) + 1) + "|"]
    lines += [f"| {RULE_NAMES[rule]} | " + " | ".join(f"{v:.3f}" for v in values) + " |" for rule, values in curves.items()]
    if modes:
        lines += ["", "| mode | q threshold | frames appealed | mAP@0.5 |", "|---|---|---|---|"]
        lines += [f"| {m} | {v['threshold']:.3f} | {100 * v['appeal_rate']:.1f} % | {v['map50']:.3f} |"
                  for m, v in modes.items()]
    (out / "detector_appeal.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
