"""MACs of PyTorch code, counted with forward hooks on the conv and linear layers it runs."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

__all__ = ["counted_macs"]


@torch.no_grad()
def counted_macs(run: Callable[[], Any], root: nn.Module) -> int:
    """Multiply-accumulates per sample of the ``Conv2d``/``Linear`` layers under ``root`` that
    ``run()`` executes (dense, as ONNX executes them). ``run`` should use a batch of one."""
    total = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        per_output = weight[0].numel() if isinstance(module, nn.Conv2d) else weight.shape[1]
        total += output[0].numel() * per_output

    hooks = [m.register_forward_hook(count) for m in root.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return total
