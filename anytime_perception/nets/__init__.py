"""Network families and a registry of named builders (``--model NAME`` on the CLIs).

A detector family implements ``contract.AnytimeDetector`` and registers its builders here: each
takes ``num_classes`` and ``input_size`` and returns the model. Checkpoints name the builder
(``checkpoint.make_checkpoint``), so ``checkpoint.build_from_checkpoint`` rebuilds any of them.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .anywidth import AnyWidthConfig, AnyWidthDetector, anywidth_centernet_patch_s3, anywidth_centernet_s3
from .stepping_centernet import stepping_centernet_patch_s3

__all__ = ["AnyWidthConfig", "AnyWidthDetector", "MODELS", "build_model", "register_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "anywidth_centernet_s3": anywidth_centernet_s3,
    "anywidth_centernet_patch_s3": anywidth_centernet_patch_s3,
    "stepping_centernet_patch_s3": stepping_centernet_patch_s3,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; raises KeyError listing the known names."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


def register_model(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a builder to the registry (a new family's file calls this for each of its builders)."""
    if name in MODELS and MODELS[name] is not builder:
        raise ValueError(f"model name {name!r} is registered already")
    MODELS[name] = builder
    return builder
