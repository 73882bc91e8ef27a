"""CLI: train the original network, a SteppingNet, or a nested baseline (classifier or detector).

    python -m anytime_perception.training.stepping_run original  --data cifar10_jpg.zip --arch lenet_3c1l
        --out runs/c10_3c1l/original
    python -m anytime_perception.training.stepping_run stepping  --data ... --arch lenet_3c1l
        --teacher runs/c10_3c1l/original/last.pt --out ...
    python -m anytime_perception.training.stepping_run anywidth  --data ... --teacher ... --epochs N --out ...
    python -m anytime_perception.training.stepping_run slimmable --data ... --teacher ... --epochs N --out ...
    python -m anytime_perception.training.stepping_run stepping  --arch stepping_centernet_neck
        --data ../shared/datasets/road_signs ...

Every run checkpoints to ``<out>/last.pt`` (``--resume`` continues it) and ends by writing
``<out>/result.json``: accuracy (classifiers) or validation loss (detectors; mAP comes from
``python -m anytime_perception.eval`` on the export) and MACs of every subnet, wall time, the
settings and the command. MAC targets are fractions of the original (unexpanded) network's MACs,
or absolute with ``--target-macs``. A SteppingNet run also keeps its finished construction in
``<out>/constructed.pt``; ``--construction <run>`` retrains from another run's construction instead of
repeating it (retraining ablations such as ``--no-kd``: construction never uses the teacher), and
refuses one built with different settings.

The defaults are the paper's formulation (``SteppingConfig``; the baselines trained on plain
cross-entropy); our options are named flags (``--ranking importance_per_mac``, ``--funnel-free``,
``--scoped-decay``, ``--scale-at output``, ``--prune-rule layer_mean --prune-threshold 0.05``,
``--count-pruned-macs``, ``--baseline-recipe stepping``). ``experiments/steppingnet_repro.sh``
spells out every option of every recorded run.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from ..nets.slimmable import SlimmableClassifier, fit_ratios
from ..nets.stepping import ARCHITECTURES, SteppingSpec, SteppingNet
from ..nets.stepping_detector import CENTERNET_CHAIN, CENTERNET_NECK, stepping_centernet
from .cli import add_run_args, command_line, configure_torch, run_cli
from .stepping import (LEGACY_CONFIG, PRUNE_RULES, RANKINGS, SteppingConfig, assign_regular_levels, construct, fit,
                       make_optimizer)
from ..nets.stepping import SCALE_AT
from .stepping_tasks import Task, classification_task, detection_task
from ..nets.checkpoint import classifier_checkpoint, load_checkpoint, model_from_state

__all__ = ["main", "load_classifier", "classifier_from_state"]

DETECTORS = {s.name: s for s in (CENTERNET_CHAIN, CENTERNET_NECK)}
DEFAULT_TARGETS = {"lenet_3c1l": (0.10, 0.30, 0.50, 0.85), "lenet5": (0.15, 0.30, 0.60, 0.85),
                   **{name: (0.06, 0.25, 0.85) for name in DETECTORS}}
DEFAULT_EXPANSION = {"lenet_3c1l": 1.8, "lenet5": 2.0, **{name: 1.5 for name in DETECTORS}}
# how the any-width and slimmable baselines are trained: "plain" = cross-entropy on every subnet, no
# teacher, no LR suppression (the paper gives the baselines none of SteppingNet's techniques);
# "stepping" = SteppingNet's retraining recipe, KD from the original network and LR suppression
# (ours; the baseline runs recorded before this option)
BASELINE_RECIPES = ("plain", "stepping")
CHOICES = {"ranking": RANKINGS, "prune_rule": PRUNE_RULES, "scale_at": SCALE_AT}


def classifier_from_state(state: dict) -> tuple[nn.Module, dict]:
    """The trained network and its metadata from a loaded ``stepping_run`` checkpoint."""
    return model_from_state(state)


def load_classifier(path: str | Path) -> tuple[nn.Module, dict]:
    """A trained network and its metadata from a checkpoint (``weights_only``: no unpickling)."""
    return classifier_from_state(load_checkpoint(path))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.training.stepping_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", choices=("original", "stepping", "anywidth", "slimmable"))
    p.add_argument("--data", required=True, help="image-folder zip or directory (train/ and test/); "
                                                 "road_signs root for a detector")
    p.add_argument("--arch", default="lenet_3c1l", choices=sorted(ARCHITECTURES) + sorted(DETECTORS))
    p.add_argument("--out", required=True)
    p.add_argument("--teacher", help="checkpoint of the original network (KD teacher, MAC reference)")
    p.add_argument("--targets", type=float, nargs="+", help="MAC targets as fractions of the original network")
    p.add_argument("--target-macs", type=int, nargs="+", help="absolute MAC targets (e.g. another model's stages)")
    p.add_argument("--expansion", type=float, help="width ratio of the expanded network (stepping, anywidth)")
    p.add_argument("--epochs", type=int, default=30, help="original/baselines: epochs; stepping: retraining epochs")
    p.add_argument("--batch-size", type=int, default=0, help="default: 128 (classifiers), 16 (detectors)")
    p.add_argument("--no-kd", action="store_true", help="retrain with CE only (ablation)")
    p.add_argument("--no-suppression", action="store_true", help="beta = 1 (ablation)")
    p.add_argument("--baseline-recipe", choices=BASELINE_RECIPES,
                   help="anywidth/slimmable: plain cross-entropy (default, the paper gives the baselines none of "
                        "SteppingNet's techniques) or SteppingNet's KD + LR suppression (ours, the recorded runs)")
    p.add_argument("--restart-output-increments", action="store_true",
                   help="stepping: before retraining, restart the last hidden layer's increment neurons "
                        "(SteppingNet.restart_output_increments; docs/results/steppingnet.md, Detector)")
    p.add_argument("--construction", help="stepping: retrain from this run directory's finished construction "
                                          "(built with the same settings) instead of constructing again")
    add_run_args(p)
    for f in fields(SteppingConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default, choices=CHOICES.get(f.name))
    return p.parse_args(argv)


CONSTRUCTED = "constructed.pt"
TRACE_EVERY = 10  # construction iterations between two counts of constant neurons


class _Run:
    """Checkpointing and bookkeeping of one run."""

    def __init__(self, args: argparse.Namespace, meta: dict, model: nn.Module) -> None:
        self.args, self.meta, self.model = args, meta, model
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "last.pt"
        self.state = load_checkpoint(self.path) if args.resume and self.path.exists() else {}
        if self.state:
            model.load_state_dict(self.state["model"])
        self.wall: dict[str, float] = dict(self.state.get("wall", {}))  # seconds per phase, across resumes
        self._phase, self._since = "", time.time()

    def phase(self, name: str) -> None:
        """Charge the wall time from now on to phase ``name`` ("": none)."""
        self._clock()
        self._phase = name

    def _clock(self) -> None:
        now = time.time()
        if self._phase:
            self.wall[self._phase] = self.wall.get(self._phase, 0.0) + now - self._since
        self._since = now
        self.state["wall"] = self.wall

    def progress(self, key: str) -> int:
        return int(self.state.get(key, 0))

    def optimizer(self, cfg: SteppingConfig, key: str) -> torch.optim.Optimizer:
        """A fresh optimizer, or the checkpointed one if the run stopped inside phase ``key``."""
        optimizer = make_optimizer(self.model, cfg)
        if self.state.get("optimizer_phase") == key:
            optimizer.load_state_dict(self.state["optimizer"])
        return optimizer

    def save(self, key: str, value: int, optimizer: torch.optim.Optimizer) -> None:
        self.state.update({key: value, "optimizer": optimizer.state_dict(), "optimizer_phase": key})
        self.write()

    def trace_constant(self, iteration: int, last: bool) -> None:
        """Every ``TRACE_EVERY`` construction iterations and after the last one, record the constant
        neurons of every layer and level (``SteppingNet.constant_neurons``): when increments die."""
        if iteration % TRACE_EVERY == 0 or last:
            counts = [[c for c, _ in layer] for layer in self.model.constant_per_level()]
            self.state.setdefault("constant_trace", []).append([iteration, counts])

    def save_construction(self, settings: dict) -> None:
        """Keep the finished construction (with the settings that built it) for ``--construction``."""
        torch.save({"model": self.model.state_dict(), "meta": self.meta, "settings": settings,
                    "wall_construct": self.wall.get("construct", 0.0),
                    "constant_trace": self.state.get("constant_trace", [])}, self.out / CONSTRUCTED)

    def adopt_construction(self, run_dir: str | Path, settings: dict) -> None:
        """Start from another run's finished construction; refuse one built with other settings."""
        path = Path(run_dir) / CONSTRUCTED
        source = load_checkpoint(path)
        theirs = dict(source.get("settings") or {})
        if "config" in theirs:  # built before some options existed: it used what LEGACY_CONFIG says
            theirs["config"] = {**LEGACY_CONFIG, **theirs["config"]}
        if theirs != settings:
            differ = sorted(k for k in settings.keys() | theirs.keys() if settings.get(k) != theirs.get(k))
            raise ValueError(f"{path} was constructed with other settings ({', '.join(differ)} differ)")
        self.model.load_state_dict(source["model"])
        self.wall["construct"] = source["wall_construct"]  # what the construction cost, once
        self.state.update(constructed=True, construction_from=str(run_dir))
        if source.get("constant_trace"):
            self.state["constant_trace"] = source["constant_trace"]

    def write(self) -> None:
        """Checkpoint the model and the state, wall time included."""
        self._clock()
        torch.save(classifier_checkpoint(self.model.state_dict(), self.meta, **{
            k: v for k, v in self.state.items() if k not in ("model", "meta", "config", "family", "labels", "input")}),
            self.path)


