"""Network families and a registry of named builders (``--model NAME`` on the CLIs)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .anywidth import AnyWidthConfig, AnyWidthDetector, anywidth_centernet_patch_s3, anywidth_centernet_s3

__all__ = ["AnyWidthConfig", "AnyWidthDetector", "MODELS", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "anywidth_centernet_s3": anywidth_centernet_s3,
    "anywidth_centernet_patch_s3": anywidth_centernet_patch_s3,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; raises KeyError listing the known names."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
