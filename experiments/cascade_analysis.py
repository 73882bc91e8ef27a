"""Accuracy-vs-MACs of network selection over a cascade of trained classifiers: policies and
thresholds are learned on the calibration half of the test split and measured on the other half.

Checkpoints are loaded once and built by the ``kind`` in their metadata (``LOADERS``: a function of
the loaded checkpoint returning a module whose forward gives logits ``[N, C]`` and the metadata
with ``classes`` and the ``mean`` / ``std`` of pixels scaled to 0..1). An exported model directory
(``manifest.yaml``) loads as its ``full_model`` ONNX graph (kind ``onnx``, MACs from the manifest).

``time_networks`` measures each network's CPU time on one image (batch 1, one thread: the calling
thread's CPU time, ``time.thread_time``, so waiting for a core on a shared machine is not counted),
the networks interleaved in one loop; a path's time is the sum of its networks' (the policy's few
multiply-adds are left out).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from anytime_perception.calibration.cascade import (CascadeOutcome, CascadeRecords, apply_cascade, cascade_records,
                                                    learn_cascade, myopic)
from anytime_perception.data.image_folder import ImageSet
from anytime_perception.nets.macs import counted_macs
from anytime_perception.training.appeal_run import appeal_from_state, little_from_state
from anytime_perception.training.classification import normalise
from anytime_perception.training.classifier_run import predict, resnet_from_state
from anytime_perception.nets.checkpoint import load_checkpoint
from anytime_perception.runtime.manifest import load_manifest
from exit_analysis import Point

__all__ = ["LOADERS", "Network", "OnnxClassifier", "load_network", "logits_of", "Setting", "learned_curve",
           "myopic_curve", "point_of", "operating", "records_on", "time_networks", "path_time", "LAMBDAS", "NEVER"]


def _appeal_little(state: dict) -> tuple[nn.Module, dict]:
    """The little network inside an AppealNet (its logits; the predictor head q(x) is not used)."""
    net, meta = appeal_from_state(state)
    return net.little, meta


Loader = Callable[[dict], tuple[nn.Module, dict]]
# meta "kind" -> the network of a loaded checkpoint (classifier_run, appeal_run little / joint)
LOADERS: dict[str, Loader] = {"resnet_cifar": resnet_from_state, "little": little_from_state, "appeal": _appeal_little}
LAMBDAS = (0.0, *(float(x) for x in np.round(np.geomspace(0.002, 2.0, 25), 4)))  # cost weights of the learned curve
NEVER = 2.0  # a max-softmax threshold no input reaches
THRESHOLD_QUANTILES = 200  # thresholds of the myopic curve


@dataclass(frozen=True)
class Network:
    """A trained classifier of the cascade."""

    name: str
    checkpoint: str
    kind: str
    model: nn.Module
    meta: dict
    macs: int


class OnnxClassifier(nn.Module):
    """An exported classifier's ONNX graph as a module: normalised images ``[N, 3, H, W]`` in,
    logits ``[N, C]`` out, one image per call (the exported graphs take batch 1), one CPU thread."""

    def __init__(self, file: str | Path, logits: str) -> None:
        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        self.input, self.logits = self.session.get_inputs()[0].name, logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.numpy().astype(np.float32)
        out = [self.session.run([self.logits], {self.input: images[i: i + 1]})[0] for i in range(len(images))]
        return torch.from_numpy(np.concatenate(out))  # [N, C]


def _onnx_network(path: Path, name: str, size: int) -> Network:
    manifest = load_manifest(path)
    full = manifest.full_model or (manifest.stages[0] if len(manifest.stages) == 1 else None)
    if full is None or "logits" not in full.head_outputs:
        raise ValueError(f"{path}: no full_model graph with a logits head to run as one network")
    if manifest.input.size != size:
        raise ValueError(f"{path}: takes {manifest.input.size}-pixel images, the data has {size}")
    meta = {"classes": list(manifest.labels), "mean": [m / 255.0 for m in manifest.input.mean],
            "std": [s / 255.0 for s in manifest.input.std], "input_size": size}
    return Network(name, str(path), "onnx", OnnxClassifier(full.file, full.head_outputs["logits"]), meta,
                   int(full.macs))


def load_network(path: str | Path, name: str, size: int) -> Network:
    """Load a checkpoint by its meta ``kind`` and count its MACs on a ``size`` x ``size`` image, or an
    exported model directory (``manifest.yaml``) as its ONNX full graph with the manifest's MACs."""
    path = Path(path)
    if (path / "manifest.yaml").is_file() or path.name == "manifest.yaml":
        return _onnx_network(path, name, size)
    state = load_checkpoint(path)
    kind = state.get("meta", {}).get("kind") if isinstance(state, dict) else None
    if kind not in LOADERS:
        raise ValueError(f"{path}: checkpoint kind {kind!r} has no loader (known: {', '.join(sorted(LOADERS))})")
    model, meta = LOADERS[kind](state)
    if meta.get("input_size", size) != size:
        raise ValueError(f"{path}: trained on {meta['input_size']}-pixel images, the data has {size}")
    macs = counted_macs(lambda: model.eval()(torch.zeros(1, 3, size, size)), model)
    return Network(name, str(path), kind, model, meta, macs)


