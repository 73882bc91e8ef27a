"""CLI: AppealNet tables and score plots (big/little: skipping and appealing rates, MACs, accuracy).

    python experiments/appeal_report.py --runs runs/big_little --out docs/results
    python experiments/appeal_report.py --render-only --out docs/results   # tables again from appealnet.json

Reads ``<runs>/<dataset>/<little>/{little,white,black}/`` (``training.appeal_run``): the little
network alone, AppealNet white-box and black-box; the big network is the one the white-box run was
trained against. Thresholds are tuned on the calibration half of the test split and every number is
measured on the other half. Writes ``<out>/appealnet_tables.md``, ``<out>/appealnet.json`` and
``<out>/appealnet_scores_<dataset>_<little>.png`` (MSP of the little network vs AppealNet's q(x),
correct vs incorrect inputs).

Every row is labelled with the options it used (the little network by its ``LITTLE_NETS`` name,
the predictor head) and the paper's own numbers (AppealNet, DATE 2021, Tables 1-3, quoted from
``../shared/papers/appealnet.txt``) stand next to ours, with the setting differences; the paper's
default configuration, where not run, is a row that says so.

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
import torch  # noqa: E402
from torch import nn  # noqa: E402

from anytime_perception.data.image_folder import ImageSet, load_image_folder  # noqa: E402
from anytime_perception.nets.appeal import LITTLE_NETS, PAPER_LITTLE, build_little  # noqa: E402
from anytime_perception.nets.macs import counted_macs  # noqa: E402
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
NOT_MEASURED = "not measured in this session"
ARCH_LABELS = {"mobilenet": "paper's CIFAR-10 MobileNet: width 1, stride-1 stem",
               "mobilenet_w05": "paper's GTSRB MobileNet: width 0.5, stride-1 stem",
               "mobilenet_w05_s2": "ours: MobileNet width 0.5, stride-2 stem",
               "shufflenet": "ShuffleNet-V2 0.5x, stride-1 stem (CIFAR port)",
               "shufflenet_s2": "ours: ShuffleNet-V2 0.5x, stride-2 stem"}
HEAD_LABELS = {"linear": "linear q head (paper)", "mlp": "mlp q head (ours)"}
PAPER_SOURCE = "`../shared/papers/appealnet.txt`"
# AppealNet Table 1 (white-box; big ResNet-101, little MobileNet): MFLOPs per input of MSP, Gap,
# Entropy and AppealNet at accuracy degradation 0 / 0.1 / 0.5 / 1 %, per dataset row
PAPER_TABLE1 = {
    "cifar10": {"row": "CIFAR-10", "little": "MobileNet",
                "accuracy": "93.77 / 92.40 / 92.31", "cost": "2520.3 / 94.6 / 94.6",
                "points": {0.0: (324.5, 325.5, 325.0, 183.9), 0.001: (316.9, 315.4, 314.7, 177.6),
                           0.005: (249.1, 251.9, 252.4, 129.1), 0.01: (191.7, 195.0, 186.1, 106.8)}},
    "gtsrb": {"row": "GTSRB", "little": "MobileNet, width 0.5",
              "accuracy": "98.78 / 96.53 / 96.42", "cost": "2520.3 / 28.8 / 28.8",
              "points": {0.0: (321.1, 353.2, 319.0, 267.6), 0.001: (281.3, 281.9, 279.3, 201.1),
                         0.005: (165.0, 170.6, 167.4, 134.5), 0.01: (121.5, 121.9, 116.2, 94.4)}},
}
# AppealNet Table 2 (black-box, CIFAR-10): accuracy of the little network / its AppealNet, and the
# appealing rate (%) of MSP, Gap, Entropy and AppealNet at degradation 0.5 / 1 / 2 / 5 %
PAPER_TABLE2 = {
    "MobileNet": ("92.40 / 92.35", {"msp": (34.77, 23.29, 16.20, 6.14), "gap": (34.58, 23.14, 16.06, 6.22),
                                    "entropy": (32.49, 23.18, 16.13, 6.14), "appeal": (25.59, 18.94, 12.49, 4.18)}),
    "ShuffleNet": ("87.30 / 87.35", {"msp": (53.22, 44.22, 33.96, 20.25), "gap": (53.23, 44.71, 34.05, 20.39),
                                     "entropy": (53.27, 44.18, 33.90, 20.10),
                                     "appeal": (45.59, 36.92, 28.27, 16.43)}),
    "EfficientNet": ("90.44 / 91.95", {"msp": (42.23, 33.80, 25.49, 13.81), "gap": (42.24, 34.07, 25.30, 13.78),
                                       "entropy": (41.36, 33.83, 25.30, 13.70),
                                       "appeal": (36.53, 27.22, 18.63, 7.65)}),
}
PAPER_FAMILY = {"mobilenet": "MobileNet", "mobilenet_w05": "MobileNet", "mobilenet_w05_s2": "MobileNet",
                "shufflenet": "ShuffleNet", "shufflenet_s2": "ShuffleNet"}
# AppealNet Table 3 (Appendix B.4, 10 classes, 32x32): MFLOPs and M parameters
PAPER_TABLE3 = {"MobileNet": (94.61, 2.30), "EfficientNet": (31.43, 3.60), "ShuffleNet": (11.42, 0.35),
                "ResNet-101": (2520.29, 42.52)}
SETTINGS = {
    "cifar10": "data: CIFAR-10 from JPEG q75 (paper: CIFAR-10); big: ResNet-20, 40.8 M MACs, 20 epochs (paper: "
               "ResNet-101, 2520 MFLOPs); little: as labelled (paper: its MobileNet, 94.6 MFLOPs); schedule: 10 "
               "epochs alone + 3 joint, cosine, one CPU thread (paper: 200 epochs, step decay x0.2, GPU); "
               "costs: counted MACs (paper: MFLOPs); thresholds tuned on one half of the test split, measured on "
               "the other (paper: not stated)",
    "gtsrb": "data: GTSRB 32x32 JPEG q95 (paper: GTSRB resized to 32x32); big: ResNet-20, no flips, 10 epochs "
             "(paper: ResNet-101); little: as labelled (paper: width 0.5, 28.8 MFLOPs); schedule and costs as "
             "for CIFAR-10",
}


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
    heads = {json.loads((run / m / "result.json").read_text()).get("predictor_head", "linear")
             for m in ("white", "black") if (run / m / "result.json").is_file()}
    analysis: dict = {"little_arch": little_result["arch"], "predictor_head": " / ".join(sorted(heads)) or None,
                      "little_epochs": little_result["epochs"],
                      "little_macs": little_result["macs"], "little_train_wall_s": little_result["wall_s"],
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


def _label(arch: str, a: dict) -> str:
    """The options a row used: the little network and the predictor head."""
    head = a.get("predictor_head")
    heads = " / ".join(HEAD_LABELS.get(h, h) for h in head.split(" / ")) if head else "no q head"
    return f"{arch} ({ARCH_LABELS.get(arch, arch)}; {heads})"


def _table1(analyses: dict) -> list[str]:
    rules = ("msp", "gap", "entropy")
    lines = ["| dataset | little (options) | degradation | "
             + " | ".join(f"{RULE_NAMES[r]} MMACs" for r in (*rules, "appeal"))
             + " | AppealNet SR / measured degradation | " + " | ".join(f"saving vs {RULE_NAMES[r]}" for r in rules)
             + " |",
             "|" + "---|" * 11]
    for (dataset, arch), a in analyses.items():
        for d in TABLE1_DEGRADATIONS if "table1" in a else ():
            row = a["table1"][f"{d:g}"]
            appeal = row["appeal"]
            lines.append(f"| {dataset} | {_label(arch, a)} | {100 * d:g} % | "
                         + " | ".join(f"{row[r]['macs'] / 1e6:.2f}" for r in (*rules, "appeal"))
                         + f" | {100 * appeal['skipping_rate']:.1f} % / {100 * appeal['degradation']:+.2f} % | "
                         + " | ".join(f"{100 * (1 - appeal['macs'] / row[r]['macs']):+.1f} %" for r in rules) + " |")
    return lines


def _table2(analyses: dict) -> list[str]:
    lines = ["| dataset | little (options) | rule | "
             + " | ".join(f"AR at {100 * d:g} %" for d in TABLE2_DEGRADATIONS) + " |",
             "|" + "---|" * (3 + len(TABLE2_DEGRADATIONS))]
    for (dataset, arch), a in analyses.items():
        for rule in ("msp", "gap", "entropy", "appeal") if "table2" in a else ():
            points = [a["table2"][f"{d:g}"][rule] for d in TABLE2_DEGRADATIONS]
            lines.append(f"| {dataset} | {_label(arch, a)} | {RULE_NAMES[rule]} | "
                         + " | ".join(f"{100 * p['appealing_rate']:.1f} %" for p in points) + " |")
    return lines


def _summary(analyses: dict) -> list[str]:
    lines = ["| dataset | little (options) | epochs alone | accuracy: big / little alone / AppealNet white / black (%) "
             "| MMACs: little / AppealNet / big | mean q white / black | training wall min: little / white / black |",
             "|---|---|---|---|---|---|---|"]
    for (dataset, arch), a in analyses.items():
        acc = " / ".join(f"{100 * a['accuracy'][k]:.2f}" if k in a["accuracy"] else "n/a"
                         for k in ("big", "little", "white", "black"))
        macs = a.get("white_macs") or a.get("black_macs") or {"little": a["little_macs"], "appeal": 0, "big": 0}
        mean_q = " / ".join(f"{a[f'{m}_mean_q']:.3f}" if f"{m}_mean_q" in a else "n/a" for m in ("white", "black"))
        wall = " / ".join(f"{a[k] / 60:.0f}" if k in a else "n/a"
                          for k in ("little_train_wall_s", "white_train_wall_s", "black_train_wall_s"))
        lines.append(f"| {dataset} | {_label(arch, a)} | {a.get('little_epochs', 'n/a')} | {acc} | "
                     f"{macs['little'] / 1e6:.2f} / {macs['appeal'] / 1e6:.2f} / {macs['big'] / 1e6:.2f} | {mean_q} | "
                     f"{wall} |")
    return lines


def _ratio(rule_cost: float, appeal_cost: float) -> str:
    """The paper's "relative saving": a rule's cost over AppealNet's."""
    return f"{rule_cost / appeal_cost:.2f}x"


