"""The appeal server: answers ``Appeal`` requests with the big network (AppealNet's cloud side).

Runs on the stronger computer (or beside the vehicle's node): each request carries a compressed
camera frame; the answer is the big model's detections in pixels of that frame. A request for a
model other than the one served, or an image that does not decode, gets an ``error`` answer.
``/diagnostics``: requests answered and refused, server time per request.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from std_msgs.msg import Header

from anytime_perception.srv import Appeal

from ..runtime import AnytimeModel
from ..runtime.appeal import BigModel
from .conversions import ImageError, compressed_to_rgb, detections_to_msgs, status_name
from .lifecycle import run_node
from .share import resolve_share_path

__all__ = ["BigModelNode", "main"]

DEFAULT_MODEL = "road_signs_anywidth"


class BigModelNode(Node):
    """Serves appeals on the ``service`` parameter with every stage of the ``model`` parameter."""

    def __init__(self, **kwargs) -> None:
        super().__init__("big_model", **kwargs)
        read_only = ParameterDescriptor(read_only=True)
        self.declare_parameter("model", DEFAULT_MODEL, ParameterDescriptor(
            read_only=True, description="big model directory, or a model name under the package's models/"))
        self.declare_parameter("service", "/perception/appeal", read_only)
        self.declare_parameter("providers", ["CPUExecutionProvider"], read_only)
        self.declare_parameter("strict_providers", False, ParameterDescriptor(
            read_only=True, description="true: a requested provider that is missing or fell back fails the start"))
        self.declare_parameter("intra_op_threads", 0, read_only)
        self.declare_parameter("score_threshold", 0.05, ParameterDescriptor(
            read_only=True, description="lowest score answered; the vehicle applies its own threshold on top"))
        self.declare_parameter("diagnostics_period_s", 1.0, read_only)
        param = self.get_parameter
        threshold = param("score_threshold").value
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {threshold}")
        if param("intra_op_threads").value < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {param('intra_op_threads').value}")
        if not param("diagnostics_period_s").value > 0:
            raise ValueError(f"diagnostics_period_s must be > 0, got {param('diagnostics_period_s').value}")
        model = AnytimeModel(resolve_share_path(param("model").value, "models", DEFAULT_MODEL),
                             providers=list(param("providers").value), threads=param("intra_op_threads").value,
                             strict_providers=param("strict_providers").value)
        for warning in model.provider_warnings:
            self.get_logger().warning(f"providers: {warning}")
        self.big = BigModel(model, threshold)
        self.answered, self.refused = 0, 0
        self.server_ms: deque[float] = deque(maxlen=300)
        self.service = self.create_service(Appeal, param("service").value, self.appeal_callback)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the timer also wakes the executor regularly: a shutdown signal never waits for the next request
        self.diagnostics_timer = self.create_timer(param("diagnostics_period_s").value, self.diagnostics_callback)
        self.get_logger().info(f"serving appeals on {param('service').value} with {model.manifest.name} "
                               f"({model.manifest.total_macs / 1e6:.0f} M MACs, sessions got "
                               f"{sorted(set(model.session_providers))})")

    def appeal_callback(self, request: Appeal.Request, response: Appeal.Response) -> Appeal.Response:
        """Answer one appeal; bad requests get an ``error`` and the server keeps serving."""
        name = self.big.model.manifest.name
        response.model = name
        if request.model and request.model != name:
            response.error = f"this server answers with {name!r}, not {request.model!r}"
            self.refused += 1
            return response
        try:
            answer = self.big.answer(compressed_to_rgb(request.image))
        except (ImageError, ValueError) as exc:
            response.error = str(exc)
            self.refused += 1
            self.get_logger().warning(f"bad appeal: {exc}", throttle_duration_sec=1.0)
            return response
        except Exception as exc:  # e.g. an inference failure: one request must not end the server
            response.error = f"server error: {exc!r}"
            self.refused += 1
            self.get_logger().error(f"appeal failed: {exc!r}", throttle_duration_sec=1.0)
            return response
        response.detections = detections_to_msgs(answer.detections)
        response.server_ms = answer.server_ms
        self.answered += 1
        self.server_ms.append(answer.server_ms)
        return response

    def diagnostics_callback(self) -> None:
        """Publish the requests answered and refused and the server time per request."""
        values = {"answered": str(self.answered), "refused": str(self.refused)}
        if self.server_ms:
            values.update({f"server_p{q}_ms": f"{np.percentile(self.server_ms, q):.3f}" for q in (50, 99)})
        status = DiagnosticStatus(level=DiagnosticStatus.OK,
                                  name=status_name(self.get_fully_qualified_name(), "appeal server"),
                                  hardware_id=self.big.model.manifest.name,
                                  message=f"{self.answered} appeals answered, {self.refused} refused",
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        self.diagnostics_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                     status=[status]))


def main(args: list[str] | None = None) -> int:
    """Run the server; a bad model or parameter ends it with a clear error (exit 1)."""
    return run_node(BigModelNode, "big_model", args)


if __name__ == "__main__":
    raise SystemExit(main())
