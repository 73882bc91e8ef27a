"""Average precision on hand-checked cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from anytime_perception.metrics.voc import average_precision, mean_average_precision

BOX = np.array([10, 10, 50, 50], np.float32)


def test_perfect_detection_has_ap_one():
    assert average_precision([(0, 0.9, BOX)], {0: BOX[None]}) == pytest.approx(1.0)


def test_false_positive_ranked_first_halves_precision_at_full_recall():
    far = np.array([100, 100, 140, 140], np.float32)
    # ranks: FP (p=0), TP (p=1/2, r=1) -> AP = 0.5
    assert average_precision([(0, 0.9, far), (0, 0.8, BOX)], {0: BOX[None]}) == pytest.approx(0.5)


def test_duplicate_detection_counts_once():
    ap = average_precision([(0, 0.9, BOX), (0, 0.8, BOX + 1)], {0: BOX[None]})
    assert ap == pytest.approx(1.0)  # recall reaches 1 at rank 1; the duplicate only lowers later precision


def test_low_iou_is_a_miss_and_missed_truth_lowers_recall():
    shifted = BOX + np.array([25, 25, 25, 25], np.float32)  # IoU 0.14
    assert average_precision([(0, 0.9, shifted)], {0: BOX[None]}) == 0.0
    two = np.stack([BOX, BOX + 200])
    assert average_precision([(0, 0.9, BOX)], {0: two}) == pytest.approx(0.5)


def test_classes_without_truth_are_left_out_of_the_mean():
    mean, aps = mean_average_precision([[(0, 0.9, BOX)], []], [{0: BOX[None]}, {0: np.zeros((0, 4))}])
    assert mean == pytest.approx(1.0) and math.isnan(aps[1])
