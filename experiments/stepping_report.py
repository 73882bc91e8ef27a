"""CLI: tables and plots of the SteppingNet reproduction from the runs' ``result.json`` files.

    python experiments/stepping_report.py --runs runs/steppingnet --out docs/results

Reads ``<runs>/<set>/<method>/result.json`` (written by ``training.stepping_run``) and writes
``<out>/steppingnet_tables.md`` (Table I next to the paper's, the baselines interpolated at SteppingNet's
MACs, ablation, structure, constant neurons from the runs' ``last.pt``, commands) and one
accuracy-vs-MACs PNG per set plus the ablation PNG. Every row is labelled with the options its run
used: "paper's formulation", or "ours: " and each departure (``training.stepping.our_options``;
baselines: plain cross-entropy or SteppingNet's KD / LR suppression).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
from anytime_perception.training.stepping import our_options  # noqa: E402
from anytime_perception.training.stepping_run import TRACE_EVERY, load_classifier  # noqa: E402
from anytime_perception.eval.plots import save_plot  # noqa: E402

__all__ = ["main", "PAPER_TABLE_I"]

# Sun et al., SteppingNet (DATE 2023), Table I (../shared/papers/steppingnet.txt), rows "LeNet-3C1L
# Cifar10" and "LeNet-5 Cifar10": original accuracy, then (A_i %, M_i/M_t %) of subnets 1-4
PAPER_TABLE_I = {
    "lenet_3c1l": (83.36, ((68.5, 9.65), (77.38, 29.55), (79.81, 48.62), (80.4, 78.52))),
    "lenet5": (74.96, ((51.8, 13.64), (59.56, 26.54), (68.64, 55.07), (72.03, 82.74))),
}
PAPER_ROWS = {"lenet_3c1l": "LeNet-3C1L Cifar10", "lenet5": "LeNet-5 Cifar10"}
# the runs Table I shows, in its order (ablation runs: section "Ablation")
METHODS = ("stepping_paper", "stepping", "stepping_funnel_free", "stepping_scoped_decay",
           "stepping_funnel_free_scoped_decay", "stepping_funnel_free_scoped_decay_no_kd", "stepping_paper_ranking",
           "anywidth_plain", "anywidth", "anywidth_scoped_decay", "anywidth_no_kd",
           "slimmable_plain", "slimmable", "slimmable_no_kd")
FAMILIES = {"stepping": "SteppingNet", "anywidth": "any-width", "slimmable": "slimmable"}
# the SteppingNet constructions the baselines are compared with at equal MACs
COMPARED = tuple(k for k in METHODS if k.startswith("stepping") and k != "stepping_paper_ranking")
# the ablation of Fig. 8: run-name suffix -> variant, for each construction it was run on
ABLATION = {"": "full", "_no_suppression": "without LR suppression", "_no_kd": "without KD",
            "_no_both": "without both"}
ABLATED = ("stepping", "stepping_funnel_free_scoped_decay")


def _load(runs: Path) -> dict[str, dict[str, dict]]:
    sets: dict[str, dict[str, dict]] = {}
    for path in sorted(runs.glob("*/*/result.json")):
        result = json.loads(path.read_text())
        if "subnet_accuracy" in result:  # detectors report mAP through the eval CLI instead
            sets.setdefault(path.parent.parent.name, {})[path.parent.name] = result
    return sets


def _family(key: str) -> str:
    return next(name for prefix, name in FAMILIES.items() if key.startswith(prefix))


def _keys(results: dict[str, dict]) -> list[str]:
    """The runs of a set that the tables and plots show (``METHODS``; ablation runs have their own table)."""
    return [k for k in METHODS if k in results]


def _label(key: str, result: dict) -> str:
    """The method and every option it used. SteppingNet: "paper's formulation" or "ours: " and the
    options that depart from it (``training.stepping.our_options``; a run recorded before an option
    existed gets what it used then), then the ablations (without KD / without LR suppression).
    Baselines: "plain cross-entropy" (the default) or "ours: " SteppingNet's KD and LR suppression
    (any-width: its suppression acts; slimmable has no owned weights, so it has none) and scoped decay."""
    config = result.get("config", {})
    kd, suppressed = result.get("kd", True), result.get("beta", 0.9) < 1.0
    if key.startswith("stepping"):
        options = our_options(config)
        label = "SteppingNet, " + ("ours: " + " + ".join(options) if options else "paper's formulation")
        return label + (", without KD" if not kd else "") + (", without LR suppression" if not suppressed else "")
    used = {"SteppingNet's KD": kd, "LR suppression": suppressed and key.startswith("anywidth"),
            "scoped decay": config.get("scoped_decay")}
    recipe = [name for name, on in used.items() if on]
    return _family(key) + (", ours: " + " + ".join(recipe) if recipe else ", plain cross-entropy")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _table_one(name: str, results: dict[str, dict]) -> list[str]:
    original = results["original"]
    a_t = original["subnet_accuracy"][0]
    lines = [f"### {name}", "",
             f"Original network: **{_pct(a_t)} %** top-1 on the test split, "
             f"{original['original_macs'] / 1e6:.2f} M MACs.", "",
             "| method | " + " | ".join(f"subnet {i + 1}: A (%) / M/M_t (%) / A/A_t" for i in range(4)) + " |",
             "|---|" + "---|" * 4]
    for key in _keys(results):
        r = results[key]
        cells = [f"{_pct(a)} / {_pct(m)} / {a / a_t:.3f}" for a, m in zip(r["subnet_accuracy"], r["macs_fraction"])]
        lines.append(f"| {_label(key, r)} | " + " | ".join(cells) + " |")
    arch = original["arch"]
    if arch in PAPER_TABLE_I and "cifar10" in name:
        paper_t, paper = PAPER_TABLE_I[arch]
        cells = [f"{a:.2f} / {m:.2f} / {a / paper_t:.3f}" for a, m in paper]
        lines.append(f"| paper's SteppingNet (Table I, row \"{PAPER_ROWS[arch]}\"; original {paper_t} %) | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _equal_macs(name: str, results: dict[str, dict], key: str) -> list[str]:
    """Each baseline's accuracy at the MACs of SteppingNet run ``key``, interpolated linearly
    between the baseline's own subnets.

    Outside a baseline's MAC range there is nothing to interpolate ("-"): no extrapolation.
    """
    baselines = [k for k in _keys(results) if not k.startswith("stepping")]
    if key not in results or not baselines:
        return []
    step = results[key]
    lines = [f"### {name}: {_label(key, step)}", "", "| subnet | MACs (%) | SteppingNet A (%) | "
             + " | ".join(f"{_label(k, results[k])} A (%) | difference" for k in baselines) + " |",
             "|---|---|---|" + "---|---|" * len(baselines)]
    for i, (macs, acc) in enumerate(zip(step["macs_fraction"], step["subnet_accuracy"])):
        cells = []
        for baseline in baselines:
            xs, ys = results[baseline]["macs_fraction"], results[baseline]["subnet_accuracy"]
            if xs[0] <= macs <= xs[-1]:
                base = float(np.interp(macs, xs, ys))
                cells.append(f"{_pct(base)} | {100 * (acc - base):+.2f}")
            else:
                cells.append("- | -")
        lines.append(f"| {i + 1} | {100 * macs:.1f} | {_pct(acc)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _plot(name: str, results: dict[str, dict], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key in _keys(results):
        if key in results:
            r = results[key]
            ax.plot([100 * m for m in r["macs_fraction"]], [100 * a for a in r["subnet_accuracy"]], "o-",
                    label=_label(key, r))
    original = results["original"]
    ax.axhline(100 * original["subnet_accuracy"][0], color="grey", ls="--", label="original network")
    arch = original["arch"]
    if arch in PAPER_TABLE_I and "cifar10" in name:
        _, paper = PAPER_TABLE_I[arch]
        ax.plot([m for _, m in paper], [a for a, _ in paper], "x:", color="black", label="paper's SteppingNet")
    ax.set_xlabel("MACs (% of the original network)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(name)
    return save_plot(fig, out / f"steppingnet_{name}.png", [ax])


def _ablation(name: str, results: dict[str, dict], base: str, out: Path) -> tuple[list[str], Path | None]:
    """The Fig. 8 variants of construction ``base`` that were run: table and plot of each subnet's accuracy."""
    present = {base + suffix: label for suffix, label in ABLATION.items() if base + suffix in results}
    if len(present) < 2:
        return [], None
    lines = [f"### Ablation ({name}): {_label(base, results[base]) if base in results else base}", "",
             "| variant | " + " | ".join(f"subnet {i + 1} A (%)" for i in range(4))
             + " | MACs of subnets (% of original) |", "|---|" + "---|" * 5]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, label in present.items():
        r = results[key]
        lines.append(f"| {label} | " + " | ".join(_pct(a) for a in r["subnet_accuracy"]) + " | "
                     + " / ".join(f"{100 * m:.1f}" for m in r["macs_fraction"]) + " |")
        ax.plot(range(1, 5), [100 * a for a in r["subnet_accuracy"]], "o-", label=label)
    ax.set_xlabel("subnet")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_xticks(range(1, 5))
    ax.set_title(f"ablation, {name}, {base}")
    return lines + [""], save_plot(fig, out / f"steppingnet_ablation_{name}_{base}.png", [ax])