def _construction_settings(args: argparse.Namespace, cfg: SteppingConfig, targets: list[int],
                           expansion: float) -> dict:
    """Everything a SteppingNet construction depends on (``--construction`` must match it)."""
    return {"data": str(args.data), "arch": args.arch, "targets": list(targets), "expansion": expansion,
            "batch_size": args.batch_size, "seed": args.seed, "train_limit": args.train_limit,
            "flip": not args.no_flip, "config": asdict(cfg)}


def _task(args: argparse.Namespace, cfg: SteppingConfig) -> Task:
    if args.arch in DETECTORS:
        return detection_task(args.data, args.batch_size, cfg.gamma, DETECTORS[args.arch].input_size, args.seed)
    return classification_task(args.data, args.batch_size, cfg.gamma, cfg.temperature, args.train_limit,
                               args.test_limit, flip=not args.no_flip, seed=args.seed)


def _spec(args: argparse.Namespace, task: Task) -> SteppingSpec:
    """The original (unexpanded) network of ``--arch`` for the task's classes."""
    if args.arch in DETECTORS:
        return DETECTORS[args.arch].with_classes(len(task.labels) + 4)  # + size and offset channels
    return ARCHITECTURES[args.arch].with_classes(len(task.labels))


def _model(args: argparse.Namespace, task: Task, targets: list[int], expansion: float) -> nn.Module:
    """The network a method trains: original width, expanded (stepping/anywidth) or slimmable."""
    detector = args.arch in DETECTORS
    spec = _spec(args, task)
    if args.method == "slimmable":
        if detector:
            raise SystemExit("the slimmable baseline is implemented for classifiers only")
        return SlimmableClassifier(spec, fit_ratios(spec, targets))
    subnets, ratio = (1, 1.0) if args.method == "original" else (len(targets), expansion)
    if detector:
        model = stepping_centernet(len(task.labels), subnets, ratio, spec)
    else:
        model = SteppingNet(spec.expanded(ratio) if ratio != 1.0 else spec, subnets)
    if args.method == "anywidth":
        assign_regular_levels(model, targets)
    return model


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data paths, datasets or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    return run_cli(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    baseline = args.method in ("anywidth", "slimmable")
    if args.baseline_recipe and not baseline:
        raise ValueError("--baseline-recipe only applies to the anywidth and slimmable methods")
    configure_torch(args.threads, args.seed)
    args.batch_size = args.batch_size or (16 if args.arch in DETECTORS else 128)
    cfg = SteppingConfig(**{f.name: getattr(args, f.name) for f in fields(SteppingConfig)})
    if args.no_suppression:  # the ablation removes it from construction and retraining
        cfg.beta = 1.0
    task = _task(args, cfg)
    teacher, _ = (load_classifier(args.teacher) if args.teacher else (None, None))
    if args.method != "original" and teacher is None:
        raise ValueError("--teacher (the trained original network) is required: "
                         "it sets the MAC reference and is the KD teacher")
    original_macs = SteppingNet(_spec(args, task), 1).macs(0)
    targets = args.target_macs or [round(f * original_macs) for f in (args.targets or DEFAULT_TARGETS[args.arch])]
    expansion = args.expansion or DEFAULT_EXPANSION[args.arch]
    model = _model(args, task, targets, expansion)
    meta = {"kind": "slimmable" if args.method == "slimmable" else "stepping", "method": args.method,
            "task": task.name, "classes": list(task.labels), "mean": list(task.mean), "std": list(task.std),
            "targets": targets, "spec": asdict(model.spec), "num_subnets": model.num_subnets}
    if args.method == "slimmable":
        meta["ratios"] = list(model.ratios)
    run = _Run(args, meta, model)
    recipe = args.baseline_recipe or BASELINE_RECIPES[0]
    plain = baseline and recipe == "plain"
    kd_teacher = None if args.no_kd or plain else teacher
    beta = 1.0 if plain else cfg.beta
    if args.method != "stepping" and (args.construction or args.restart_output_increments):
        raise ValueError("--construction and --restart-output-increments only apply to the stepping method")
    if args.method == "stepping" and not run.state.get("constructed"):
        settings = _construction_settings(args, cfg, targets, expansion)
        if args.construction:
            run.adopt_construction(args.construction, settings)
        else:
            def checkpoint(iteration: int, optimizer: torch.optim.Optimizer) -> None:
                run.trace_constant(iteration, last=iteration == cfg.iterations)
                run.save("iteration", iteration, optimizer)

            run.phase("construct")
            construct(model, task.stream, task.loss, targets, cfg, run.progress("iteration"),
                      run.optimizer(cfg, "iteration"), on_iteration=checkpoint)
            run.state["constructed"] = True
            run.phase("")  # the construction's wall time ends here, as recorded with it
            run.save_construction(settings)
    if args.restart_output_increments and run.progress("step") == 0 and "restarted" not in run.state:
        run.state["restarted"] = model.restart_output_increments()
    steps = args.epochs * task.steps_per_epoch
    if run.progress("step") < steps:
        run.phase("train")
        fit(model, task.stream, task.loss, steps, cfg, kd_teacher if args.method != "original" else None, beta,
            run.progress("step"), run.optimizer(cfg, "step"), lambda s, o: run.save("step", s, o),
            task.steps_per_epoch, desc="retrain" if args.method == "stepping" else args.method)
    run.phase("")
    run.write()
    metrics = task.evaluate(model)
    macs = [model.macs(i) for i in range(model.num_subnets)]
    unpruned = ([model.macs(i, count_pruned=False) for i in range(model.num_subnets)]
                if isinstance(model, SteppingNet) else [])
    result = {
        "method": args.method, "arch": args.arch, "task": task.name, "data": str(args.data),
        **{f"subnet_{name}": values for name, values in metrics.items()},
        "subnet_macs": macs, "original_macs": original_macs,
        # neurons per hidden layer at each level (last column: removed): the constructed structure
        **({"level_counts": model.level_counts().tolist()} if isinstance(model, SteppingNet) else {}),
        "macs_fraction": [m / original_macs for m in macs], "targets": targets,
        # the paper's count: only the weights the pruning masks keep (subnet_macs: what the graphs execute)
        **({"subnet_macs_unpruned": unpruned, "macs_fraction_unpruned": [m / original_macs for m in unpruned]}
           if unpruned else {}),
        **({f"teacher_{name}": values[0] for name, values in task.evaluate(teacher).items()} if teacher else {}),
        "wall_s": run.wall, "epochs": args.epochs, "batch_size": args.batch_size, "kd": kd_teacher is not None,
        "beta": beta, **({"baseline_recipe": recipe} if baseline else {}),
        "expansion": expansion if args.method in ("stepping", "anywidth") else None,
        "config": asdict(cfg), "steps_per_epoch": task.steps_per_epoch,
        **({"construction_from": run.state["construction_from"]} if "construction_from" in run.state else {}),
        # last-hidden-layer increment neurons restarted before retraining (--restart-output-increments)
        **({"restarted_neurons": run.state["restarted"]} if "restarted" in run.state else {}),
        # [iteration, constant neurons per hidden layer and level] during construction
        **({"constant_trace": run.state["constant_trace"]} if "constant_trace" in run.state else {}),
        "command": command_line("anytime_perception.training.stepping_run", argv),
    }
    (run.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("method", *(f"subnet_{n}" for n in metrics), "macs_fraction", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
