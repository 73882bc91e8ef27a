"""CenterNet decoding: peaks, NMS, threshold, letterbox inverse; round trip with the training encoder.
YOLO decoding: class-wise NMS, multi-label candidates, threshold, max detections; the dispatcher."""
from __future__ import annotations

import numpy as np
import pytest

from anytime_perception.letterbox import Letterbox, letterbox
from anytime_perception.nets.centernet import encode_targets
from anytime_perception.runtime.decoder import decode, decode_centernet, decode_yolo, nms
from anytime_perception.runtime.manifest import DecoderSpec

SPEC = DecoderSpec("centernet", stride=8, max_detections=10, nms_kernel=3)
IDENTITY = Letterbox(1.0, 0, 0, 80, 80)


def _heads(grid=10, classes=2):
    return {"heatmap": np.full((1, classes, grid, grid), -9.0, np.float32),
            "size": np.zeros((1, 2, grid, grid), np.float32),
            "offset": np.zeros((1, 2, grid, grid), np.float32)}


def test_single_peak_becomes_a_box():
    heads = _heads()
    heads["heatmap"][0, 1, 4, 6] = 3.0
    heads["size"][0, :, 4, 6] = np.log([2.0, 3.0])
    heads["offset"][0, :, 4, 6] = 0.0  # sigmoid(0) = half a cell
    (det,) = decode_centernet(heads, SPEC, IDENTITY, ("a", "b"), 0.5)
    assert (det.class_id, det.label) == (1, "b")
    assert det.score == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    assert (det.center_x, det.center_y) == pytest.approx((6.5 * 8, 4.5 * 8))
    assert (det.width, det.height) == pytest.approx((16.0, 24.0), rel=1e-5)


def test_a_diverged_size_head_gives_boxes_no_larger_than_the_input():
    heads = _heads()
    heads["heatmap"][0, 0, 4, 6] = 3.0
    heads["size"][0, :, 4, 6] = [1e3, np.log(2.0)]  # exp overflows float32
    with np.errstate(over="raise"):
        (det,) = decode_centernet(heads, SPEC, IDENTITY, ("a", "b"), 0.5)
    assert (det.width, det.height) == pytest.approx((80.0, 16.0), rel=1e-5)  # 10 cells x stride 8


def test_neighbouring_lower_peak_is_suppressed_and_threshold_applies():
    heads = _heads()
    heads["heatmap"][0, 0, 4, 4] = 2.0
    heads["heatmap"][0, 0, 4, 5] = 1.0  # within the 3x3 window of the stronger peak
    heads["heatmap"][0, 0, 8, 8] = 0.5  # a separate peak with score 0.62
    assert len(decode_centernet(heads, SPEC, IDENTITY, ("a", "b"), 0.3)) == 2
    assert len(decode_centernet(heads, SPEC, IDENTITY, ("a", "b"), 0.7)) == 1


def test_at_most_max_detections_highest_first():
    heads = _heads(grid=20)
    rng = np.random.default_rng(1)
    for y, x in zip(range(0, 20, 2), range(0, 20, 2)):
        for dx in (0, 10):
            heads["heatmap"][0, 0, y, (x + dx) % 20] = rng.uniform(0, 5)
    dets = decode_centernet(heads, SPEC, IDENTITY, ("a", "b"), 0.1)
    assert len(dets) == SPEC.max_detections
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_encode_then_decode_recovers_boxes_in_image_pixels():
    image = np.zeros((300, 400, 3), np.uint8)
    canvas, box = letterbox(image, 320)
    truth = np.array([[50, 40, 130, 150], [250, 200, 310, 260]], np.float32)
    labels = np.array([0, 1])
    target = encode_targets(box.to_canvas(truth), labels, num_classes=2, grid=40, stride=8)
    eps = 1e-4
    heads = {"heatmap": np.log(np.clip(target["heatmap"], eps, 1 - eps) / np.clip(1 - target["heatmap"], eps, 1))[None],
             "size": target["size"][None],
             "offset": np.log(np.clip(target["offset"], eps, 1 - eps) / np.clip(1 - target["offset"], eps, 1))[None]}
    dets = decode_centernet(heads, SPEC, box, ("a", "b"), 0.99)
    assert sorted(d.class_id for d in dets) == [0, 1]
    for d in dets:
        x0, y0, x1, y1 = truth[d.class_id]
        assert d.center_x == pytest.approx((x0 + x1) / 2, abs=0.5)
        assert d.center_y == pytest.approx((y0 + y1) / 2, abs=0.5)
        assert d.width == pytest.approx(x1 - x0, rel=1e-3)
        assert d.height == pytest.approx(y1 - y0, rel=1e-3)