def _paper_default_missing(analyses: dict, dataset: str) -> str | None:
    """The paper's little network for ``dataset`` when no run of it is in ``analyses``."""
    arch = PAPER_LITTLE.get(dataset)
    return arch if arch is not None and (dataset, arch) not in analyses else None


def _compare_table1(analyses: dict) -> list[str]:
    """Paper's Table 1 rows next to ours, per dataset, as cost ratios rule / AppealNet."""
    lines = ["## Table 1 (white-box), the paper's rows and ours", "",
             f"Paper: AppealNet Table 1, rows \"CIFAR-10\" and \"GTSRB\" ({PAPER_SOURCE}); cost per input in MFLOPs "
             "(paper) or MMACs (ours); `x`: the rule's cost over AppealNet's (the paper's \"relative saving\"; above "
             "1x AppealNet is cheaper).", ""]
    header = ["| dataset | source | little (options) | accuracy big / little / AppealNet % | degradation | MSP | Gap | "
              "Entropy | AppealNet | MSP / Gap / Entropy over AppealNet |", "|" + "---|" * 10]
    for dataset, paper in PAPER_TABLE1.items():
        lines += header
        for d, (msp, gap, entropy, appeal) in paper["points"].items():
            lines.append(f"| {dataset} | paper, Table 1 row {paper['row']} | {paper['little']} | "
                         f"{paper['accuracy']} | {100 * d:g} % | {msp} | {gap} | {entropy} | {appeal} | "
                         + " / ".join(_ratio(c, appeal) for c in (msp, gap, entropy)) + " |")
        missing = _paper_default_missing(analyses, dataset)
        if missing:
            lines.append(f"| {dataset} | ours, paper's default | {_label(missing, {'predictor_head': 'linear'})} | "
                         f"{NOT_MEASURED} | | | | | | |")
        for (d_name, arch), a in analyses.items():
            if d_name != dataset or "table1" not in a:
                continue
            acc = " / ".join(f"{100 * a['accuracy'][k]:.2f}" for k in ("big", "little", "white"))
            for d in TABLE1_DEGRADATIONS:
                row = a["table1"][f"{d:g}"]
                costs = [row[r]["macs"] / 1e6 for r in ("msp", "gap", "entropy", "appeal")]
                source = "ours, paper default" if PAPER_LITTLE.get(dataset) == arch else "ours, options"
                lines.append(f"| {dataset} | {source} | {_label(arch, a)} | {acc} | {100 * d:g} % | "
                             + " | ".join(f"{c:.2f}" for c in costs) + " | "
                             + " / ".join(_ratio(c, costs[-1]) for c in costs[:3]) + " |")
        lines += ["", f"Settings ({dataset}), ours against the paper's: {SETTINGS[dataset]}.", ""]
    return lines


