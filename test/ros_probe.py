"""A real rclpy peer for integration tests: publishes camera frames, records the node's answers."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import rclpy
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from diagnostic_msgs.msg import DiagnosticArray

from anytime_perception.msg import DetectionArray
from anytime_perception.ros.vision import Detection2DArray
from anytime_perception.ros.conversions import rgb_to_compressed, rgb_to_image, status_name, status_values

NODE = "/anytime_perception"


def start_node(domain: int, *ros_args: str, executable: str = "anytime_node", env: dict[str, str] | None = None,
               prefix: list[str] | None = None) -> subprocess.Popen:
    """A real executable of the package (default ``anytime_node``) in its own process; ``prefix``
    runs it elsewhere (e.g. in another network namespace), ``env`` adds variables."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), **(env or {})}
    return subprocess.Popen([*(prefix or []), executable, "--ros-args", *ros_args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(process: subprocess.Popen, timeout: float = 20.0) -> str:
    """SIGTERM, then SIGKILL if it has not ended after ``timeout`` s (nothing outlives a test);
    returns its output. 20 s: once, on a saturated 2-core machine, a managed node took over 10 s
    to tear down its DDS participant after SIGTERM (a hang still fails the test)."""
    process.terminate()
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0] + f"\n(did not end {timeout:g} s after SIGTERM: killed)"


@contextmanager
def node_and_probe(domain: int, first_frame: np.ndarray, *ros_args: str,
                   env: dict[str, str] | None = None, node_fqn: str = NODE,
                   transport: str = "raw") -> Iterator["RosProbe"]:
    """The node in its own process and a probe that has seen it answer ``first_frame``; on exit
    the node is stopped and must have ended cleanly (exit code 0, no traceback). ``node_fqn``:
    where the node is (a namespaced or renamed node), its topics in that namespace."""
    node = start_node(domain, *ros_args, env=env)
    peer = RosProbe(domain, node_fqn, transport)
    try:
        peer.wait_for_node(first_frame)
        yield peer
    finally:
        peer.close()
        output = stop(node)
        peer.node_output = output  # for checks after the context
        print(output)
    assert node.returncode == 0 and "Traceback" not in output, output


class RosProbe:
    """Camera publisher + result recorder on its own context and executor thread."""

    def __init__(self, domain: int, node_fqn: str = NODE, transport: str = "raw") -> None:
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        self.node_fqn, self.transport = node_fqn, transport
        namespace = node_fqn.rsplit("/", 1)[0]  # "" in the root namespace
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("test_probe", context=self.context)
        self.camera = (self.node.create_publisher(CompressedImage, f"{namespace}/camera/image_raw/compressed",
                                                  qos_profile_sensor_data) if transport == "compressed" else
                       self.node.create_publisher(Image, f"{namespace}/camera/image_raw", qos_profile_sensor_data))
        self.lock = threading.Lock()
        self.received: dict[str, list[tuple[float, DetectionArray]]] = defaultdict(list)
        for topic in ("preliminary", "refined"):
            self.node.create_subscription(DetectionArray, f"{namespace}/perception/{topic}",
                                          lambda msg, t=topic: self._record(t, msg), 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: self._record("diagnostics", msg), 10)
        if Detection2DArray is not None:  # the standard output, where vision_msgs is installed
            self.node.create_subscription(Detection2DArray, f"{namespace}/perception/detections",
                                          lambda msg: self._record("detections", msg), 50)
        self.set_client = self.node.create_client(SetParameters, f"{node_fqn}/set_parameters")
        self.get_client = self.node.create_client(GetParameters, f"{node_fqn}/get_parameters")
        self.node_output = ""
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _record(self, topic: str, msg: DetectionArray) -> None:
        with self.lock:
            self.received[topic].append((time.perf_counter(), msg))

    def diagnostics(self) -> dict[str, str]:
        """Key/values of the node's latest pipeline status ({} before the first)."""
        name = status_name(self.node_fqn, "pipeline")
        statuses = (status_values(msg, name) for _, msg in reversed(self.messages("diagnostics")))
        return next((values for values in statuses if values is not None), {})

    def messages(self, topic: str) -> list[tuple[float, DetectionArray]]:
        with self.lock:
            return list(self.received[topic])

    def wait_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    def wait_for_node(self, frame: np.ndarray, timeout: float = 30.0) -> None:
        """Until the node answers a frame: discovery is asynchronous on both ends, and a
        best-effort frame sent before the node's reader has matched this writer is lost."""
        assert self.set_client.wait_for_service(timeout_sec=timeout), "node's parameter service never appeared"
        end = time.monotonic() + timeout
        while not self.finals() and time.monotonic() < end:
            self.publish(frame, stamp_sec=1)
            self.wait_until(lambda: bool(self.finals()), 0.5)
        assert self.finals(), "the node never answered a frame"

    def publish(self, rgb: np.ndarray, stamp_sec: int) -> Header:
        header = Header(frame_id="camera")
        header.stamp.sec = stamp_sec
        self.camera.publish(rgb_to_compressed(rgb, header) if self.transport == "compressed" else rgb_to_image(rgb, header))
        return header

    def send_in_turn(self, frames: list[np.ndarray], first_stamp: int, pause_s: float = 0.0) -> list[int]:
        """Publish frames one at a time (stamps from ``first_stamp``), each after the last one's final."""
        stamps = []
        for stamp, frame in enumerate(frames, first_stamp):
            self.publish(frame, stamp)
            stamps.append(stamp)
            assert self.wait_until(lambda s=stamp: s in self.finals(), 10.0), f"no final for frame {stamp}"
            time.sleep(pause_s)
        return stamps

    def publish_until(self, frame: np.ndarray, stamp_sec: int, condition: Callable[[], bool],
                      timeout: float = 30.0, period_s: float = 0.2) -> bool:
        """Publish ``frame`` every ``period_s`` until ``condition`` holds (e.g. a server was
        discovered and answered); whether it did within ``timeout``."""
        end = time.monotonic() + timeout
        while not condition() and time.monotonic() < end:
            self.publish(frame, stamp_sec)
            self.wait_until(condition, period_s)
        return condition()

    def publish_raw(self, msg: Image) -> None:
        self.camera.publish(msg)

    def finals(self) -> dict[int, DetectionArray]:
        return {m.header.stamp.sec: m for _, m in self.messages("refined") if m.is_final}

    def set_parameter(self, name: str, value) -> tuple[bool, str]:
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        result = self._call(self.set_client, request).results[0]
        return result.successful, result.reason

    def get_parameter(self, name: str):
        response = self._call(self.get_client, GetParameters.Request(names=[name]))
        return parameter_value_to_python(response.values[0])

    @staticmethod
    def _call(client, request, timeout: float = 10.0):
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        assert future.done(), f"service {client.srv_name} did not answer in {timeout} s"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
