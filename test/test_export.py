"""Export: per-stage ONNX graphs reproduce the torch subnets, MACs are counted from the graphs,
and stage k computes only what is new in subnet k (no recomputation)."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from anytime_perception.export.macs import count_macs
from anytime_perception.export.stages import export_stages, verify_stages
from anytime_perception.nets import build_model
from anytime_perception.runtime import load_manifest
from anytime_perception.nets.checkpoint import build_from_checkpoint, load_checkpoint


def _conv_macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(conv, _inputs, out):
        nonlocal total
        total += out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return total


def test_count_macs_of_a_known_conv(tmp_path: Path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.0] * 8 * 27)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "c.onnx")
    assert count_macs(tmp_path / "c.onnx") == 8 * 8 * 8 * 27  # 8x8 outputs x 8 channels x 3*3*3


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("anywidth_centernet_s3", num_classes=4, input_size=128).eval()
    for p in model.parameters():  # non-trivial BN statistics
        p.data.add_(0.01 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("export")
    export_stages(model, out, "test", ("a", "b", "c", "d"), (0, 0, 0), (1, 1, 1))
    return model, out


def test_onnx_stages_reproduce_torch_outputs(exported):
    model, out = exported
    image = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert verify_stages(model(image), out, image) < 1e-4


def test_stage_macs_add_up_to_full_model_plus_earlier_heads(exported):
    model, out = exported
    manifest = load_manifest(out)
    x = torch.zeros(1, 3, 128, 128)
    head_macs = [_conv_macs(model.heads[k], torch.zeros(1, sum(model.groups["neck"][: k + 1]), 16, 16))
                 for k in range(model.num_stages)]
    # every stage graph's MACs counted from ONNX == torch count of what that stage computes
    assert manifest.full_model.macs == _conv_macs(model, x) - sum(head_macs[:-1])
    # no recomputation: the stages together cost the full model plus the heads of the smaller subnets
    assert manifest.total_macs == manifest.full_model.macs + sum(head_macs[:-1])
    assert manifest.total_macs <= 1.05 * manifest.full_model.macs


def test_shipped_model_matches_its_weights_and_graph_macs(shipped_model_dir):
    state = load_checkpoint(shipped_model_dir / "weights.pt")
    model = build_from_checkpoint(state)
    assert tuple(state["labels"]) == load_manifest(shipped_model_dir).labels
    size = state["input"]["size"]
    image = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert verify_stages(model.eval()(image), shipped_model_dir, image) < 1e-3
    manifest = load_manifest(shipped_model_dir)
    for stage in manifest.stages:
        assert stage.macs == count_macs(stage.file)
