"""MACs counted from an ONNX graph (after shape inference), not estimated from the model code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

__all__ = ["count_macs"]


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def count_macs(path: str | Path) -> int:
    """Multiply-accumulates of one run of the graph: Conv, ConvTranspose, Gemm and MatMul nodes.

    Raises ValueError if a counted node's shapes cannot be inferred.
    """
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        try:
            weight, out = shapes[node.input[1]], shapes[node.output[0]]
        except KeyError as exc:
            raise ValueError(f"{path}: no shape for {exc} of {node.op_type} node {node.name!r}") from exc
        if node.op_type == "Conv":  # weight [Cout, Cin/groups, kh, kw]
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type == "ConvTranspose":  # weight [Cin, Cout/groups, kh, kw]
            total += int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
        else:  # out [.., N] = in [.., K] @ [K, N]
            k = shapes[node.input[0]][-1]
            total += int(np.prod(out)) * k
    return total
