"""One command from a labelled set to a deployed model: train -> export -> calibration -> evaluation.

    anytime_train --data path/to/instances.json --out models/my_detector
    anytime_train --data path/to/yolo_set --out models/my_detector --epochs 100 --input-size 416
    anytime_train --data path/to/voc_root --out models/my_detector --init models/road_signs_anywidth

``--data`` is a COCO detection JSON, an Ultralytics/YOLO folder (data.yaml) or a Pascal VOC
folder (images/ + annotations/); the class names come from the data. The run folder
(``--run-dir``, default ``runs/<model name>``) keeps results.csv, results.png, best.pt and last.pt;
``--out`` becomes a model directory that ``anytime_node --ros-args -p model:=<out>`` loads.
Under ``torchrun`` every process trains and the first one exports, calibrates and evaluates.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

from ..data import FORMATS
from ..nets import MODELS
from ..nets.checkpoint import load_checkpoint
from .cli import CLI_ERRORS
from .train import TrainConfig, open_training_sets, train

STEPS = ("train", "export", "calibrate", "eval")
HELP = {
    "data": "labelled set: COCO .json, YOLO folder (data.yaml) or VOC folder (images/ + annotations/)",
    "run_dir": "run folder (default: runs/<name of --out>)",
    "model": f"model family for training from scratch ({', '.join(sorted(MODELS))})",
    "input_size": "square network input, a multiple of the network stride (32)",
    "format": "format of --data", "val_data": "separate validation set, any format (default: the set's own val "
    "split for YOLO, else a seeded 20 %% split)", "images": "COCO: folder the JSON's file_name entries are relative to",
    "classes": "comma-separated class names to train, in this order (VOC default: sorted names found)",
    "strict": "stop on any bad sample instead of skipping it", "val_every": "validate every K epochs",
    "flip": "probability of horizontal flips (default off: mirrored signs are other signs)",
    "init": "start from this model directory or checkpoint (fine-tuning; class layers re-initialised)",
    "limit_batches": "stop each epoch after this many batches (smoke runs)",
    "distill": "weight of in-place distillation of the smaller stages from the last",
    "regress_radius": "also regress boxes at cells up to this many cells from a box's centre cell (0: centre only)",
    "giou": "weight of a GIoU loss on the decoded boxes where they are regressed (0: off)",
    "expansion": "SteppingNet families: width ratio of the expanded network (0: the paper's 1.8)",
    "stepping_targets": "SteppingNet: cumulative stage MACs (comma-separated) or a model directory to match "
                        "(default: the any-width detector's stages)",
    "stepping_iterations": "SteppingNet: construction iterations N_t", "stepping_batches":
    "SteppingNet: training batches per construction iteration m",
    "stepping_beta": "SteppingNet: learning-rate suppression beta^(j-i), applied to the update (1: off)",
    "stepping_rule": "SteppingNet construction rule: paper (importance ranking) or floors (ours: importance per MAC "
                     "saved, every stage keeps --stepping-floor x the any-width share of each layer)",
    "stepping_floor": "SteppingNet floors rule: share of the any-width layer widths every stage keeps",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anytime_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="model directory to write (default: models/<name of --run-dir>)")
    p.add_argument("--name", help="model name in the manifest (default: the --out folder's name)")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS, help="which steps to run (default all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        default = None if f.name == "run_dir" else f.default
        text = HELP.get(f.name, "") + (f" (default {default})" if default not in (None, "", MISSING) else "")
        if f.name == "data":
            p.add_argument(flag, required=True, help=text)
        elif kind == "bool":
            p.add_argument(flag, action="store_true", help=text)
        elif f.name == "format":
            p.add_argument(flag, default=f.default, choices=FORMATS, help=text)
        else:
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[kind], default=default, help=text)
    return p


def _paths(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(run folder, model directory, model name) from --out / --run-dir / --name."""
    if not args.out and not args.run_dir:
        raise ValueError("say where the model goes: --out models/NAME (or at least --run-dir)")
    out = Path(args.out) if args.out else Path("models") / Path(args.run_dir).name
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / out.name
    return run_dir, out, args.name or out.name


def run(args: argparse.Namespace) -> int:
    import torch

    run_dir, out, name = _paths(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "run_dir"},
                      run_dir=str(run_dir))
    timings: dict[str, float] = {}
    best = run_dir / "best.pt"
    rank0 = int(os.environ.get("RANK", "0")) == 0
    # Read and split the data once: training and the evaluation share the validation set.
    sets = open_training_sets(cfg, verbose=rank0) if {"train", "eval"} & set(args.steps) else None
    if "train" in args.steps:
        started = time.time()
        best = train(cfg, sets)
        timings["train_s"] = round(time.time() - started, 1)
        if not rank0:
            return 0  # torchrun: the other processes only train
    if "export" in args.steps:
        from ..export.__main__ import export_detector
        started = time.time()
        error = export_detector(load_checkpoint(best), out, name)
        timings["export_s"] = round(time.time() - started, 1)
        print(f"exported {best} -> {out} (max |onnx - torch| = {error:.1e})")
    if "calibrate" in args.steps:
        from ..calibration.__main__ import main as calibrate
        started = time.time()
        code = calibrate(["--model", str(out), "--data", args.data, "--format", args.format]
                         + (["--images", args.images] if args.images else []))
        if code:
            return code
        timings["calibrate_s"] = round(time.time() - started, 1)
    if "eval" in args.steps:
        from ..eval.__main__ import evaluate_set, markdown_table
        from ..runtime.model import AnytimeModel
        started = time.time()
        model = AnytimeModel(out)
        val = sets[1]
        if val.labels != model.manifest.labels:
            raise ValueError(f"{out}: labels {list(model.manifest.labels)} differ from the data's {list(val.labels)} "
                             "(was it trained on another set?)")
        rows = evaluate_set(model, val, progress=True)
        timings["eval_s"] = round(time.time() - started, 1)
        print(f"\n{name} on {val.source} validation ({len(val)} images), exported ONNX stages:\n")
        print(markdown_table(rows))
        report = {"model": str(out), "data": args.data, "val_images": len(val), "stages": rows, "timings": timings,
                  "command": "anytime_train " + " ".join(sys.argv[1:])}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {run_dir / 'eval.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except (*CLI_ERRORS, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