def _structure(name: str, results: dict[str, dict]) -> list[str]:
    """Neurons of every hidden layer in each subnet (cumulative) of the runs that report levels."""
    runs = {k: r for k, r in results.items() if "level_counts" in r}
    if not runs:
        return []
    layers = len(next(iter(runs.values()))["level_counts"])
    lines = [f"### {name}", "", "| run | " + " | ".join(f"layer {l + 1}" for l in range(layers)) + " |",
             "|---|" + "---|" * layers]
    for key, r in runs.items():
        cells = []
        for counts in r["level_counts"]:
            subnets = [sum(counts[: i + 1]) for i in range(len(counts) - 1)]
            cells.append(" / ".join(map(str, subnets)) + f" (of {sum(counts)})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines + [""]


def _constant_neurons(name: str, set_dir: Path, results: dict[str, dict]) -> list[str]:
    """Per SteppingNet-structured run with its checkpoint: the neurons of each level whose output is
    constant (``SteppingNet.constant_neurons``): dead increments add MACs and no accuracy."""
    rows = []
    for key, r in results.items():
        checkpoint = set_dir / key / "last.pt"
        if "level_counts" not in r or not checkpoint.exists():
            continue
        model, _ = load_classifier(checkpoint)
        cells = [" / ".join(f"{c} of {n}" for c, n in layer) for layer in model.constant_per_level()]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    layers = len(next(r for r in results.values() if "level_counts" in r)["level_counts"])
    return [f"### {name}", "", "| run | " + " | ".join(f"layer {l + 1}" for l in range(layers)) + " |",
            "|---|" + "---|" * layers, *rows, ""]


def _constant_trace(name: str, results: dict[str, dict], every: int = 50) -> list[str]:
    """Per run that recorded it: the constant neurons of each level (summed over the hidden layers)
    every ``every`` construction iterations and after the last."""
    lines = []
    for key, r in results.items():
        recorded = r.get("constant_trace", [])
        trace = [(it, counts) for i, (it, counts) in enumerate(recorded) if it % every == 0 or i == len(recorded) - 1]
        if not trace:
            continue
        levels = len(trace[0][1][0])
        lines += [f"### {name}: {key}", "",
                  "| iteration | " + " | ".join(f"level {k + 1}" for k in range(levels)) + " |",
                  "|---|" + "---|" * levels]
        lines += [f"| {it} | " + " | ".join(str(sum(layer[k] for layer in counts)) for k in range(levels)) + " |"
                  for it, counts in trace]
        lines.append("")
    return lines


def _commands(results: dict[str, dict]) -> list[str]:
    rows = []
    for key, r in results.items():
        phases = ", ".join(f"{phase} {seconds / 60:.1f}" for phase, seconds in r["wall_s"].items())
        rows.append(f"| {key} | {sum(r['wall_s'].values()) / 60:.1f} ({phases}) | `{r['command']}` |")
    return ["| run | wall (min) | command |", "|---|---|---|", *rows, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/steppingnet")
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = _load(Path(args.runs))
    if not sets:
        raise SystemExit(f"no result.json under {args.runs}/<set>/<method>/")
    tables, equal, ablations, plots, structures, constants, traces, commands = [], [], [], [], [], [], [], []
    for name, results in sets.items():
        if "original" not in results:
            continue
        tables += _table_one(name, results)
        for key in COMPARED:
            equal += _equal_macs(name, results, key)
        plots.append(_plot(name, results, out))
        for base in ABLATED:
            lines, plot = _ablation(name, results, base, out)
            ablations += lines
            plots += [plot] if plot else []
        structures += _structure(name, results)
        constants += _constant_neurons(name, Path(args.runs) / name, results)
        traces += _constant_trace(name, results)
        commands += [f"### {name}", "", *_commands(results)]
    body = ["<!-- generated by python experiments/stepping_report.py; edit the generator -->",
            "## Table I: accuracy A and MACs M of every subnet", "",
            "A/A_t is the subnet's accuracy relative to the original network measured here.", "",
            *tables, "## Baselines at SteppingNet's MACs", "",
            "Each baseline's accuracy interpolated linearly between its own subnets at SteppingNet's MACs "
            "(\"-\": outside the baseline's MAC range); difference = SteppingNet minus baseline, in points.", "",
            *equal, "## Ablation (Fig. 8)", "", *ablations,
            "## Structure: neurons of each hidden layer in subnets 1 / 2 / 3 / 4", "",
            "Of the expanded network's width; the rest is removed.", "", *structures,
            "## Constant (dead) neurons of each level 1 / 2 / 3 / 4", "",
            "Neurons whose output no longer depends on the input (every used incoming weight or the BatchNorm "
            "scale below 1e-3), of the level's neurons, from each run's checkpoint.", "", *constants,
            *(["## Constant neurons during construction", "",
               "Summed over the hidden layers, from the trace each run records every "
               f"{TRACE_EVERY} construction iterations.", "", *traces] if traces else []),
            "## Plots", "",
            *[f"- `{p.as_posix()}`" for p in plots], "", "## Runs: commands and wall times", "", *commands]
    (out / "steppingnet_tables.md").write_text("\n".join(body) + "\n")
    print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
