"""sensor_msgs/Image -> RGB for every supported encoding, and clear errors for malformed images."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from anytime_perception.ros.conversions import ImageError, image_to_rgb, result_to_msg, rgb_to_image
from anytime_perception.runtime.types import Detection, StageResult

RGB = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)


def _msg(encoding: str, pixels: np.ndarray, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.zeros((h, pad), np.uint8)], 1)
    return Image(height=h, width=w, encoding=encoding, step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full((4, 5), 255, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.zeros((4, 5), np.uint8)])),
])
def test_colour_encodings_become_rgb(encoding, pixels):
    np.testing.assert_array_equal(image_to_rgb(_msg(encoding, np.ascontiguousarray(pixels), pad=3)), RGB)


def test_mono8_is_replicated_to_three_channels():
    grey = RGB[..., 0].copy()
    out = image_to_rgb(_msg("mono8", grey[..., None]))
    assert out.shape == (4, 5, 3) and (out == grey[..., None]).all()


@pytest.mark.parametrize("msg, reason", [
    (Image(height=4, width=5, encoding="yuv422", step=10, data=bytes(40)), "unsupported encoding 'yuv422'"),
    (Image(height=4, width=5, encoding="rgb8", step=15, data=bytes(59)), "expected height 4 \\* step 15 = 60"),
    (Image(height=0, width=5, encoding="rgb8", step=15, data=b""), "empty image"),
    (Image(height=4, width=5, encoding="rgb8", step=12, data=bytes(60)), "step 12 < width 5"),
])
def test_malformed_images_raise_with_a_reason(msg, reason):
    with pytest.raises(ImageError, match=reason):
        image_to_rgb(msg)


def test_round_trip_and_result_message():
    header = Header(frame_id="cam")
    header.stamp.sec = 42
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(RGB, header)), RGB)
    result = StageResult(stage=1, num_stages=3, is_final=True, macs=123, mac_budget=456, latency_ms=7.5,
                         deadline_ms=50.0, mode="normal", stop_reason="budget",
                         detections=[Detection(2, "stop", 0.9, 10.0, 20.0, 30.0, 40.0)])
    msg = result_to_msg(result, header)
    assert (msg.header.stamp.sec, msg.stage, msg.is_final, msg.macs, msg.stop_reason) == (42, 1, True, 123, "budget")
    d = msg.detections[0]
    assert (d.class_id, d.label, d.center_x, d.height) == (2, "stop", 10.0, 40.0)