def test_neighbour_cells_regress_the_same_box_when_trained_at_a_radius():
    """With regress_radius 1 every cell of the 3x3 around a box's centre cell carries its box (offset
    in (-1, 2) cells): decoding a peak one cell off the centre still recovers the box exactly."""
    truth = np.array([[50.0, 40.0, 130.0, 150.0]], np.float32)
    r = 1
    target = encode_targets(truth, np.array([0]), num_classes=1, grid=40, stride=8, regress_radius=r)
    iy, ix = np.argwhere(target["mask"])[0]
    assert target["weight"][iy, ix] == 1.0 and 0 < target["weight"][iy + 1, ix + 1] < 1
    assert target["weight"][iy + 2, ix].item() == 0.0  # outside the radius
    assert np.array_equal(encode_targets(truth, np.array([0]), 1, 40, 8)["weight"],
                          encode_targets(truth, np.array([0]), 1, 40, 8)["mask"])  # radius 0: centre only
    spec = DecoderSpec("centernet", 8, offset_range=r)
    eps = 1e-6
    for dy, dx in ((0, 0), (1, 0), (-1, 1), (1, 1)):
        heatmap = np.full((1, 1, 40, 40), -10.0, np.float32)
        heatmap[0, 0, iy + dy, ix + dx] = 5.0  # the peak lands off the centre cell
        fraction = np.clip((target["offset"] + r) / (2 * r + 1), eps, 1 - eps)
        heads = {"heatmap": heatmap, "size": target["size"][None], "offset": np.log(fraction / (1 - fraction))[None]}
        (d,) = decode_centernet(heads, spec, Letterbox(1.0, 0, 0, 320, 320), ("a",), 0.5)
        assert (d.center_x, d.center_y) == pytest.approx((90.0, 95.0), abs=1e-3)
        assert (d.width, d.height) == pytest.approx((80.0, 110.0), rel=1e-4)


def test_a_small_box_nearby_never_takes_a_large_box_centre_cell():
    big, small = [0.0, 0.0, 96.0, 96.0], [44.0, 36.0, 60.0, 52.0]  # centre cells (6, 6) and (5, 6)
    target = encode_targets(np.array([big, small], np.float32), np.array([0, 0]), 1, 40, 8, regress_radius=1)
    assert target["weight"][6, 6] == 1.0 and np.exp(target["size"][:, 6, 6]) == pytest.approx([12.0, 12.0])
    assert target["weight"][5, 6] == 1.0 and np.exp(target["size"][:, 5, 6]) == pytest.approx([2.0, 2.0])


def test_giou_loss_is_zero_for_the_target_boxes_and_grows_with_the_error():
    import torch

    from anytime_perception.nets.centernet import centernet_loss

    truth = np.array([[50.0, 40.0, 130.0, 150.0]], np.float32)
    target = {k: torch.from_numpy(v)[None] for k, v in encode_targets(truth, np.array([0]), 1, 40, 8,
                                                                       regress_radius=1).items()}
    fraction = ((target["offset"] + 1) / 3).clamp(1e-6, 1 - 1e-6)
    perfect = {"heatmap": torch.zeros(1, 1, 40, 40), "size": target["size"].clone(),
               "offset": torch.log(fraction / (1 - fraction))}
    exact = centernet_loss(perfect, target, offset_range=1, giou=2.0)
    assert exact["giou"].item() == pytest.approx(0.0, abs=1e-4) and exact["size"].item() == pytest.approx(0.0, abs=1e-6)
    worse = dict(perfect, size=perfect["size"] + 0.3)
    assert centernet_loss(worse, target, offset_range=1, giou=2.0)["giou"].item() > 0.1
    assert "giou" not in centernet_loss(perfect, target)  # off by default


