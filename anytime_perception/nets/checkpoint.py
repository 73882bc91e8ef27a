"""Self-describing checkpoints: what a model is (registry name and builder arguments), its class
names and input convention travel with its weights, so one function rebuilds any of them.

Every family writes the same keys: ``checkpoint_version``, ``family`` (a detector registry name,
or a classifier family's kind), ``config`` (the builder's arguments; for the classifier families
their metadata), ``labels``, ``input`` (size, mean and std in pixel units 0..255, pad value: the
manifest's convention) and ``model`` (the weights), plus whatever the training run keeps.

    state = make_checkpoint(model, "anywidth_centernet_patch_s3", labels, input_spec)
    torch.save(state, "best.pt")
    model, state = build_from_checkpoint(load_checkpoint("best.pt"))

Checkpoints are loaded with ``weights_only=True``: nothing in them is unpickled as code.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from . import build_model

__all__ = ["CHECKPOINT_VERSION", "CheckpointError", "make_checkpoint", "classifier_checkpoint", "load_checkpoint",
           "build_from_checkpoint", "load_matching", "model_from_state", "REBUILDERS"]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names the file and the problem."""


def make_checkpoint(model: nn.Module, family: str, labels: tuple[str, ...], input_spec: dict, **extra) -> dict:
    """The checkpoint of ``model`` built by registry entry ``family``.

    Args:
        model: a registered model; its ``config`` gives the builder's ``input_size``.
        family: its registry name (``nets.MODELS``).
        labels: class names by id.
        input_spec: ``size``, ``mean``, ``std`` (on 0..255 pixels) and ``pad_value``.
        extra: anything else to keep (optimizer state, epoch, training options, metrics).
    """
    config = {"num_classes": len(labels), "input_size": int(model.config.input_size)}
    if getattr(model.config, "offset_range", 0):
        config["offset_range"] = int(model.config.offset_range)
    if hasattr(model.config, "expansion"):  # a SteppingNet family's width ratio (its levels are in the weights)
        config["expansion"] = float(model.config.expansion)
    return {"checkpoint_version": CHECKPOINT_VERSION, "family": family, "config": config, "labels": list(labels),
            "input": {k: (list(map(float, v)) if k in ("mean", "std") else int(v)) for k, v in input_spec.items()},
            "model": model.state_dict(), **extra}


def classifier_checkpoint(weights: dict, meta: dict, **extra) -> dict:
    """The checkpoint of a classifier family's network (``meta.kind``: stepping, slimmable,
    little, appeal, resnet_cifar, branch, gate) in the common schema. ``meta`` keeps the family's
    own metadata (mean/std of pixels scaled to 0..1, as its training normalises) and is also kept
    under ``meta`` for the training CLIs' resuming."""
    size = meta.get("input_size") or meta.get("spec", {}).get("input_size") or 32  # the 32x32 image-folder sets
    return {"checkpoint_version": CHECKPOINT_VERSION, "family": meta["kind"], "config": meta,
            "labels": list(meta["classes"]),
            "input": {"size": int(size), "mean": [255.0 * m for m in meta["mean"]],
                      "std": [255.0 * s for s in meta["std"]], "pad_value": 0},
            "model": weights, "meta": meta, **extra}


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's dict, loaded without unpickling arbitrary objects (``weights_only``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "weights.pt"  # an exported model directory
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a model checkpoint (a {type(state).__name__}, not a dict)")
    return state


def build_from_checkpoint(state: dict) -> nn.Module:
    """The model a detector checkpoint describes, with its weights, in eval mode."""
    for key in ("family", "config", "labels", "input"):
        if key not in state:
            raise CheckpointError(f"checkpoint has no '{key}' (written before checkpoint version "
                                  f"{CHECKPOINT_VERSION}?); keys: {sorted(state)}")
    config = dict(state["config"])
    if config.get("num_classes") != len(state["labels"]):
        raise CheckpointError(f"checkpoint config.num_classes {config.get('num_classes')} != {len(state['labels'])} labels")
    try:
        model = build_model(state["family"], **config)
    except KeyError as exc:
        raise CheckpointError(str(exc).strip("'\"")) from None
    model.load_state_dict(state["model"])
    return model.eval()


