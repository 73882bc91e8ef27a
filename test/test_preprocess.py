"""Preprocessing matches the training pipeline's letterbox and normalisation exactly."""
from __future__ import annotations

import numpy as np
import pytest

from anytime_perception.letterbox import letterbox
from anytime_perception.runtime.manifest import InputSpec
from anytime_perception.runtime.preprocess import Preprocessor

SPEC = InputSpec(size=320, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4), pad_value=114)


@pytest.mark.parametrize("shape", [(480, 640, 3), (400, 300, 3), (17, 5, 3)])
def test_preprocess_is_letterbox_then_normalise(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x, box = Preprocessor(SPEC)(image)
    canvas, expected_box = letterbox(image, 320, 114)
    expected = (canvas.astype(np.float32) - np.float32(SPEC.mean)) / np.float32(SPEC.std)
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected, atol=1e-5)
    assert box == expected_box
    # the letterbox maps image corners into the canvas and back
    corners = np.array([[0.0, 0.0], [shape[1], shape[0]]])
    canvas_corners = box.to_canvas(np.concatenate([corners[0], corners[1]])[None])[0]
    np.testing.assert_allclose(box.to_image(canvas_corners.reshape(2, 2)), corners, atol=1e-4)


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                                 np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 4), np.uint8)])
def test_preprocess_refuses_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match="RGB uint8"):
        Preprocessor(SPEC)(bad)


def test_each_frame_gets_its_own_input_while_the_canvas_is_reused():
    pre = Preprocessor(SPEC)
    wide = np.full((100, 400, 3), 200, np.uint8)
    tall = np.full((400, 100, 3), 10, np.uint8)
    first, _ = pre(wide)
    kept = first.copy()
    second, _ = pre(tall)
    assert first is not second
    np.testing.assert_array_equal(first, kept)  # an earlier frame's input survives the next call
    np.testing.assert_array_equal(second, Preprocessor(SPEC)(tall)[0])