def _compare_table2(analyses: dict) -> list[str]:
    """Paper's Table 2 rows (CIFAR-10) next to ours."""
    lines = ["## Table 2 (black-box), the paper's rows and ours", "",
             f"Paper: AppealNet Table 2 (CIFAR-10 only; {PAPER_SOURCE}), rows MobileNet and ShuffleNet (EfficientNet "
             "not built here); appealing rate at accuracy degradation 0.5 / 1 / 2 / 5 %; `x`: MSP's rate over "
             "AppealNet's (the paper's relative improvement). The paper has no GTSRB black-box table.", "",
             "| source | little (options) | accuracy little / AppealNet % | rule | "
             + " | ".join(f"AR at {100 * d:g} %" for d in TABLE2_DEGRADATIONS) + " | MSP over AppealNet |",
             "|" + "---|" * (5 + len(TABLE2_DEGRADATIONS))]
    for family in ("MobileNet", "ShuffleNet"):
        accuracy, rates = PAPER_TABLE2[family]
        for rule in ("msp", "gap", "entropy", "appeal"):
            ratio = " / ".join(_ratio(m, a) for m, a in zip(rates["msp"], rates["appeal"])) if rule == "appeal" else ""
            lines.append(f"| paper, Table 2 row {family} | {family} | {accuracy} | {RULE_NAMES[rule]} | "
                         + " | ".join(f"{r:.2f} %" for r in rates[rule]) + f" | {ratio} |")
        if family == "MobileNet" and _paper_default_missing(analyses, "cifar10"):
            lines.append(f"| ours, paper's default | {_label(PAPER_LITTLE['cifar10'], {'predictor_head': 'linear'})} | "
                         f"{NOT_MEASURED} | |" + " |" * len(TABLE2_DEGRADATIONS) + " |")
        for (dataset, arch), a in analyses.items():
            if dataset != "cifar10" or PAPER_FAMILY.get(arch) != family or "table2" not in a:
                continue
            accuracy = f"{100 * a['accuracy']['little']:.2f} / {100 * a['accuracy']['black']:.2f}"
            for rule in ("msp", "gap", "entropy", "appeal"):
                rates = [100 * a["table2"][f"{d:g}"][rule]["appealing_rate"] for d in TABLE2_DEGRADATIONS]
                msp = [100 * a["table2"][f"{d:g}"]["msp"]["appealing_rate"] for d in TABLE2_DEGRADATIONS]
                ratio = " / ".join(_ratio(m, r) for m, r in zip(msp, rates)) if rule == "appeal" else ""
                source = "ours, paper default" if PAPER_LITTLE.get(dataset) == arch else "ours, options"
                lines.append(f"| {source} | {_label(arch, a)} | {accuracy} | {RULE_NAMES[rule]} | "
                             + " | ".join(f"{r:.1f} %" for r in rates) + f" | {ratio} |")
    return lines + ["", f"Settings: {SETTINGS['cifar10']}; black-box: the labels stand in for the big network.", ""]