def load_matching(model: nn.Module, state: dict, labels: tuple[str, ...]) -> list[str]:
    """Load a checkpoint's weights into ``model`` (fine-tuning): every entry of the same shape,
    and for the class-dependent ones (``model.is_class_parameter``) the rows of the classes both
    have, matched by name; the rest keeps its fresh initialisation. Returns what was not loaded."""
    own = model.state_dict()
    old_labels = list(state["labels"])
    rows = [(new, old_labels.index(n)) for new, n in enumerate(labels) if n in old_labels]
    skipped = []
    with torch.no_grad():
        for name, value in state["model"].items():
            if name not in own:
                skipped.append(name)
            elif model.is_class_parameter(name):
                for new, old in rows:
                    own[name][new] = value[old]
                if len(rows) < len(labels):
                    skipped.append(f"{name} (classes {[n for n in labels if n not in old_labels]})")
            elif own[name].shape == value.shape:
                own[name].copy_(value)
            else:
                skipped.append(f"{name} (shape {tuple(value.shape)} -> {tuple(own[name].shape)})")
    model.load_state_dict(own)
    return skipped


# The classifier families' checkpoints (``training.*_run``) describe themselves by ``meta.kind``
# and the metadata each family's builder needs; one rebuilder per kind.
def _stepping(meta: dict) -> nn.Module:
    from .slimmable import SlimmableClassifier
    from .stepping import ConvSpec, SteppingNet, SteppingSpec

    d = meta["spec"]
    spec = SteppingSpec(d["name"], tuple(ConvSpec(**c) for c in d["convs"]), tuple(d["hidden"]), d["num_classes"],
                        d["input_size"], d.get("head", "linear"))
    if meta["kind"] == "slimmable":
        return SlimmableClassifier(spec, tuple(meta["ratios"]))
    return SteppingNet(spec, meta["num_subnets"])


def _little(meta: dict) -> nn.Module:
    from .appeal import build_little, little_arch

    return build_little(little_arch(meta), len(meta["classes"]))


def _appeal(meta: dict) -> nn.Module:
    from .appeal import AppealNet

    return AppealNet(_little(meta))


def _resnet(meta: dict) -> nn.Module:
    from .resnet_cifar import resnet_cifar

    return resnet_cifar(meta["depth"], len(meta["classes"]))


def _exits(meta: dict) -> nn.Module:
    from .early_exit import EarlyExitNet

    return EarlyExitNet(_resnet(meta), meta["points"], meta["kind"], meta["convs"], meta["input_size"])


REBUILDERS = {"stepping": _stepping, "slimmable": _stepping, "little": _little, "appeal": _appeal,
              "resnet_cifar": _resnet, "branch": _exits, "gate": _exits}


def model_from_state(state: dict) -> tuple[nn.Module, dict]:
    """Any family's model (eval mode) and its metadata from a loaded checkpoint: detectors by
    their registry name (metadata: the checkpoint itself), classifier families by their kind
    (metadata: ``config``; checkpoints from before the common schema: ``meta``)."""
    if state.get("family") not in (None, *REBUILDERS):
        return build_from_checkpoint(state), state
    kind = state.get("family") or state.get("meta", {}).get("kind")
    if kind not in REBUILDERS:
        raise CheckpointError(f"checkpoint of unknown kind {kind!r}; known: family (detectors), "
                              f"{', '.join(sorted(REBUILDERS))}")
    meta = state.get("config") or state["meta"]
    model = REBUILDERS[kind](meta)
    model.load_state_dict(state["model"])
    return model.eval(), meta
