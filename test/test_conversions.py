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
    (Image(height=4, width=5, encoding="32FC1", step=20, data=bytes(80)), "unsupported encoding '32FC1'"),
    (Image(height=4, width=5, encoding="yuv422", step=10, data=bytes(40)), "yuv422 needs an even width"),
    (Image(height=4, width=5, encoding="rgb8", step=15, data=bytes(59)), "expected height 4 \\* step 15 = 60"),
    (Image(height=0, width=5, encoding="rgb8", step=15, data=b""), "empty image"),
    (Image(height=4, width=5, encoding="rgb8", step=12, data=bytes(60)), "step 12 < width 5"),
    (Image(height=4, width=5, encoding="mono16", step=8, data=bytes(40)), "step 8 < width 5 \\* 1 channels \\* 2 bytes"),
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


@pytest.mark.parametrize("bigendian", [False, True])
def test_16_bit_encodings_keep_the_high_byte_in_either_byte_order(bigendian):
    wide = RGB.astype(np.uint16) * 256 + 77  # the low byte must not matter
    order = ">u2" if bigendian else "<u2"
    for encoding, pixels in (("rgb16", wide), ("bgr16", wide[..., ::-1]), ("mono16", wide[..., :1])):
        raw = np.ascontiguousarray(pixels).astype(order).tobytes()
        h, w, c = pixels.shape
        msg = Image(height=h, width=w, encoding=encoding, step=w * c * 2, is_bigendian=int(bigendian), data=raw)
        expected = RGB if c == 3 else np.repeat(RGB[..., :1], 3, axis=2)
        np.testing.assert_array_equal(image_to_rgb(msg), expected)


def test_yuv422_byte_orders_uyvy_and_yuy2_decode_alike():
    rng = np.random.default_rng(1)
    y, u, v = (rng.integers(40, 220, (4, 6), dtype=np.uint8) for _ in range(3))
    u[:, 1::2], v[:, 1::2] = u[:, ::2], v[:, ::2]  # 4:2:2: one U and one V per pixel pair
    uyvy = np.stack([u, y], 2).reshape(4, 12).copy()  # U Y0 V Y1 ...
    uyvy[:, 2::4] = v[:, ::2]
    yuy2 = np.stack([y, u], 2).reshape(4, 12).copy()  # Y0 U Y1 V ...
    yuy2[:, 3::4] = v[:, ::2]
    a = image_to_rgb(Image(height=4, width=6, encoding="yuv422", step=12, data=uyvy.tobytes()))
    b = image_to_rgb(Image(height=4, width=6, encoding="yuv422_yuy2", step=12, data=yuy2.tobytes()))
    assert a.shape == (4, 6, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    grey = np.stack([np.full(4, 128, np.uint8), np.full(4, 150, np.uint8)], 1).reshape(1, 8)  # U=V=128: grey
    out = image_to_rgb(Image(height=1, width=4, encoding="yuv422", step=8, data=grey.tobytes()))
    assert (out.max(2) - out.min(2) <= 1).all()


@pytest.mark.parametrize("encoding, red_at", [("bayer_rggb8", (0, 0)), ("bayer_grbg8", (0, 1)),
                                              ("bayer_gbrg8", (1, 0)), ("bayer_bggr8", (1, 1))])
def test_bayer_patterns_demosaic_a_red_scene_to_red(encoding, red_at):
    """A pure red scene seen through each colour filter array: only the red sites see light."""
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[red_at[0]::2, red_at[1]::2] = 200
    out = image_to_rgb(Image(height=8, width=8, encoding=encoding, step=8, data=mosaic.tobytes()))
    inner = out[2:-2, 2:-2].reshape(-1, 3).mean(0)
    assert inner[0] > 150 and inner[1] < 30 and inner[2] < 30, (encoding, inner)