YOLO = DecoderSpec("yolo", max_detections=300, nms_iou=0.7)


def _yolo(*boxes, anchors=8, classes=2):
    """[1, 4 + C, N]: one anchor per (cx, cy, w, h, {class: score})."""
    out = np.zeros((1, 4 + classes, anchors), np.float32)
    for i, (cx, cy, w, h, scores) in enumerate(boxes):
        out[0, :4, i] = cx, cy, w, h
        for c, score in scores.items():
            out[0, 4 + c, i] = score
    return {"predictions": out}


def _iou_at(shift):
    """IoU of two 10 x 10 boxes shifted by ``shift`` along x."""
    return (10 - shift) / (10 + shift)


def test_yolo_nms_keeps_the_best_of_overlapping_boxes_of_one_class():
    heads = _yolo((40, 40, 10, 10, {0: 0.6}), (41, 40, 10, 10, {0: 0.9}), (70, 70, 10, 10, {0: 0.5}))
    dets = decode_yolo(heads, YOLO, IDENTITY, ("a", "b"), 0.3)
    assert [d.center_x for d in dets] == [41, 70]
    assert [d.score for d in dets] == pytest.approx([0.9, 0.5])


def test_yolo_nms_keeps_overlapping_boxes_of_different_classes_and_both_labels_of_one_anchor():
    heads = _yolo((40, 40, 10, 10, {0: 0.9}), (40, 40, 10, 10, {1: 0.8}), (60, 60, 10, 10, {0: 0.7, 1: 0.6}))
    dets = decode_yolo(heads, YOLO, IDENTITY, ("a", "b"), 0.3)
    assert [(d.label, d.center_x) for d in dets] == [("a", 40), ("b", 40), ("a", 60), ("b", 60)]


@pytest.mark.parametrize("shift, kept", [(1, 1), (2, 2)])  # IoU 0.82 (suppressed), 0.67 (kept) at 0.7
def test_yolo_nms_drops_a_box_only_above_the_iou_threshold(shift, kept):
    assert (_iou_at(1) > 0.7) and (_iou_at(2) < 0.7)
    heads = _yolo((40, 40, 10, 10, {1: 0.9}), (40 + shift, 40, 10, 10, {1: 0.8}))
    assert len(decode(heads, YOLO, IDENTITY, ("a", "b"), 0.3)) == kept


def test_yolo_threshold_and_max_detections_apply_highest_first():
    boxes = [(10 + 20 * (i % 4), 10 + 20 * (i // 4), 8, 8, {0: 0.1 + 0.1 * i}) for i in range(8)]
    dets = decode_yolo(_yolo(*boxes), DecoderSpec("yolo", max_detections=3, nms_iou=0.7), IDENTITY, ("a", "b"), 0.45)
    assert [round(d.score, 2) for d in dets] == [0.8, 0.7, 0.6]
    assert decode_yolo(_yolo(*boxes), YOLO, IDENTITY, ("a", "b"), 0.95) == []


def test_yolo_boxes_are_mapped_back_through_the_letterbox():
    _, box = letterbox(np.zeros((100, 200, 3), np.uint8), 80)  # scale 0.4, image at canvas y 20..60
    (det,) = decode_yolo(_yolo((40, 40, 20, 8, {1: 0.9})), YOLO, box, ("a", "b"), 0.3)
    assert (det.label, det.center_x, det.center_y, det.width, det.height) == pytest.approx(("b", 100, 50, 50, 20))


def test_vectorised_nms_matches_a_plain_greedy_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], 1)
    scores = rng.uniform(0, 1, 300)

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    reference = []
    for i in np.argsort(-scores):
        if all(iou(boxes[i], boxes[j]) <= 0.5 for j in reference):
            reference.append(i)
    assert nms(boxes, scores, 0.5, 1000).tolist() == reference
    assert nms(boxes, scores, 0.5, 7).tolist() == reference[:7]
