"""CenterNet targets and loss for the per-stage heads (``StageHead``).

Boxes are encoded at their centre cell of the stride-``s`` output grid: a Gaussian peak in the
class heatmap, the log box size in grid cells, and the sub-cell offset of the centre.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["encode_targets", "centernet_loss", "heatmap_distillation"]


def encode_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, grid: int, stride: int,
                   alpha: float = 0.54) -> dict[str, np.ndarray]:
    """Dense targets of one image.

    Args:
        boxes: [M, 4] x0, y0, x1, y1 in input pixels.
        labels: [M] class ids.
        num_classes, grid, stride: head geometry (grid = input size / stride).
        alpha: Gaussian spread relative to the box (TTFNet's elliptical Gaussian).

    Returns:
        ``heatmap`` [C, G, G], ``size`` [2, G, G], ``offset`` [2, G, G], ``mask`` [G, G].
    """
    heatmap = np.zeros((num_classes, grid, grid), np.float32)
    size = np.zeros((2, grid, grid), np.float32)
    offset = np.zeros((2, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    # larger boxes first so small ones win the shared centre cells
    for i in np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])):
        x0, y0, x1, y1 = boxes[i] / stride
        w, h = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), grid - 1), min(int(cy), grid - 1)
        sx, sy = max(alpha * w / 6, 0.35), max(alpha * h / 6, 0.35)
        gauss = np.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
        np.maximum(heatmap[labels[i]], gauss, out=heatmap[labels[i]])
        size[:, iy, ix] = np.log([w, h])
        offset[:, iy, ix] = [cx - ix, cy - iy]
        mask[iy, ix] = 1.0
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask}


def centernet_loss(pred: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """Focal heatmap loss + L1 on log size and centre offset at object centres.

    ``pred`` holds the raw head outputs (logits); ``target`` the batched ``encode_targets``.
    """
    num = target["mask"].sum().clamp(min=1.0)
    prob = torch.sigmoid(pred["heatmap"]).clamp(1e-4, 1 - 1e-4)
    gt = target["heatmap"]
    pos = gt.eq(1.0).float()
    focal = -(pos * (1 - prob) ** 2 * torch.log(prob)
              + (1 - pos) * (1 - gt) ** 4 * prob**2 * torch.log(1 - prob)).sum() / num
    mask = target["mask"].unsqueeze(1)  # [N, 1, G, G]
    size = (F.l1_loss(pred["size"], target["size"], reduction="none") * mask).sum() / num
    offset = (F.l1_loss(torch.sigmoid(pred["offset"]), target["offset"], reduction="none") * mask).sum() / num
    return {"heatmap": focal, "size": 0.5 * size, "offset": offset}


def heatmap_distillation(student: dict[str, Tensor], teacher: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
    """In-place distillation: squared distance of a smaller subnet's heatmap to the full model's.

    The teacher is detached (it learns from the labels only); normalised like the focal loss.
    """
    num = target["mask"].sum().clamp(min=1.0)
    diff = torch.sigmoid(student["heatmap"]) - torch.sigmoid(teacher["heatmap"]).detach()
    return diff.pow(2).sum() / num
