"""The anytime perception node: camera images in, preliminary and refined detections out.

Subscribes ``camera/image_raw`` (remappable); publishes stage 0 on ``perception/preliminary``
at once and every later stage on ``perception/refined`` (exactly one ``is_final`` per frame).
The final result of every frame also goes out as ``vision_msgs/Detection2DArray`` on
``perception/detections``. Topic names are relative: in the root namespace they are ``/camera/image_raw``, ``/perception/*``;
a node started in namespace ``/cam_front`` uses ``/cam_front/camera/image_raw`` and so on, so
several cameras run side by side without cross-talk. ``/diagnostics`` stays global, with status
names that carry the node's fully qualified name.
Stage 0 runs in the image callback, so a preliminary answer never waits for refinement; started
frames go through a keep-last-1 mailbox to a refinement thread, where a newer frame preempts an
older one at its next stage boundary.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from anytime_perception.msg import DetectionArray

from ..runtime import (AnytimeEngine, AnytimeModel, Frame, ModeError, ModeTable, ResultCallback, StageResult,
                       StopReason, load_modes)
from ..runtime.annotate import draw_detections
from ..runtime.appeal import Appealer, BigModel, LocalAppealClient
from ..runtime.mailbox import LatestSlot
from ..runtime.stats import PipelineStats
from .appeal_client import RosAppealClient
from .conversions import (COMPRESSED_FORMATS, ImageError, compressed_to_rgb, image_to_rgb, result_to_msg, rgb_to_image,
                          status_name)
from .lifecycle import run_node
from .share import resolve_share_path
from .vision import AVAILABLE as VISION_MSGS, Detection2DArray, to_detection2d_array

__all__ = ["AnytimePerceptionNode", "main"]

DEFAULT_MODEL = "road_signs_anywidth"
IMAGE_TRANSPORTS = ("raw", "compressed")


class AnytimePerception:
    """ROS adapter over ``AnytimeEngine``: parameters -> settings, images -> frames, results ->
    messages, whatever manages the node's lifecycle (a plain ``Node``: ``AnytimePerceptionNode``;
    a ``LifecycleNode``: ``managed_node``). ``_configure`` loads the model and opens the topics,
    ``_unconfigure`` closes them; frames are answered while ``active``."""

    active = True
    engine: AnytimeEngine | None = None
    _worker: threading.Thread | None = None
    _stop = threading.Event()

    def _declare_parameters(self) -> None:
        read_only = ParameterDescriptor(read_only=True)
        self.declare_parameter("vehicle_mode", "normal", ParameterDescriptor(
            description="vehicle mode from modes_file; switchable at run time"))
        self.declare_parameter("modes_file", "", ParameterDescriptor(
            description="modes YAML (default: the package's config/modes.yaml)", read_only=True))
        self.declare_parameter("model", DEFAULT_MODEL, ParameterDescriptor(
            description="model directory, or a model name under the package's models/", read_only=True))
        self.declare_parameter("providers", ["CPUExecutionProvider"], ParameterDescriptor(
            read_only=True, description="ONNX Runtime execution providers in priority order"))
        self.declare_parameter("strict_providers", False, ParameterDescriptor(
            read_only=True, description="true: a requested provider that is missing or that a session fell back "
                                        "from fails the start; false: a warning, the node runs on the rest"))
        self.declare_parameter("intra_op_threads", 1, read_only)
        self.declare_parameter("gate_rule", "", ParameterDescriptor(
            read_only=True, description="calibrated exit rule of the model; empty: the manifest's default"))
        self.declare_parameter("score_threshold", 0.3)
        self.declare_parameter("publish_debug_image", False)
        self.declare_parameter("preempt_on_new_frame", True)
        self.declare_parameter("image_reliability", "best_effort", ParameterDescriptor(
            description="best_effort | reliable (match the camera publisher)", read_only=True))
        self.declare_parameter("image_transport", "raw", ParameterDescriptor(
            description="raw (sensor_msgs/Image on camera/image_raw) | compressed (sensor_msgs/CompressedImage "
                        "jpeg/png on camera/image_raw/compressed)", read_only=True))
        self.declare_parameter("diagnostics_period_s", 1.0, read_only)
        self.declare_parameter("appeal_service", "/perception/appeal", ParameterDescriptor(
            read_only=True, description="big_model_node service for appeals (models with an appeal head); "
                                        "empty: never appeal"))
        self.declare_parameter("appeal_format", "jpeg", ParameterDescriptor(
            read_only=True, description="how appealed frames travel: jpeg | png (lossless)"))
        self.declare_parameter("appeal_jpeg_quality", 90, read_only)
        self.declare_parameter("appeal_local_model", "", ParameterDescriptor(
            read_only=True, description="answer appeals with this big model on this machine (e.g. on a GPU) "
                                        "instead of appeal_service; empty: use the service"))
        self.declare_parameter("appeal_local_providers", ["CPUExecutionProvider"], read_only)
        self.add_on_set_parameters_callback(self.validate_parameters)
        self.add_post_set_parameters_callback(self.apply_parameters)

    def _configure(self) -> None:
        """Load the model and modes, open the topics and start the refinement worker; a bad model,
        modes file or parameter raises (``STARTUP_ERRORS``) with the reason."""
        param = self.get_parameter
        initial = self.validate_parameters([param(name) for name in (
            "score_threshold", "diagnostics_period_s", "intra_op_threads", "appeal_format", "appeal_jpeg_quality",
            "image_transport")])
        if not initial.successful:
            raise ValueError(initial.reason)
        model = AnytimeModel(resolve_share_path(param("model").value, "models", DEFAULT_MODEL),
                             providers=list(param("providers").value),
                             threads=param("intra_op_threads").value,
                             gate_rule=param("gate_rule").value or None,
                             strict_providers=param("strict_providers").value)
        for warning in model.provider_warnings:
            self.get_logger().warning(f"providers: {warning}")
        modes = load_modes(resolve_share_path(param("modes_file").value, "config", "modes.yaml"), model.manifest.total_macs)
        self.engine = AnytimeEngine(model, modes, param("vehicle_mode").value,
                                    score_threshold=param("score_threshold").value,
                                    appealer=self._appealer(model, modes))
        self.publish_debug = param("publish_debug_image").value
        self.preempt = param("preempt_on_new_frame").value

        qos = QoSProfile(depth=1, history=qos_profile_sensor_data.history,
                         durability=qos_profile_sensor_data.durability,
                         reliability=self._reliability(param("image_reliability").value))
        self.preliminary_pub = self.create_publisher(DetectionArray, "perception/preliminary", 10)
        self.refined_pub = self.create_publisher(DetectionArray, "perception/refined", 10)
        self.debug_pub = self.create_publisher(Image, "perception/debug_image", qos_profile_sensor_data)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # the standard output: each frame's final result as vision_msgs/Detection2DArray
        self.detections_pub = (self.create_publisher(Detection2DArray, "perception/detections", 10)
                               if VISION_MSGS else None)
        if not VISION_MSGS:
            self.get_logger().warning("vision_msgs is not installed: perception/detections (Detection2DArray) "
                                      "is not published; the anytime topics are")
        self.status_name = status_name(self.get_fully_qualified_name(), "pipeline")
        if param("image_transport").value == "compressed":
            self.subscription = self.create_subscription(CompressedImage, "camera/image_raw/compressed",
                                                         self.compressed_image_callback, qos)
        else:
            self.subscription = self.create_subscription(Image, "camera/image_raw", self.image_callback, qos)
        self.diagnostics_timer = self.create_timer(param("diagnostics_period_s").value, self.diagnostics_callback)

        self.stats = PipelineStats()
        self.frames: LatestSlot[tuple[Frame, ResultCallback]] = LatestSlot()  # started, awaiting refinement
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._refine_frames, name="anytime_refinement", daemon=True)
        self._worker.start()
        m = model.manifest
        self.get_logger().info(
            f"model {m.name}: {model.num_stages} stages, MACs {[s.macs for s in m.stages]}, "
            f"providers requested {list(model.requested_providers)}, sessions got "
            f"{sorted(set(model.session_providers))}{' (carry bound on ' + model.device + ')' if model.device_carry else ''}; "
            f"mode {self.engine.mode.name}")

    def _appealer(self, model: AnytimeModel, modes: ModeTable) -> Appealer | None:
        """Appeals for a model with an appeal head, in the modes that allow them (None: local only)."""
        param = self.get_parameter
        spec, service, local = model.manifest.appeal, param("appeal_service").value, param("appeal_local_model").value
        if spec is None or not (service or local):
            return None
        if local:
            big = AnytimeModel(resolve_share_path(local, "models", local), providers=list(param("appeal_local_providers").value))
            if big.manifest.labels != model.manifest.labels:
                raise ValueError(f"appeal_local_model {local!r}: its labels differ from the model's")
            if big.manifest.name != spec.big_model:
                self.get_logger().warning(f"appeal thresholds were calibrated against {spec.big_model!r}, "
                                          f"appeal_local_model is {big.manifest.name!r}")
            client, where = LocalAppealClient(BigModel(big)), f"{big.manifest.name} on this machine"
        else:
            client = RosAppealClient(self, service, spec.big_model, param("appeal_format").value,
                                     param("appeal_jpeg_quality").value)
            where = f"{spec.big_model} on {service}"
        appealer = Appealer.for_model(model.manifest, modes, client,
                                      on_health_change=lambda message: self.get_logger().warning(message))
        self.get_logger().info(f"appeals to {where} in modes {sorted(appealer.thresholds) or 'none'}")
        return appealer

    @staticmethod
    def _reliability(name: str) -> QoSReliabilityPolicy:
        policies = {"best_effort": QoSReliabilityPolicy.BEST_EFFORT, "reliable": QoSReliabilityPolicy.RELIABLE}
        if name not in policies:
            raise ValueError(f"image_reliability must be best_effort or reliable, not {name!r}")
        return policies[name]

    def validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Reject invalid values with a reason; the old value stays."""
        for p in params:
            if p.name == "vehicle_mode":
                if self.engine is None:  # not configured yet: checked against the modes file then
                    continue
                try:
                    self.engine.modes.get(p.value)
                except ModeError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
            elif p.name == "score_threshold" and not 0.0 < p.value < 1.0:
                return SetParametersResult(successful=False, reason=f"score_threshold must be in (0, 1), got {p.value}")
            elif p.name == "diagnostics_period_s" and not p.value > 0.0:
                return SetParametersResult(successful=False, reason=f"diagnostics_period_s must be > 0, got {p.value}")
            elif p.name == "intra_op_threads" and p.value < 0:
                return SetParametersResult(successful=False, reason=f"intra_op_threads must be >= 0, got {p.value}")
            elif p.name == "appeal_format" and p.value not in COMPRESSED_FORMATS:
                return SetParametersResult(successful=False, reason=f"appeal_format must be one of "
                                           f"{', '.join(COMPRESSED_FORMATS)}, got {p.value!r}")
            elif p.name == "image_transport" and p.value not in IMAGE_TRANSPORTS:
                return SetParametersResult(successful=False, reason=f"image_transport must be one of "
                                           f"{', '.join(IMAGE_TRANSPORTS)}, got {p.value!r}")
            elif p.name == "appeal_jpeg_quality" and not 1 <= p.value <= 100:
                return SetParametersResult(successful=False, reason=f"appeal_jpeg_quality must be in 1..100, got {p.value}")
        return SetParametersResult(successful=True)

    def apply_parameters(self, params: list[Parameter]) -> None:
        """Apply accepted values; a mode switch takes effect at the next stage boundary. Before
        the model is loaded (a managed node not configured yet) the values wait in the parameters."""
        if self.engine is None:
            return
        for p in params:
            if p.name == "vehicle_mode":
                self.engine.set_mode(p.value)
                self.get_logger().info(f"vehicle mode -> {p.value} (MAC budget {self.engine.mode.mac_budget})")
            elif p.name == "score_threshold":
                self.engine.score_threshold = p.value
            elif p.name == "publish_debug_image":
                self.publish_debug = p.value
            elif p.name == "preempt_on_new_frame":
                self.preempt = p.value

    def image_callback(self, msg: Image) -> None:
        """A raw camera image: decode it (any supported encoding) and answer it."""
        if not self.active:
            return
        received_at = time.perf_counter()
        try:
            rgb = image_to_rgb(msg)
        except ImageError as exc:
            self._reject(f"{msg.width}x{msg.height} {msg.encoding!r}", exc)
            return
        self._answer(msg.header, rgb, received_at)

    def compressed_image_callback(self, msg: CompressedImage) -> None:
        """A compressed camera image (jpeg, png): decode it and answer it."""
        if not self.active:
            return
        received_at = time.perf_counter()
        try:
            rgb = compressed_to_rgb(msg)
        except ImageError as exc:
            self._reject(f"compressed {msg.format!r}", exc)
            return
        self._answer(msg.header, rgb, received_at)

    def _reject(self, what: str, exc: ImageError) -> None:
        """A malformed image is logged (throttled) and counted, and the node goes on."""
        self.stats.count_rejected()
        self.get_logger().warning(f"skipping image ({what}): {exc}", throttle_duration_sec=1.0)

    def _answer(self, header: Header, rgb: np.ndarray, received_at: float) -> None:
        """Answer at once with stage 0, then leave the frame to the refinement worker. A frame
        still waiting for refinement when a newer one arrives is finalised as ``preempted``
        (keep-last 1)."""
        publish = self._publisher(header, rgb, received_at)
        try:
            frame = self.engine.start(rgb, received_at, publish, tag=header)
        except Exception as exc:  # one frame must never take the node down
            if self.context.ok():
                self.get_logger().error(f"frame dropped: {exc!r}")
            return
        if frame.finished:
            self.stats.add_frame(frame.results)
            return
        replaced = self.frames.put((frame, publish))
        if replaced is not None:  # never refined: answer it as preempted
            old_frame, old_publish = replaced
            try:
                self.engine.stop(old_frame, StopReason.PREEMPTED, old_publish)
                self.stats.add_frame(old_frame.results)
            except Exception as exc:  # e.g. publishing at shutdown
                if self.context.ok():
                    self.get_logger().error(f"frame {old_frame.tag} not answered: {exc!r}")

    def _refine_frames(self) -> None:
        """Worker thread: refine the newest started frame until the scheduler stops it."""
        while not self._stop.is_set():
            item = self.frames.take(timeout=0.1)
            if item is None:
                continue
            frame, publish = item
            waiting = self.frames.has_item if self.preempt else None
            try:
                self.stats.add_frame(self.engine.refine(frame, publish, waiting))
            except Exception as exc:  # keep refining later frames; at shutdown publishing fails
                if not self.context.ok():
                    return
                self.get_logger().error(f"refinement of a frame failed: {exc!r}")

    def _publisher(self, header: Header, rgb: np.ndarray, received_at: float) -> ResultCallback:
        """Routes one frame's results: stage 0 to preliminary, later stages and the final to refined."""

        preliminary_sent = False

        def publish(result: StageResult) -> None:
            nonlocal preliminary_sent
            out = result_to_msg(result, header)
            if not preliminary_sent:  # the frame's first result is stage 0
                preliminary_sent = True
                self.preliminary_pub.publish(out)
                self.stats.add_overhead((time.perf_counter() - received_at) * 1000.0 - result.stage_ms)
            if result.stage > 0 or result.is_final:
                self.refined_pub.publish(out)
            if result.is_final and self.detections_pub is not None:
                self.detections_pub.publish(to_detection2d_array(result.detections, header))
            if result.is_final and self.publish_debug:
                self.debug_pub.publish(rgb_to_image(draw_detections(rgb, result), header))

        return publish

    def diagnostics_callback(self) -> None:
        """Publish deadline-miss rate, stage histogram, MACs vs budget and latency percentiles."""
        summary = self.stats.summary()
        if self.engine.appealer is not None:
            summary.update(self.engine.appealer.summary())
        miss = float(summary.get("deadline_miss_rate", 0.0))
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if miss <= 0.05 else DiagnosticStatus.WARN,
            name=self.status_name, hardware_id=self.engine.model.manifest.name,
            message=f"deadline misses {miss:.1%}, mode {self.engine.mode.name}",
            values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in summary.items()])
        self.diagnostics_pub.publish(DiagnosticArray(header=self._stamp(), status=[status]))

    def _stamp(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())

    def _unconfigure(self) -> None:
        """Stop the worker, close the topics and unload the model (safe on a half-configured node)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=2.0)
            self._worker = None
        for name, destroy in (("subscription", self.destroy_subscription), ("diagnostics_timer", self.destroy_timer),
                              ("preliminary_pub", self.destroy_publisher), ("refined_pub", self.destroy_publisher),
                              ("debug_pub", self.destroy_publisher), ("diagnostics_pub", self.destroy_publisher),
                              ("detections_pub", self.destroy_publisher)):
            handle = self.__dict__.pop(name, None)
            if handle is not None:
                destroy(handle)
        if self.engine is not None:
            self.engine.close()
            self.engine = None


class AnytimePerceptionNode(AnytimePerception, Node):
    """The node: loads its model at start and answers frames until shut down."""

    def __init__(self, **kwargs) -> None:
        Node.__init__(self, "anytime_perception", **kwargs)
        self._declare_parameters()
        self._configure()

    def destroy_node(self) -> None:
        self._unconfigure()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node; a bad model, modes file or parameter ends it with a clear error (exit 1)."""
    return run_node(AnytimePerceptionNode, "anytime_perception", args)


if __name__ == "__main__":
    raise SystemExit(main())
