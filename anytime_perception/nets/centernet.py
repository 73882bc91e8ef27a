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
                   alpha: float = 0.54, regress_radius: int = 0) -> dict[str, np.ndarray]:
    """Dense targets of one image.

    Args:
        boxes: [M, 4] x0, y0, x1, y1 in input pixels.
        labels: [M] class ids.
        num_classes, grid, stride: head geometry (grid = input size / stride).
        alpha: Gaussian spread relative to the box (TTFNet's elliptical Gaussian).
        regress_radius: also regress the box at cells up to this many cells from its centre cell
            (weighted by the heatmap Gaussian there; offsets then span (-r, r + 1) cells), so that
            a peak one cell off the centre still carries a trained box. 0: the centre cell only.

    Returns:
        ``heatmap`` [C, G, G], ``size`` [2, G, G], ``offset`` [2, G, G], ``mask`` [G, G] (centre
        cells: the normaliser), ``weight`` [G, G] (where size and offset are regressed, and how much).
    """
    heatmap = np.zeros((num_classes, grid, grid), np.float32)
    size = np.zeros((2, grid, grid), np.float32)
    offset = np.zeros((2, grid, grid), np.float32)
    mask = np.zeros((grid, grid), np.float32)
    weight = np.zeros((grid, grid), np.float32)
    r = regress_radius
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
        y0c, y1c, x0c, x1c = max(iy - r, 0), min(iy + r + 1, grid), max(ix - r, 0), min(ix + r + 1, grid)
        # a cell regresses the box whose Gaussian is strongest there: a smaller box's neighbourhood
        # never takes another box's centre cell (weight 1), and at its own centre it wins ties
        region = (slice(y0c, y1c), slice(x0c, x1c))
        take = gauss[region] >= weight[region]
        size[(slice(None), *region)] = np.where(take, np.log([w, h])[:, None, None], size[(slice(None), *region)])
        offset[(0, *region)] = np.where(take, cx - xs[region], offset[(0, *region)])
        offset[(1, *region)] = np.where(take, cy - ys[region], offset[(1, *region)])
        weight[region] = np.where(take, gauss[region], weight[region])
        mask[iy, ix] = 1.0
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask, "weight": weight}


def centernet_loss(pred: dict[str, Tensor], target: dict[str, Tensor], offset_range: int = 0,
                   giou: float = 0.0) -> dict[str, Tensor]:
    """Focal heatmap loss + L1 on log size and centre offset where boxes are regressed (the
    targets' ``weight``, else their centre cells), + ``giou`` x GIoU loss of the decoded boxes there.

    ``pred`` holds the raw head outputs (logits); ``target`` the batched ``encode_targets``;
    ``offset_range`` r: the offset head's sigmoid spans (-r, r + 1) cells (as the decoder reads it).
    """
    num = target["mask"].sum().clamp(min=1.0)
    prob = torch.sigmoid(pred["heatmap"]).clamp(1e-4, 1 - 1e-4)
    gt = target["heatmap"]
    pos = gt.eq(1.0).float()
    focal = -(pos * (1 - prob) ** 2 * torch.log(prob)
              + (1 - pos) * (1 - gt) ** 4 * prob**2 * torch.log(1 - prob)).sum() / num
    weight = target.get("weight", target["mask"]).unsqueeze(1)  # [N, 1, G, G]
    pred_offset = (2 * offset_range + 1) * torch.sigmoid(pred["offset"]) - offset_range
    size = (F.l1_loss(pred["size"], target["size"], reduction="none") * weight).sum() / num
    offset = (F.l1_loss(pred_offset, target["offset"], reduction="none") * weight).sum() / num
    losses = {"heatmap": focal, "size": 0.5 * size, "offset": offset}
    if giou:
        losses["giou"] = giou * _giou_loss(pred_offset, pred["size"], target, weight[:, 0]) / num
    return losses


def _giou_loss(pred_offset: Tensor, pred_log_size: Tensor, target: dict[str, Tensor], weight: Tensor) -> Tensor:
    """Weighted sum of 1 - GIoU between predicted and target boxes at the regressed cells, in grid
    units relative to each cell (the cell's position cancels)."""
    cells = weight > 0
    if not cells.any():
        return pred_offset.sum() * 0.0

    def corners(offset: Tensor, log_size: Tensor) -> Tensor:
        o, s = offset.permute(0, 2, 3, 1)[cells], log_size.clamp(max=8.0).exp().permute(0, 2, 3, 1)[cells]
        return torch.cat([o - s / 2, o + s / 2], 1)  # [K, 4]

    p, t = corners(pred_offset, pred_log_size), corners(target["offset"], target["size"])
    inter = (torch.min(p[:, 2:], t[:, 2:]) - torch.max(p[:, :2], t[:, :2])).clamp(min=0).prod(1)
    area = lambda b: (b[:, 2:] - b[:, :2]).prod(1)  # noqa: E731
    union = area(p) + area(t) - inter
    hull = (torch.max(p[:, 2:], t[:, 2:]) - torch.min(p[:, :2], t[:, :2])).prod(1)
    giou = inter / union - (hull - union) / hull
    return ((1 - giou) * weight[cells]).sum()


def heatmap_distillation(student: dict[str, Tensor], teacher: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
    """In-place distillation: squared distance of a smaller subnet's heatmap to the full model's.

    The teacher is detached (it learns from the labels only); normalised like the focal loss.
    """
    num = target["mask"].sum().clamp(min=1.0)
    diff = torch.sigmoid(student["heatmap"]) - torch.sigmoid(teacher["heatmap"]).detach()
    return diff.pow(2).sum() / num
