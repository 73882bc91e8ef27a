"""Demo: replay camera frames into the anytime node and print each frame's stage timeline.

The anytime perception node runs in its own process on the shipped model, as ``ros2 launch``
would start it (in-process, Python threads of the replay and the view would compete with it for
the GIL). This process runs the replay (the camera) and a console view that prints per frame the
stages (ms, MACs, boxes, stop reason) and writes the annotated final frames to ``--out``. Halfway
through it switches the vehicle mode through the node's parameter service, as ``ros2 param set``
would.
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from anytime_perception.msg import DetectionArray

from .conversions import image_to_rgb, status_values
from .replay import ReplayNode, add_replay_arguments, frame_source

__all__ = ["TimelineView", "main"]


def _stamp_key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


class TimelineView(Node):
    """Prints one line per frame once its final refinement arrives; saves annotated frames."""

    def __init__(self, out_dir: Path | None) -> None:
        super().__init__("anytime_timeline_view")
        self.out_dir = out_dir
        self.stages: dict[tuple[int, int], list[DetectionArray]] = defaultdict(list)
        self.finals: list[DetectionArray] = []
        self.create_subscription(DetectionArray, "perception/preliminary", self.preliminary_callback, 10)
        self.create_subscription(DetectionArray, "perception/refined", self.refined_callback, 10)
        self.create_subscription(Image, "perception/debug_image", self.debug_image_callback, qos_profile_sensor_data)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics_callback, 10)
        self.diagnostics: dict[str, str] = {}
        self.mode_client = self.create_client(SetParameters, "/anytime_perception/set_parameters")

    def preliminary_callback(self, msg: DetectionArray) -> None:
        self.stages[_stamp_key(msg)].insert(0, msg)  # stage 0 goes first even if it arrives late

    def refined_callback(self, msg: DetectionArray) -> None:
        timeline = self.stages[_stamp_key(msg)]
        if msg.stage > 0 or not timeline:  # stage 0 is already there unless its copy came first
            timeline.append(msg)
        if msg.is_final:
            self.finals.append(msg)
            steps = " | ".join(f"s{m.stage} {m.latency_ms:5.1f}ms {m.macs / 1e6:5.0f}M {len(m.detections)} box"
                               for m in self.stages.pop(_stamp_key(msg)))
            print(f"frame {len(self.finals):3d} [{msg.mode:>12}] {steps}  -> {msg.stop_reason}", flush=True)

    def debug_image_callback(self, msg: Image) -> None:
        if self.out_dir is not None:
            path = self.out_dir / f"frame_{msg.header.stamp.sec}_{msg.header.stamp.nanosec:09d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(image_to_rgb(msg), cv2.COLOR_RGB2BGR))

    def diagnostics_callback(self, msg: DiagnosticArray) -> None:
        self.diagnostics = status_values(msg) or self.diagnostics

    def switch_mode(self, mode: str) -> None:
        """Ask the node for another vehicle mode through its parameter service."""
        request = SetParameters.Request(parameters=[Parameter("vehicle_mode", value=mode).to_parameter_msg()])
        self.mode_client.call_async(request)
        print(f"--- switching vehicle_mode to {mode!r} ---", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_replay_arguments(parser)
    parser.add_argument("--mode", default="normal", help="initial vehicle mode")
    parser.add_argument("--switch-to", default="power_saving", help="mode to switch to halfway ('' = none)")
    parser.add_argument("--model", default="", help="model directory (default: the node's shipped model)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for annotated frames")
    args, ros_args = parser.parse_known_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    frames = list(frame_source(args.source, args.size))[: args.frames or None]
    node_args = ["-p", f"vehicle_mode:={args.mode}", "-p", "publish_debug_image:=true"]
    if args.model:
        node_args += ["-p", f"model:={Path(args.model).resolve()}"]
    perception = subprocess.Popen(["anytime_node", "--ros-args", *node_args])  # as ros2 launch would
    rclpy.init(args=ros_args)
    view = TimelineView(args.out)
    replay = ReplayNode(iter(frames), args.rate, reliable=args.reliable)
    executor = SingleThreadedExecutor()
    executor.add_node(view)
    try:
        while replay.publisher.get_subscription_count() == 0:  # discovery before the first frame
            if perception.poll() is not None:
                raise SystemExit(f"anytime_node exited with code {perception.returncode}")
            executor.spin_once(timeout_sec=0.05)
        time.sleep(0.3)  # matching completes on both ends asynchronously
        executor.add_node(replay)
        switched = not args.switch_to
        drain_until = None  # after the last frame, leave time for its refinements and diagnostics
        while drain_until is None or time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.05)
            if not switched and replay.published >= len(frames) // 2:
                view.switch_mode(args.switch_to)
                switched = True
            if replay.done and drain_until is None:
                drain_until = time.monotonic() + 1.5
    except KeyboardInterrupt:
        pass
    finally:
        perception.send_signal(signal.SIGINT)
        perception.wait(timeout=10)
    reasons = Counter(m.stop_reason for m in view.finals)
    print(f"\n{replay.published} frames published, {len(view.finals)} answered; stop reasons {dict(reasons)}; "
          f"annotated frames in {args.out}/")
    print("diagnostics:", view.diagnostics)
    for node in (replay, view):
        node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
