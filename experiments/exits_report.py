"""CLI: tables and plots of early exits (PTEEnet, decision gates, threshold rules, learned policy).

    python experiments/exits_report.py --runs runs/exits --data ../shared/datasets/cifar10/cifar10_jpg.zip \
        --out docs/results

For every ``<runs>/<set>/`` with ``pteenet*/`` and ``gates*/`` checkpoints (``training.exits_run``):
thresholds and policies are tuned on the calibration half of the test split and every number is
measured on the evaluation half. Every row names its formulation: "paper" where the run used each
paper's default, else the options it changed (``exits_run --help`` lists them); PTEEnet rows are
given with one threshold T for all exits (the paper's) and with per-exit thresholds (ours), gate
rows with the raw score (Algorithm 1) and the score normalised by ``‖w_c‖`` (ours). Writes
``<out>/early_exits_tables.md``, ``<out>/early_exits.json`` and accuracy-vs-MACs PNGs
``<out>/early_exits_<set>_<run>.png``, ``<out>/early_exits_gates_<set>.png``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

from anytime_perception.data.image_folder import load_image_folder  # noqa: E402
from anytime_perception.training.exits_run import load_exit_net  # noqa: E402
from exit_analysis import (Point, fixed_points, macs_at_accuracy, oracle_point, policy_curve,  # noqa: E402
                           records_of, threshold_curve)
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main"]

RULE_NAMES = {"msp": "MSP", "gap": "gap (top-1 - top-2)", "entropy": "negative entropy",
              "confidence_single": "PTEEnet confidence head, one T for all exits (paper)",
              "confidence": "PTEEnet confidence head, per-exit thresholds (ours)",
              "policy": "learned policy (Bolukbasi)",
              "distance_raw": "d-gate score max w^T x + b (paper, Alg. 1)",
              "distance_normalised": "d-gate distance max (w^T x + b) / ‖w_c‖ (ours)",
              "distance": "d-gate distance (as the checkpoint's graph computes it)"}
DROP_COLUMNS = (0.005, 0.01, 0.02, 0.03)
FIXED_GATE_THRESHOLDS = (0.0, 0.6, 1.0, 1.5, 1.8, 2.4, 3.5)  # values in the d-gate paper's Tables 1-2 and Fig. 5
# each paper's formulation (training.exits_run defaults); a run's other values are "ours"
PAPER_OPTIONS = {"branch": {"placement": "fine", "cost_form": "next", "warmup_epochs": 0},
                 "gate": {"placement": "main_blocks", "gate_penalty": "norm", "loss": "hinge"}}
# what runs from before the options were recorded did (no "options" in their checkpoint)
LEGACY_OPTIONS = {"branch": {"cost_form": "recursive"}, "gate": {"gate_penalty": "weight_decay"}}


def run_options(meta: dict, result: dict) -> dict:
    """The formulation options of a run: recorded ones, or those of runs from before the options."""
    if "options" in meta:
        return dict(meta["options"])
    legacy = {**LEGACY_OPTIONS[meta["kind"]], "placement": meta.get("placement"), "loss": meta.get("loss")}
    if meta["kind"] == "branch":
        legacy["warmup_epochs"] = result.get("warmup_epochs", 0)
    return legacy


def options_label(kind: str, options: dict) -> str:
    """"paper" or the options that differ from the paper's formulation, e.g. "ours: placement linear"."""
    differ = [f"{k.replace('_', ' ')} {options.get(k)}" for k, v in PAPER_OPTIONS[kind].items()
              if options.get(k, v) != v and not (k == "placement" and options.get("points"))]
    if options.get("points"):
        differ.insert(0, f"points {options['points']}")
    return "paper" if not differ else "ours: " + ", ".join(differ)


def _analyse(run: Path, data: str, seed: int) -> dict:
    """Curves of every rule for one exits checkpoint."""
    net, meta = load_exit_net(run / "last.pt")
    test = load_image_folder(data, "test", meta["input_size"])
    halves = [records_of(net, h, tuple(meta["mean"]), tuple(meta["std"]), meta["stage_macs"])
              for h in test.halves(seed)]
    calibration, evaluation = halves
    backbone = float(meta["backbone_macs"])
    own = ("confidence",) if meta["kind"] == "branch" else ("distance_raw", "distance_normalised")
    curves = {rule: threshold_curve(rule, calibration, evaluation, backbone)
              for rule in ("msp", "gap", "entropy", *own)}
    if meta["kind"] == "branch":
        curves["confidence_single"] = threshold_curve("confidence", calibration, evaluation, backbone, mode="single")
        curves["policy"] = policy_curve(calibration, evaluation, backbone)
    fixed = ({rule: fixed_points(rule, evaluation, backbone, FIXED_GATE_THRESHOLDS) for rule in own}
             if meta["kind"] == "gate" else {})
    result = json.loads((run / "result.json").read_text())
    options = run_options(meta, result)
    return {"run": run.name, "meta": {k: meta[k] for k in ("depth", "points", "kind", "lam", "loss", "placement",
                                                             "stage_macs", "backbone_macs")},
            "options": options, "formulation": options_label(meta["kind"], options),
            "schedule": {"epochs": result.get("epochs"), "warmup_epochs": result.get("warmup_epochs", 0)},
            "backbone_accuracy": float(evaluation.correct[-1].mean()),
            "exit_accuracy": [float(a) for a in evaluation.correct.mean(1)],
            "exit_cost": [float(c) / backbone for c in evaluation.cumulative_macs],
            "oracle": oracle_point(evaluation, backbone), "curves": curves, "fixed": fixed,
            "train_wall_s": result["wall_s"],
            "command": result["command"]}