def logits_of(network: Network, images: ImageSet) -> np.ndarray:
    """Logits ``[N, C]`` of ``network`` on ``images`` normalised like its training data."""
    if tuple(network.meta["classes"]) != images.classes:
        raise ValueError(f"{network.checkpoint}: trained on other classes than the data has")
    return predict(network.model, normalise(images.images, network.meta["mean"], network.meta["std"])).numpy()


@dataclass(frozen=True)
class Setting:
    """One setting (a cost weight or a threshold) measured on both halves."""

    setting: float
    calibration: Point
    evaluation: Point
    path_share: dict[str, float]  # on the evaluation half


def point_of(setting: float, outcome: CascadeOutcome, records: CascadeRecords) -> Point:
    """An outcome as a point: MACs as a fraction of the last network's."""
    return Point(float(setting), outcome.accuracy, outcome.mean_macs / float(records.macs[-1]), outcome.answer_share)


def _setting(setting: float, run: Callable[[CascadeRecords], CascadeOutcome], calibration: CascadeRecords,
             evaluation: CascadeRecords) -> Setting:
    measured = run(evaluation)
    return Setting(float(setting), point_of(setting, run(calibration), calibration),
                   point_of(setting, measured, evaluation), measured.path_share)


def learned_curve(calibration: CascadeRecords, evaluation: CascadeRecords,
                  lambdas: tuple[float, ...] = LAMBDAS) -> list[Setting]:
    """Bolukbasi policies learned on ``calibration`` for each cost weight."""
    curve = []
    for lam in lambdas:
        policy = learn_cascade(calibration, lam)
        curve.append(_setting(lam, lambda r: apply_cascade(policy, r), calibration, evaluation))
    return curve


def myopic_curve(calibration: CascadeRecords, evaluation: CascadeRecords) -> list[Setting]:
    """One max-softmax threshold for every network, at quantiles of the calibration scores."""
    scores = calibration.msp[:-1].ravel()
    thresholds = np.unique(np.r_[np.quantile(scores, np.linspace(0, 1, THRESHOLD_QUANTILES + 1)), NEVER])
    return [_setting(t, lambda r: myopic(r, t), calibration, evaluation) for t in thresholds]


def operating(curve: list[Setting], calibration_base: float, max_loss: float) -> Setting | None:
    """The cheapest setting on the calibration half whose accuracy there is within ``max_loss``
    of ``calibration_base`` (the last network's); None if none is."""
    within = [s for s in curve if s.calibration.accuracy >= calibration_base - max_loss - 1e-12]
    return min(within, key=lambda s: (s.calibration.macs_fraction, -s.calibration.accuracy), default=None)


def records_on(networks: list[Network], images: ImageSet) -> CascadeRecords:
    """Every network's outputs on ``images``."""
    return cascade_records([logits_of(n, images) for n in networks], images.labels, [n.macs for n in networks])


@torch.no_grad()
def time_networks(networks: list[Network], images: ImageSet, repeats: int = 200, warmup: int = 20) -> list[float]:
    """Median CPU time (ms, of the calling thread) of each network on one image, torch at one thread,
    ONNX sessions at one thread (which run on the calling thread); the networks take turns within
    each repeat, on the images in turn."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    inputs = [normalise(images.images[: warmup + repeats], n.meta["mean"], n.meta["std"]) for n in networks]
    for network in networks:
        network.model.eval()
    times: list[list[float]] = [[] for _ in networks]
    try:
        for r in range(warmup + repeats):
            for k, network in enumerate(networks):
                x = inputs[k][r % len(inputs[k]): r % len(inputs[k]) + 1]  # [1, 3, H, W]
                start = time.thread_time()
                network.model(x)
                if r >= warmup:
                    times[k].append(1e3 * (time.thread_time() - start))
    finally:
        torch.set_num_threads(threads)
    return [float(np.median(t)) for t in times]


def path_time(path_share: dict[str, float], times: list[float]) -> float:
    """Mean time per input of a path distribution (keys like ``"0>2"``), each path the sum of its
    networks' times."""
    return float(sum(share * sum(times[int(i)] for i in key.split(">")) for key, share in path_share.items()))
