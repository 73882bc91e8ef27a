"""sensor_msgs/Image and CompressedImage <-> numpy, runtime results <-> messages (no cv_bridge)."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from anytime_perception.msg import Detection as DetectionMsg
from anytime_perception.msg import DetectionArray

from ..runtime.types import Detection, StageResult

__all__ = ["ImageError", "SUPPORTED_ENCODINGS", "COMPRESSED_FORMATS", "image_to_rgb", "rgb_to_image",
           "rgb_to_compressed", "compressed_to_rgb", "detections_to_msgs", "msgs_to_detections", "result_to_msg",
           "PIPELINE_STATUS", "SERVER_STATUS", "status_name", "status_values"]

COMPRESSED_FORMATS = ("jpeg", "png")


def status_name(node_fqn: str, task: str) -> str:
    """A /diagnostics status name: the publishing node's fully qualified name (unique per
    namespace and node name, so instances never collide) and what the status is about."""
    return f"{node_fqn}: {task}"


PIPELINE_STATUS = status_name("/anytime_perception", "pipeline")  # anytime_node's, in the root namespace
SERVER_STATUS = status_name("/big_model", "appeal server")  # big_model_node's, in the root namespace



def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """16-bit channels to 8 bits: the high byte (the full 16-bit range maps onto 0..255)."""
    return (pixels >> 8).astype(np.uint8)


def _cvt(code: int) -> Callable[[np.ndarray], np.ndarray]:
    """An OpenCV colour conversion of the [H, W, C] pixels (C = 1 passed as [H, W])."""
    return lambda pixels: cv2.cvtColor(pixels[..., 0] if pixels.shape[2] == 1 else pixels, code)


# encoding -> (channels, bytes per channel, pixels [H, W, C] in their own type -> RGB uint8 [H, W, 3]).
# ROS names Bayer patterns by the first row's colours, OpenCV by the second pixel of the second
# row: ROS bayer_rggb8 is OpenCV's BayerBG (as cv_bridge converts them).
SUPPORTED_ENCODINGS: dict[str, tuple[int, int, Callable[[np.ndarray], np.ndarray]]] = {
    "rgb8": (3, 1, lambda p: p),
    "bgr8": (3, 1, lambda p: p[..., ::-1]),
    "rgba8": (4, 1, lambda p: p[..., :3]),
    "bgra8": (4, 1, lambda p: p[..., 2::-1]),
    "mono8": (1, 1, lambda p: np.repeat(p, 3, axis=2)),
    "mono16": (1, 2, lambda p: np.repeat(_to_8bit(p), 3, axis=2)),
    "rgb16": (3, 2, _to_8bit),
    "bgr16": (3, 2, lambda p: _to_8bit(p)[..., ::-1]),
    "yuv422": (2, 1, _cvt(cv2.COLOR_YUV2RGB_UYVY)),  # UYVY
    "yuv422_yuy2": (2, 1, _cvt(cv2.COLOR_YUV2RGB_YUY2)),  # YUYV
    "bayer_rggb8": (1, 1, _cvt(cv2.COLOR_BayerBG2RGB)),
    "bayer_bggr8": (1, 1, _cvt(cv2.COLOR_BayerRG2RGB)),
    "bayer_gbrg8": (1, 1, _cvt(cv2.COLOR_BayerGR2RGB)),
    "bayer_grbg8": (1, 1, _cvt(cv2.COLOR_BayerGB2RGB)),
}


class ImageError(ValueError):
    """An image message that cannot be used; the message says why."""


def image_to_rgb(msg: Image) -> np.ndarray:
    """RGB uint8 [H, W, 3] of an image message in any supported encoding (16-bit ones in either
    byte order, YUV 4:2:2, Bayer 8-bit through OpenCV's conversions); ImageError if malformed."""
    if msg.encoding not in SUPPORTED_ENCODINGS:
        raise ImageError(f"unsupported encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, depth, to_rgb = SUPPORTED_ENCODINGS[msg.encoding]
    h, w, step = msg.height, msg.width, msg.step
    if h == 0 or w == 0:
        raise ImageError(f"empty image {w}x{h}")
    row = w * channels * depth
    if step < row:
        raise ImageError(f"step {step} < width {w} * {channels} channels * {depth} bytes")
    if msg.encoding.startswith(("yuv422", "bayer")) and (w % 2 or (msg.encoding.startswith("bayer") and h % 2)):
        raise ImageError(f"{msg.encoding} needs an even {'width' if w % 2 else 'height'}, got {w}x{h}")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size < h * step:
        raise ImageError(f"data has {data.size} bytes, expected height {h} * step {step} = {h * step}")
    rows = data[: h * step].reshape(h, step)[:, :row]
    if depth == 2:
        rows = np.ascontiguousarray(rows).view(">u2" if msg.is_bigendian else "<u2")
    return np.ascontiguousarray(to_rgb(rows.reshape(h, w, channels)), np.uint8)


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """An rgb8 image message of an RGB uint8 [H, W, 3] array."""
    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb, np.uint8).tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, header: Header, fmt: str = "jpeg", jpeg_quality: int = 90) -> CompressedImage:
    """A CompressedImage (``jpeg`` or lossless ``png``) of an RGB uint8 [H, W, 3] array."""
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"format must be one of {', '.join(COMPRESSED_FORMATS)}, got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
    ok, data = cv2.imencode(f".{'jpg' if fmt == 'jpeg' else 'png'}", rgb[..., ::-1], params)
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage(header=header, format=fmt)
    msg.data = data.tobytes()
    return msg


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a CompressedImage; ImageError if it does not decode to a colour image."""
    data = np.frombuffer(msg.data, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ImageError(f"{len(msg.data)} bytes of format {msg.format!r} do not decode to an image")
    return np.ascontiguousarray(bgr[..., ::-1])


def detections_to_msgs(detections: list[Detection] | tuple[Detection, ...]) -> list[DetectionMsg]:
    return [DetectionMsg(class_id=d.class_id, label=d.label, score=d.score, center_x=d.center_x,
                         center_y=d.center_y, width=d.width, height=d.height) for d in detections]


def msgs_to_detections(msgs: list[DetectionMsg]) -> tuple[Detection, ...]:
    return tuple(Detection(m.class_id, m.label, m.score, m.center_x, m.center_y, m.width, m.height) for m in msgs)


def result_to_msg(result: StageResult, header: Header) -> DetectionArray:
    """The DetectionArray of one stage result, stamped with the image's header."""
    return DetectionArray(
        header=header, stage=result.stage, num_stages=result.num_stages, source=result.source,
        is_final=result.is_final, macs=result.macs, mac_budget=result.mac_budget, latency_ms=result.latency_ms,
        deadline_ms=result.deadline_ms, mode=result.mode, stop_reason=result.stop_reason,
        detections=detections_to_msgs(result.detections))


def status_values(msg: DiagnosticArray, name: str = PIPELINE_STATUS) -> dict[str, str] | None:
    """Key/values of the status called ``name`` in a /diagnostics message (other nodes publish
    there too); None if it has none."""
    return next(({kv.key: kv.value for kv in status.values} for status in msg.status if status.name == name), None)
