"""CLI: ``python -m anytime_perception.export --checkpoint runs/.../last.pt --out models/NAME``.

``python -m anytime_perception.export --static-from models/NAME`` writes only
``models/NAME/static/manifest.yaml`` (the full graph as a one-stage model) of an exported detector.

Detector checkpoints (``python -m anytime_perception.training``) become per-stage detector graphs;
SteppingNet / any-width checkpoints (``python -m anytime_perception.training.stepping_run``),
classifiers or detectors, become one graph per subnet increment; early-exit checkpoints
(``python -m anytime_perception.training.exits_run``) one graph per exit; big/little checkpoints
(``training.appeal_run``: AppealNet or a little network alone; ``training.classifier_run``: the big
ResNet) one graph each, AppealNet's with its predictor q(x) as the ``appeal`` confidence.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..nets.appeal_detector import detector_predictor
from ..nets.checkpoint import CheckpointError, build_from_checkpoint, load_checkpoint, model_from_state
from ..nets.stepping import SteppingNet
from ..runtime.manifest import ManifestError
from .appeal import AppealOutputs, export_single_stage
from .early_exit import export_early_exit
from .stages import APPEAL, export_stages, verify_stages, write_static_model
from .stepping import export_stepping, head_outputs


WEIGHTS_KEYS = ("checkpoint_version", "family", "config", "labels", "input", "model", "appeal_head", "appeal",
                "train_config")


def export_detector(state: dict, out: str | Path, name: str) -> float:
    """A nested detector from its checkpoint (labels and input convention included), with
    AppealNet's predictor on its little stage if the checkpoint has one
    (``training.appeal_detector``); ``weights.pt`` beside the graphs keeps the checkpoint without
    its training state. Returns the largest |ONNX - torch| over every stage's heads."""
    model = build_from_checkpoint(state)
    predictor = None
    if "appeal_head" in state:
        predictor = detector_predictor(model, state["appeal"]["stage"])
        predictor.load_state_dict(state["appeal_head"])
    spec = state["input"]
    export_stages(model, out, name, tuple(state["labels"]), tuple(spec["mean"]), tuple(spec["std"]), predictor,
                  spec["pad_value"])
    torch.save({k: v for k, v in state.items() if k in WEIGHTS_KEYS}, Path(out) / "weights.pt")
    size = model.config.input_size
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _detector_outputs(model.eval(), predictor, image)
    return verify_stages(expected, out, image)


def _detector_outputs(model: torch.nn.Module, predictor: torch.nn.Module | None, image: torch.Tensor) -> list[dict]:
    """Every stage's heads (and q of the predictor's stage) in torch, to check the graphs against."""
    carry: dict[str, torch.Tensor] = {}
    outputs = []
    for k in range(model.num_stages):
        new, heads = model.forward_stage(image, carry, k)
        carry.update(new)
        if predictor is not None and k == predictor.stage:
            heads = {**heads, APPEAL: predictor(carry, heads)}
        outputs.append(heads)
    return outputs


def _pixel_units(state: dict) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std in the manifest's convention (pixel units, 0..255): the checkpoint's ``input``;
    a classifier checkpoint from before the common schema keeps them for pixels scaled to 0..1."""
    if "input" in state:
        return tuple(state["input"]["mean"]), tuple(state["input"]["std"])
    meta = state["meta"]
    return tuple(255 * m for m in meta["mean"]), tuple(255 * s for s in meta["std"])


def _export_classifier(state: dict, checkpoint: str, out: str, name: str) -> float:
    model, meta = model_from_state(state)
    if not isinstance(model, SteppingNet):
        raise SystemExit(f"{checkpoint}: a {meta['kind']} network recomputes every subnet; only nested "
                         "(SteppingNet / any-width) networks export as increments")
    export_stepping(model, out, name, tuple(meta["classes"]), *_pixel_units(state))
    image = torch.randn(1, 3, model.spec.input_size, model.spec.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return verify_stages([head_outputs(model, o) for o in model.forward_all(image)], out, image)


def _export_early_exit(state: dict, out: str, name: str) -> float:
    net, meta = model_from_state(state)
    size = meta["input_size"]
    export_early_exit(net, out, name, tuple(meta["classes"]), *_pixel_units(state), size)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return verify_stages([{"logits": logits} for logits, _ in net.forward_all(image)], out, image)


def _export_big_little(state: dict, out: str, name: str) -> float:
    """AppealNet (logits and q), a little network alone or the big ResNet (logits): one stage each."""
    kind = state["meta"]["kind"]
    model, meta = model_from_state(state)
    if kind == "appeal":
        model = AppealOutputs(model)
    size = meta.get("input_size", 32)  # classifier_run trains on the 32x32 image-folder sets
    confidence = APPEAL if kind == "appeal" else None
    export_single_stage(model, out, name, tuple(meta["classes"]), *_pixel_units(state), size, confidence)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = model.eval()(image)
    expected = {"logits": outputs[0], APPEAL: outputs[1]} if confidence else {"logits": outputs}
    return verify_stages([expected], out, image)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="training checkpoint (last.pt)")
    parser.add_argument("--out", help="model directory to write")
    parser.add_argument("--name", default=None, help="model name in the manifest (default: out dir name)")
    parser.add_argument("--static-from", metavar="MODEL_DIR",
                        help="instead: write MODEL_DIR/static/manifest.yaml from an exported detector's full graph")
    args = parser.parse_args(argv)
    if args.static_from:
        if args.checkpoint or args.out:
            parser.error("--static-from takes no --checkpoint/--out")
        try:
            print(f"wrote {write_static_model(args.static_from)}")
        except ManifestError as exc:
            raise SystemExit(f"error: {exc}") from None
        return
    if not (args.checkpoint and args.out):
        parser.error("--checkpoint and --out are required (or --static-from)")
    name = args.name or args.out.rstrip("/").split("/")[-1]
    try:
        state = load_checkpoint(args.checkpoint)
        kind = state.get("meta", {}).get("kind")
        if kind in ("branch", "gate"):
            error = _export_early_exit(state, args.out, name)
        elif kind in ("appeal", "little", "resnet_cifar"):
            error = _export_big_little(state, args.out, name)
        elif kind is not None:
            error = _export_classifier(state, args.checkpoint, args.out, name)
        else:
            error = export_detector(state, args.out, name)
    except CheckpointError as exc:
        where = "" if str(exc).startswith(str(args.checkpoint)) else f"{args.checkpoint}: "
        raise SystemExit(f"error: {where}{exc}") from None
    print(f"wrote {args.out}/manifest.yaml; max |onnx - torch| over all stage heads = {error:.2e}")


if __name__ == "__main__":
    main()
