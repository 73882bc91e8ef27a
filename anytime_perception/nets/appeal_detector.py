"""AppealNet's predictor q(x) for a nested detector: the little detector is the detector's first
stage, the big one its full model (on the appeal server).

One fully connected layer + sigmoid over what the stage already computed: its deepest and its
neck feature maps (average-pooled), its class heatmap (per-class peak probability) and its
``TOP_PEAKS`` highest local peaks (3x3 maxima, as the decoder finds them) with the gap between the
first two. The features are standardised with statistics of the training set (buffers), so the layer's weights
are comparable. The stage's own weights are shared with every later stage of the nested
detector, so they stay as they are: only the predictor is trained.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["DetectorPredictor", "POOLED_LAYERS", "detector_predictor"]

POOLED_LAYERS = ("c5b", "neck")  # carry tensors of the stage that the predictor pools
TOP_PEAKS = 3


class DetectorPredictor(nn.Module):
    """q(x) of stage ``stage`` of an ``AnyWidthDetector``.

    Args:
        channels: channels of the stage's ``POOLED_LAYERS`` outputs, in that order.
        num_classes: heatmap channels.
        stage: the detector stage the predictor reads.
    """

    def __init__(self, channels: tuple[int, ...], num_classes: int, stage: int = 0) -> None:
        super().__init__()
        self.stage = stage
        width = sum(channels) + num_classes + TOP_PEAKS + 1
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.linear = nn.Linear(width, 1)

    def features(self, carry: dict[str, Tensor], heads: dict[str, Tensor]) -> Tensor:
        """Pooled, unstandardised features ``[N, F]`` of the stage's carry and heads."""
        pooled = [carry[f"{name}.{self.stage}"].mean((2, 3)) for name in POOLED_LAYERS]  # [N, C] each
        heat = torch.sigmoid(heads["heatmap"])  # [N, classes, H, W]
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)  # local maxima only
        top = peaks.flatten(1).topk(TOP_PEAKS, 1).values  # [N, TOP_PEAKS]
        return torch.cat([*pooled, heat.amax((2, 3)), top, top[:, :1] - top[:, 1:2]], 1)

    def fit_standardisation(self, features: Tensor) -> None:
        """Set the standardisation from training features ``[N, F]``."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-6))

    def score(self, features: Tensor) -> Tensor:
        """q ``[N]`` from pooled features ``[N, F]``."""
        return torch.sigmoid(self.linear((features - self.mean) / self.std)).squeeze(1)

    def forward(self, carry: dict[str, Tensor], heads: dict[str, Tensor]) -> Tensor:
        return self.score(self.features(carry, heads))


@torch.no_grad()
def detector_predictor(detector: nn.Module, stage: int = 0) -> DetectorPredictor:
    """A predictor for stage ``stage`` of ``detector`` (an ``AnyWidthDetector``), sized by a dry run."""
    size = detector.config.input_size
    image, carry = torch.zeros(1, 3, size, size), {}
    detector.eval()
    for k in range(stage + 1):
        new, heads = detector.forward_stage(image, carry, k)
        carry.update(new)
    channels = tuple(carry[f"{name}.{stage}"].shape[1] for name in POOLED_LAYERS)
    return DetectorPredictor(channels, heads["heatmap"].shape[1], stage)