def _cell(points: list[Point], accuracy: float) -> str:
    macs = macs_at_accuracy(points, accuracy)
    return "n/a" if macs is None else f"{100 * (1 - macs):.1f} %"


def _schedule(a: dict) -> str:
    s = a["schedule"]
    return f"{s['warmup_epochs']}+{s['epochs']}" if s["warmup_epochs"] else f"{s['epochs']}"


def _pteenet_table(analyses: list[dict]) -> list[str]:
    lines = ["| run | formulation | thresholds | lambda | epochs (warm-up+loss) | exits after units | "
             "exit accuracy % (eval half) | cost of each exit | "
             + " | ".join(f"saving at <= {100 * d:g} % drop" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (8 + len(DROP_COLUMNS))]
    for a in analyses:
        m, base = a["meta"], a["backbone_accuracy"]
        for rule, thresholds in (("confidence_single", "one T (paper)"), ("confidence", "per exit (ours)")):
            cells = [_cell(a["curves"][rule], base - d) for d in DROP_COLUMNS]
            lines.append(f"| {a['run']} | {a['formulation']} | {thresholds} | {m['lam']} | {_schedule(a)} | "
                         f"{m['points']} | "
                         f"{' / '.join(f'{100 * x:.1f}' for x in a['exit_accuracy'])} | "
                         f"{' / '.join(f'{x:.2f}' for x in a['exit_cost'])} | " + " | ".join(cells) + " |")
    return lines


def _rules_table(a: dict) -> list[str]:
    base = a["backbone_accuracy"]
    lines = ["| rule | " + " | ".join(f"MACs at <= {100 * d:g} % drop" for d in DROP_COLUMNS)
             + " | " + " | ".join(f"saving vs MSP at {100 * d:g} %" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (1 + 2 * len(DROP_COLUMNS))]
    msp = [macs_at_accuracy(a["curves"]["msp"], base - d) for d in DROP_COLUMNS]
    for rule, points in a["curves"].items():
        macs = [macs_at_accuracy(points, base - d) for d in DROP_COLUMNS]
        shown = ["n/a" if m is None else f"{m:.3f}" for m in macs]
        saving = ["n/a" if m is None or s is None else f"{100 * (1 - m / s):+.1f} %" for m, s in zip(macs, msp)]
        lines.append(f"| {RULE_NAMES[rule]} | " + " | ".join(shown) + " | " + " | ".join(saving) + " |")
    o = a["oracle"]
    lines.append(f"| soft oracle (cheapest correct exit) | {o.macs_fraction:.3f} at {100 * o.accuracy:.2f} % accuracy"
                 + " |" * (2 * len(DROP_COLUMNS) - 1) + " |")
    return lines


def _gates_table(gates: list[dict]) -> list[str]:
    """Every gate run with both scores at equal accuracy (thresholds tuned per gate, sequentially,
    as the paper does)."""
    lines = ["| run | formulation | loss | score | epochs | exits after units | gate accuracy % per exit | "
             + " | ".join(f"MACs at <= {100 * d:g} % drop" for d in DROP_COLUMNS) + " |",
             "|" + "---|" * (7 + len(DROP_COLUMNS))]
    for a in gates:
        base = a["backbone_accuracy"]
        for rule, score in (("distance_raw", "raw (paper)"), ("distance_normalised", "normalised (ours)")):
            macs = [macs_at_accuracy(a["curves"][rule], base - d) for d in DROP_COLUMNS]
            lines.append(f"| {a['run']} | {a['formulation']} | {a['meta']['loss']} | {score} | {_schedule(a)} | "
                         f"{a['meta']['points']} | {' / '.join(f'{100 * x:.1f}' for x in a['exit_accuracy'][:-1])} | "
                         + " | ".join("n/a" if m is None else f"{m:.3f}" for m in macs) + " |")
    return lines


def _fixed_table(a: dict) -> list[str]:
    """The gates at the paper's fixed thresholds (the same t at every gate), both scores."""
    base = a["backbone_accuracy"]
    lines = ["| t (every gate) | " + " | ".join(f"{RULE_NAMES[r]}: accuracy % (drop) / MACs reduction"
                                              for r in a["fixed"]) + " |", "|" + "---|" * (1 + len(a["fixed"]))]
    for i, t in enumerate(FIXED_GATE_THRESHOLDS):
        cells = [f"{100 * pts[i].accuracy:.2f} ({100 * (pts[i].accuracy - base):+.2f}) / "
                 f"{100 * (1 - pts[i].macs_fraction):.1f} %" for pts in a["fixed"].values()]
        lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return lines


def _plot(analyses: list[dict], title: str, path: Path, rules: tuple[str, ...] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for a in analyses:
        prefix = f"{a['run']}: " if len(analyses) > 1 else ""
        for rule, points in a["curves"].items():
            if rules is not None and rule not in rules:
                continue
            ax.plot([p.macs_fraction for p in points], [100 * p.accuracy for p in points], marker=".",
                    label=prefix + RULE_NAMES[rule])
        ax.scatter([a["oracle"].macs_fraction], [100 * a["oracle"].accuracy], marker="*", s=120,
                   label=prefix + "soft oracle")
    base = analyses[0]["backbone_accuracy"]
    ax.axhline(100 * base, color="grey", linestyle="--", linewidth=0.8, label="backbone")
    ax.set(xlabel="mean MACs / backbone MACs", ylabel="accuracy % (evaluation half)", title=title)
    save_plot(fig, path, [ax], legend_size=7)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python experiments/exits_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/exits")
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--default", nargs="+", default=["pteenet"], help="runs of each set whose rules are compared")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Early exits: generated tables", "",
             "Generated by `python experiments/exits_report.py` "
             f"(`--runs {args.runs} --data {args.data}`). Thresholds and policies are tuned on the calibration "
             "half of the CIFAR-10 test split, every number is measured on the other half (5,000 images). "
             "Savings are `1 - mean MACs / backbone MACs` (branch costs included); drops are vs the backbone "
             "on the same half.", ""]
    report = {}
    for run_set in sorted(d for d in Path(args.runs).iterdir() if (d / "backbone").is_dir()):
        runs = sorted(r for r in run_set.iterdir() if (r / "result.json").is_file() and r.name != "backbone")
        analyses = {r.name: _analyse(r, args.data, args.seed) for r in runs}
        if not analyses:
            continue
        report[run_set.name] = analyses
        pteenet = [a for name, a in analyses.items() if name.startswith("pteenet")]
        gates = [a for name, a in analyses.items() if name.startswith("gates")]
        backbone_result = run_set / "backbone" / "result.json"
        trained = json.loads(backbone_result.read_text()) if backbone_result.is_file() else {}
        lines += [f"## {run_set.name}", "", f"Backbone accuracy on the evaluation half: "
                  f"{100 * next(iter(analyses.values()))['backbone_accuracy']:.2f} % "
                  f"(backbone trained {trained.get('epochs', '?')} epochs).", ""]
        if pteenet:
            lines += ["### PTEEnet branches (confidence head rule)", "", *_pteenet_table(pteenet), ""]
        for name in (n for n in args.default if n in analyses):
            png = f"early_exits_{run_set.name}_{name}.png"
            lines += [f"### Every rule on the same exits ({name}, {analyses[name]['formulation']})", "",
                      *_rules_table(analyses[name]), "",
                      f"![rules]({png})", ""]
            _plot([analyses[name]], f"{run_set.name} {name}: exit rules on the same exits", out / png)
        for a in gates:
            lines += [f"### Decision gates: {a['run']} ({a['meta']['loss']} loss, {a['formulation']})", "",
                      *_rules_table(a), "", f"At the paper's fixed thresholds ({a['run']}):", "", *_fixed_table(a), ""]
        if gates:
            lines += ["### Decision gates: every run and score at equal accuracy", "", *_gates_table(gates), ""]
            _plot(gates, f"{run_set.name}: decision gates", out / f"early_exits_gates_{run_set.name}.png",
                  ("distance_raw", "distance_normalised", "msp"))
            lines += [f"![gates](early_exits_gates_{run_set.name}.png)", ""]
    (out / "early_exits_tables.md").write_text("\n".join(lines) + "\n")
    serialisable = {s: {r: {**a, "oracle": asdict(a["oracle"]),
                            "curves": {k: [asdict(p) for p in v] for k, v in a["curves"].items()},
                            "fixed": {k: [asdict(p) for p in v] for k, v in a["fixed"].items()}}
                        for r, a in runs.items()} for s, runs in report.items()}
    (out / "early_exits.json").write_text(json.dumps(serialisable, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
