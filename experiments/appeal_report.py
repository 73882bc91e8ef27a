"""CLI: AppealNet tables and score plots (big/little: skipping and appealing rates, MACs, accuracy).

    python experiments/appeal_report.py --runs runs/big_little --out docs/results

Reads ``<runs>/<dataset>/<little>/{little,white,black}/`` (``training.appeal_run``): the little
network alone, AppealNet white-box and black-box; the big network is the one the white-box run was
trained against. Thresholds are tuned on the calibration half of the test split and every number is
measured on the other half. Writes ``<out>/appealnet_tables.md``, ``<out>/appealnet.json`` and
``<out>/appealnet_scores_<dataset>_<little>.png`` (MSP of the little network vs AppealNet's q(x),
correct vs incorrect inputs).

- Table 1 (white-box): mean MACs per input at accuracy degradation 0 / 0.1 / 0.5 / 1 % against
  the big network, AppealNet's q vs MSP / gap / entropy thresholds on the little network trained
  alone, and AppealNet's relative saving against each.
- Table 2 (black-box: the big network is an oracle, always right): appealing rate at degradation
  0.5 / 1 / 2 / 5 %.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from anytime_perception.data.image_folder import ImageSet, load_image_folder  # noqa: E402
from anytime_perception.runtime.exit_rules import DERIVED_RULES, rule_scores  # noqa: E402
from anytime_perception.training.appeal import appeal_outputs  # noqa: E402
from anytime_perception.training.appeal_run import appeal_from_state, checkpoint_of, little_from_state  # noqa: E402
from anytime_perception.training.classification import normalise  # noqa: E402
from anytime_perception.training.classifier_run import predict, resnet_from_state  # noqa: E402
from appeal_analysis import BigLittle, point_at_degradation  # noqa: E402
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main"]

TABLE1_DEGRADATIONS = (0.0, 0.001, 0.005, 0.01)
TABLE2_DEGRADATIONS = (0.005, 0.01, 0.02, 0.05)
RULE_NAMES = {"msp": "MSP", "gap": "Gap", "entropy": "Entropy", "appeal": "AppealNet q(x)"}


def _networks(run: Path) -> dict[str, tuple[nn.Module, dict]]:
    """The little network alone, the AppealNets there are (``white``, ``black``) and the big network
    the white-box one was trained against, with their metadata."""
    networks = {"little": little_from_state(checkpoint_of(run / "little/last.pt", ("little",)))}
    for method in ("white", "black"):
        if (run / method / "last.pt").is_file():
            networks[method] = appeal_from_state(checkpoint_of(run / method / "last.pt", ("appeal",)))
    if "white" in networks:
        networks["big"] = resnet_from_state(checkpoint_of(networks["white"][1]["big"], ("resnet_cifar",)))
    return networks


def _outputs(networks: dict[str, tuple[nn.Module, dict]], images: ImageSet) -> dict[str, dict[str, np.ndarray]]:
    """Logits of every network (and q of the AppealNets) on ``images``, each normalised its own way."""
    outputs = {}
    for name, (model, meta) in networks.items():
        x = normalise(images.images, meta["mean"], meta["std"])
        if name in ("white", "black"):
            logits, q = appeal_outputs(model, x)
            outputs[name] = {"logits": logits.numpy(), "q": q.numpy()}
        else:
            outputs[name] = {"logits": predict(model, x).numpy()}
    return outputs


def _pairs(outputs: dict, labels: np.ndarray, macs: dict[str, float], oracle: bool) -> dict[str, BigLittle]:
    """Every scoring rule as a big/little pair: MSP/gap/entropy on the little network alone, q on
    AppealNet (white-box with the real big network, or black-box with an oracle)."""
    big = None if oracle else outputs["big"]["logits"]
    little = outputs["little"]["logits"]
    pairs = {rule: BigLittle.of(rule_scores(rule, little), little, big, labels, macs["little"], macs["big"])
             for rule in DERIVED_RULES}
    appeal = outputs["black" if oracle else "white"]
    pairs["appeal"] = BigLittle.of(appeal["q"], appeal["logits"], big, labels, macs["appeal"], macs["big"])
    return pairs


def _analyse(run: Path, data: str, seed: int, limit: int) -> dict:
    test = load_image_folder(data, "test")
    halves = (test.subset(limit, seed) if limit else test).halves(seed)
    networks = _networks(run)
    calibration, evaluation = (_outputs(networks, h) for h in halves)
    little_result = json.loads((run / "little/result.json").read_text())
    analysis: dict = {"little_macs": little_result["macs"], "little_train_wall_s": little_result["wall_s"],
                      "accuracy": {k: float((v["logits"].argmax(-1) == halves[1].labels).mean())
                                   for k, v in evaluation.items()}}
    for method, table, degradations in (("white", "table1", TABLE1_DEGRADATIONS),
                                        ("black", "table2", TABLE2_DEGRADATIONS)):
        if method not in evaluation:
            continue
        result = json.loads((run / method / "result.json").read_text())
        macs = {"little": little_result["macs"], "appeal": result["macs"], "big": result["big_macs"] or 0.0}
        oracle = method == "black"
        cal, ev = (_pairs(o, h.labels, macs, oracle) for o, h in zip((calibration, evaluation), halves))
        analysis[table] = {f"{d:g}": {rule: asdict(point_at_degradation(cal[rule], ev[rule], d)) for rule in cal}
                           for d in degradations}
        analysis[f"{method}_macs"], analysis[f"{method}_train_wall_s"] = macs, result["wall_s"]
        analysis[f"{method}_mean_q"] = float(evaluation[method]["q"].mean())
    analysis["scores"] = {name: _scores(evaluation, name, halves[1].labels) for name in ("little", "white", "black")
                          if name in evaluation}
    return analysis


def _scores(outputs: dict, name: str, labels: np.ndarray) -> dict[str, list[float]]:
    """The score of a network (MSP of the little one alone, q of an AppealNet) on its correct and
    incorrect inputs."""
    logits = outputs[name]["logits"]
    score = rule_scores("msp", logits) if name == "little" else outputs[name]["q"]
    correct = logits.argmax(-1) == labels
    return {"correct": score[correct].tolist(), "incorrect": score[~correct].tolist()}


def _plot(scores: dict, title: str, path: Path) -> None:
    names = {"little": "MSP, little network alone", "white": "q(x), AppealNet white-box",
             "black": "q(x), AppealNet black-box"}
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.4), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (name, split) in zip(axes[0], scores.items()):
        for outcome, colour in (("correct", "tab:green"), ("incorrect", "tab:red")):
            ax.hist(split[outcome], bins=bins, density=True, alpha=0.55, color=colour,
                    label=f"{outcome} ({len(split[outcome])})")
        ax.set(xlabel=names[name], ylabel="density")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save_plot(fig, path, dpi=110)


def _table1(analyses: dict) -> list[str]:
    rules = ("msp", "gap", "entropy")
    lines = ["| dataset | little | degradation | " + " | ".join(f"{RULE_NAMES[r]} MMACs" for r in (*rules, "appeal"))
             + " | AppealNet SR / measured degradation | " + " | ".join(f"saving vs {RULE_NAMES[r]}" for r in rules)
             + " |",
             "|" + "---|" * 11]
    for (dataset, arch), a in analyses.items():
        for d in TABLE1_DEGRADATIONS if "table1" in a else ():
            row = a["table1"][f"{d:g}"]
            appeal = row["appeal"]
            lines.append(f"| {dataset} | {arch} | {100 * d:g} % | "
                         + " | ".join(f"{row[r]['macs'] / 1e6:.2f}" for r in (*rules, "appeal"))
                         + f" | {100 * appeal['skipping_rate']:.1f} % / {100 * appeal['degradation']:+.2f} % | "
                         + " | ".join(f"{100 * (1 - appeal['macs'] / row[r]['macs']):+.1f} %" for r in rules) + " |")
    return lines


def _table2(analyses: dict) -> list[str]:
    lines = ["| dataset | little | rule | " + " | ".join(f"AR at {100 * d:g} %" for d in TABLE2_DEGRADATIONS) + " |",
             "|" + "---|" * (3 + len(TABLE2_DEGRADATIONS))]
    for (dataset, arch), a in analyses.items():
        for rule in ("msp", "gap", "entropy", "appeal") if "table2" in a else ():
            points = [a["table2"][f"{d:g}"][rule] for d in TABLE2_DEGRADATIONS]
            lines.append(f"| {dataset} | {arch} | {RULE_NAMES[rule]} | "
                         + " | ".join(f"{100 * p['appealing_rate']:.1f} %" for p in points) + " |")
    return lines


def _summary(analyses: dict) -> list[str]:
    lines = ["| dataset | little | accuracy: big / little alone / AppealNet white / black (%) | MMACs: little / "
             "AppealNet / big | mean q white / black | training wall min: little / white / black |",
             "|---|---|---|---|---|---|"]
    for (dataset, arch), a in analyses.items():
        acc = " / ".join(f"{100 * a['accuracy'][k]:.2f}" if k in a["accuracy"] else "n/a"
                         for k in ("big", "little", "white", "black"))
        macs = a.get("white_macs") or a.get("black_macs") or {"little": a["little_macs"], "appeal": 0, "big": 0}
        mean_q = " / ".join(f"{a[f'{m}_mean_q']:.3f}" if f"{m}_mean_q" in a else "n/a" for m in ("white", "black"))
        wall = " / ".join(f"{a[k] / 60:.0f}" if k in a else "n/a"
                          for k in ("little_train_wall_s", "white_train_wall_s", "black_train_wall_s"))
        lines.append(f"| {dataset} | {arch} | {acc} | {macs['little'] / 1e6:.2f} / {macs['appeal'] / 1e6:.2f} / "
                     f"{macs['big'] / 1e6:.2f} | {mean_q} | {wall} |")
    return lines


def _run_dirs(runs: Path) -> list[tuple[str, str, Path]]:
    """(dataset, little network, directory) of every pre-trained little network under ``runs``."""
    return [(d.name, r.name, r) for d in sorted(p for p in runs.iterdir() if p.is_dir())
            for r in sorted(p for p in d.iterdir() if (p / "little" / "last.pt").is_file())]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; missing runs or data end it with one ``error:`` line (exit 2)."""
    p = argparse.ArgumentParser(prog="python experiments/appeal_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/big_little")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--data", nargs="*", default=[], metavar="DATASET=PATH",
                   help="test data per dataset directory (default: the path the little network was trained on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration/evaluation split")
    p.add_argument("--limit", type=int, default=0, help="use a subset of the test split (smoke runs)")
    args = p.parse_args(argv)
    try:
        return _report(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace) -> int:
    if any("=" not in item for item in args.data):
        raise ValueError(f"--data takes DATASET=PATH items, got {' '.join(args.data)}")
    data = dict(item.split("=", 1) for item in args.data)
    runs = _run_dirs(Path(args.runs))
    if not runs:
        raise FileNotFoundError(f"no <dataset>/<little>/little/last.pt under {args.runs}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    analyses = {}
    for dataset, arch, run in runs:
        source = data.get(dataset) or json.loads((run / "little/result.json").read_text())["data"]
        analyses[dataset, arch] = _analyse(run, source, args.seed, args.limit)
        _plot(analyses[dataset, arch]["scores"], f"{dataset} {arch}: scores on the evaluation half",
              out / f"appealnet_scores_{dataset}_{arch}.png")
    lines = ["# AppealNet: generated tables", "",
             f"Generated by `python experiments/appeal_report.py --runs {args.runs}`. Thresholds are tuned "
             "on the calibration half of each test split and every number is measured on the other half "
             f"(seed {args.seed}{f', {args.limit} test images' if args.limit else ''}). Costs are multiply-accumulates "
             "(MACs) of the conv and linear layers, counted, not FLOPs: the little network's for every input plus the "
             "big network's for appealed inputs. Degradation is against the big network on the same half.", "",
             "## Accuracy and cost", "", *_summary(analyses), "",
             "## Table 1: MMACs per input at a given accuracy degradation (white-box)", "",
             "MSP / Gap / Entropy: thresholds on the little network trained alone; AppealNet: q(x) of the jointly "
             "trained little network. Saving: `1 - MACs(AppealNet) / MACs(rule)`.", "", *_table1(analyses), "",
             "## Table 2: appealing rate at a given accuracy degradation (black-box)", "",
             "The big network is an oracle (always right), so degradation is against 100 %.", "",
             *_table2(analyses), ""]
    lines += [f"![{d} {a}](appealnet_scores_{d}_{a}.png)" for d, a in analyses] + [""]
    (out / "appealnet_tables.md").write_text("\n".join(lines))
    serialisable = {f"{d}/{a}": {k: v for k, v in analysis.items() if k != "scores"}
                    for (d, a), analysis in analyses.items()}
    (out / "appealnet.json").write_text(json.dumps(serialisable, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
