"""Shared fixtures: repository paths, the shipped model, real data, and tiny real ONNX models."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from netns import RemoteHost, two_hosts

REPO = Path(__file__).resolve().parents[1]
# The paper-reproduction harnesses live apart from the package (experiments/, run as scripts);
# their tests import them as top-level modules.
sys.path.insert(0, str(REPO / "experiments"))
SHIPPED_MODEL = REPO / "models" / "road_signs_anywidth"
MODES_FILE = REPO / "config" / "modes.yaml"
DATASETS = Path(os.environ.get("ANYTIME_DATASETS", REPO.parent / "shared" / "datasets"))
ROAD_SIGNS = DATASETS / "road_signs"
CIFAR10 = DATASETS / "cifar10" / "cifar10_jpg.zip"


@pytest.fixture(scope="session", autouse=True)
def remote_host() -> Iterator[RemoteHost | None]:
    """A second host for the tests that cross a network (None where the machine does not allow
    one), made before any test creates a DDS participant: Fast DDS reads the host's network
    interfaces once per process, and a process that learns of the link later takes its peers on
    this machine for other hosts (no shared memory for camera frames)."""
    with two_hosts() as host:
        yield host


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    return SHIPPED_MODEL


@pytest.fixture(scope="session")
def road_signs_root() -> Path:
    assert (ROAD_SIGNS / "annotations").is_dir(), f"real data expected at {ROAD_SIGNS}"
    return ROAD_SIGNS


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value.astype(np.float32), name + "_v"))


def write_tiny_model(root: Path, confidences: list[float], macs: list[int], size: int = 64,
                     stride: int = 8, peak: tuple[int, int, int] = (1, 3, 5),
                     thresholds: dict[str, list[float]] | None = None,
                     appeal: dict[str, float] | None = None, labels: tuple[str, ...] = ("a", "b")) -> Path:
    """A real multi-stage ONNX model: stage k passes a carry on and emits a fixed peak and confidence.

    Stage k reads ``image`` and ``carry.<k-1>``; its heatmap has one peak (class, y, x) = ``peak``
    with logit 2 + k, size log(2) (2 cells) and offset 0.5, and its confidence is ``confidences[k]``.
    ``thresholds`` (mode -> one per stage) become the manifest's calibrated ``confidence`` gate;
    ``appeal`` (mode -> q threshold) an appeal section deciding on stage 0's ``confidence``.
    """
    root.mkdir(parents=True, exist_ok=True)
    grid = size // stride
    stages = []
    for k, (conf, mac) in enumerate(zip(confidences, macs)):
        heat = np.full((1, len(labels), grid, grid), -6.0, np.float32)
        heat[(0, *peak)] = 2.0 + k
        nodes = [
            _const("heatmap", heat),
            _const("size", np.full((1, 2, grid, grid), np.log(2.0))),
            _const("offset", np.zeros((1, 2, grid, grid))),
            _const("confidence", np.array([conf])),
            helper.make_node("ReduceMean", ["image"], ["mean" if k else "carry.0"], keepdims=1),
        ]
        inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])]
        if k > 0:
            inputs.append(helper.make_tensor_value_info(f"carry.{k - 1}", TensorProto.FLOAT, [1, 1, 1, 1]))
            nodes.append(helper.make_node("Add", ["mean", f"carry.{k - 1}"], [f"carry.{k}"]))
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                   for n in ("heatmap", "size", "offset", "confidence", f"carry.{k}")]
        graph = helper.make_graph(nodes, f"stage{k}", inputs, outputs)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), root / f"stage{k}.onnx")
        stages.append({"name": f"stage{k}", "file": f"stage{k}.onnx", "macs": mac,
                       "inputs": ["image"] + ([f"carry.{k - 1}"] if k else []),
                       "carry_outputs": [f"carry.{k}"],
                       "head_outputs": {"heatmap": "heatmap", "size": "size", "offset": "offset"},
                       "confidence_outputs": {"confidence": "confidence"}})
    manifest = {"format_version": 1, "name": "tiny", "task": "detection", "labels": list(labels),
                "input": {"size": size, "mean": [0, 0, 0], "std": [1, 1, 1], "pad_value": 0},
                "decoder": {"type": "centernet", "stride": stride}, "stages": stages}
    if thresholds:
        manifest["gate"] = {"rule": "confidence", "thresholds": {"confidence": thresholds}}
    if appeal:
        manifest["appeal"] = {"stage": 0, "confidence": "confidence", "big_model": "road_signs_anywidth",
                              "thresholds": appeal}
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return root


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "tiny", confidences=[0.2, 0.7, 0.99], macs=[100, 200, 700])