def _compare_table3(analyses: dict) -> list[str]:
    """Paper's Table 3 (costs) next to the networks we build (counted on a 32x32 image, 10 classes)."""
    lines = ["## Table 3 (costs), the paper's rows and our networks", "",
             f"Paper: AppealNet Table 3 (Appendix B.4, {PAPER_SOURCE}), 10 classes, 32x32 inputs. Ours: counted MACs "
             "(the paper says MFLOPs; its figures may be MACs: see big_little.md).", "",
             "| network | paper MFLOPs | paper M params | ours | our MMACs | our M params |",
             "|---|---|---|---|---|---|"]
    for arch in LITTLE_NETS:
        net = build_little(arch, 10).eval()
        macs = counted_macs(lambda: net(torch.zeros(1, 3, 32, 32)), net)
        flops, params = PAPER_TABLE3[PAPER_FAMILY[arch]]
        lines.append(f"| {PAPER_FAMILY[arch]} | {flops} | {params} | {arch} ({ARCH_LABELS[arch]}) | {macs / 1e6:.2f} | "
                     f"{sum(p.numel() for p in net.parameters()) / 1e6:.2f} |")
    flops, params = PAPER_TABLE3["ResNet-101"]
    lines += [f"| ResNet-101 | {flops} | {params} | resnet20 (our big network) | 40.81 | 0.27 |", ""]
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
    p.add_argument("--render-only", action="store_true",
                   help="no runs: write appealnet_tables.md again from <out>/appealnet.json (plots kept as they are)")
    args = p.parse_args(argv)
    try:
        return _render_stored(args) if args.render_only else _report(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _render_stored(args: argparse.Namespace) -> int:
    store = Path(args.out) / "appealnet.json"
    if not store.is_file():
        raise FileNotFoundError(f"{store}: nothing to render")
    stored = json.loads(store.read_text())
    analyses = {tuple(key.split("/", 1)): a for key, a in stored.items()}
    _write(analyses, Path(args.out), stored_from=str(store))
    return 0


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
        analyses[dataset, arch]["seed"], analyses[dataset, arch]["limit"] = args.seed, args.limit
        _plot(analyses[dataset, arch]["scores"], f"{dataset} {arch}: scores on the evaluation half",
              out / f"appealnet_scores_{dataset}_{arch}.png")
    _write(analyses, out, runs=args.runs)
    serialisable = {f"{d}/{a}": {k: v for k, v in analysis.items() if k != "scores"}
                    for (d, a), analysis in analyses.items()}
    (out / "appealnet.json").write_text(json.dumps(serialisable, indent=1))
    return 0


def _write(analyses: dict, out: Path, runs: str | None = None, stored_from: str | None = None) -> None:
    """``appealnet_tables.md`` from ``analyses`` ((dataset, little) -> analysis)."""
    source = (f"`python experiments/appeal_report.py --runs {runs}`" if runs else
              f"`python experiments/appeal_report.py --render-only` from `{Path(stored_from).name}`")
    notes = sorted({a["note"] for a in analyses.values() if a.get("note")})
    lines = ["# AppealNet: generated tables", "",
             f"Generated by {source}. Thresholds are tuned on the calibration half of each test split and every "
             "number is measured on the other half (seed 0). Costs are multiply-accumulates (MACs) of the conv and "
             "linear layers, counted, not FLOPs: the little network's for every input plus the big network's for "
             "appealed inputs. Degradation is against the big network on the same half. Every row names the little "
             "network and q head it used; the paper's default configuration is `mobilenet` (CIFAR-10) / "
             "`mobilenet_w05` (GTSRB) with the linear q head.", "", *[f"Note: {n}." for n in notes],
             *([""] if notes else []),
             *_compare_table3(analyses), *_compare_table1(analyses), *_compare_table2(analyses),
             "## All our runs: accuracy and cost", "", *_summary(analyses), "",
             "## All our runs, Table 1: MMACs per input at a given accuracy degradation (white-box)", "",
             "MSP / Gap / Entropy: thresholds on the little network trained alone; AppealNet: q(x) of the jointly "
             "trained little network. Saving: `1 - MACs(AppealNet) / MACs(rule)`.", "", *_table1(analyses), "",
             "## All our runs, Table 2: appealing rate at a given accuracy degradation (black-box)", "",
             "The big network is an oracle (always right), so degradation is against 100 %.", "",
             *_table2(analyses), ""]
    lines += [f"![{d} {a}](appealnet_scores_{d}_{a}.png)" for d, a in analyses
              if (out / f"appealnet_scores_{d}_{a}.png").is_file()]
    (out / "appealnet_tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
