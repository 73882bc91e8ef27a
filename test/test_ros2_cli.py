"""The commands users run, for real: `ros2 launch anytime_perception node.launch.py`,
`ros2 param set /anytime_perception vehicle_mode power_saving` and `ros2 topic echo
/perception/refined`, against the launched node fed with real camera-size frames over DDS.

They need the ROS 2 tools that `make setup` builds from ../shared/ros2 (or a ROS 2 install);
where `ros2` is missing the module is skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack, closing, contextmanager
from typing import Iterator

import cv2
import onnxruntime
import pytest

from anytime_perception.data import load_split, read_rgb

from ros_probe import RosProbe, start_node, stop

pytestmark = pytest.mark.skipif(shutil.which("ros2") is None, reason="no ros2 command (make setup installs it "
                                                                       "from ../shared/ros2)")
DOMAIN = 20 + (os.getpid() + 19) % 70
# no ros2 daemon is left behind; without it the CLI discovers the node itself for up to this long
NO_DAEMON = ("--no-daemon", "--spin-time", "5")


def _env() -> dict[str, str]:
    return {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN)}


def _ros2(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ros2", *args], capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def frames(road_signs_root):
    return [cv2.resize(read_rgb(s.image_path), (640, 480)) for s in load_split(road_signs_root, "val")[:6]]


@contextmanager
def ros2_launch(launch_file: str, *arguments: str, domain: int = DOMAIN) -> Iterator[list[str]]:
    """`ros2 launch anytime_perception <launch_file> <arguments>` in its own process group; on exit
    Ctrl-C (SIGINT to the group, as a terminal sends it) and the launch must end without a
    traceback. Yields a list that holds the launch's output once it has ended."""
    launch = subprocess.Popen(["ros2", "launch", "anytime_perception", launch_file, *arguments],
                              env={**os.environ, "ROS_DOMAIN_ID": str(domain)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    try:
        yield output
    finally:
        os.killpg(launch.pid, signal.SIGINT)  # what Ctrl-C does: launch shuts its nodes down
        try:
            output.append(launch.communicate(timeout=20)[0])
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            output.append(launch.communicate()[0])
        print(output[0])
    assert "Traceback" not in output[0], output[0]


@pytest.fixture(scope="module")
def launched(frames):
    """`ros2 launch anytime_perception node.launch.py` and a probe that has seen the launched node
    answer a frame."""
    with ros2_launch("node.launch.py", "vehicle_mode:=performance"):
        probe = RosProbe(DOMAIN)
        try:
            probe.wait_for_node(frames[0], timeout=60)
            yield probe
        finally:
            probe.close()


def test_ros2_launch_starts_the_node_with_the_launch_arguments(launched):
    assert launched.get_parameter("vehicle_mode") == "performance"
    assert launched.finals(), "the launched node answered no frame"
    nodes = _ros2("node", "list", *NO_DAEMON).stdout.split()
    assert "/anytime_perception" in nodes


def test_ros2_param_set_switches_the_mode_and_rejects_unknown_ones(launched, frames):
    done = _ros2("param", "set", *NO_DAEMON, "/anytime_perception", "vehicle_mode", "power_saving")
    assert done.returncode == 0 and "Set parameter successful" in done.stdout, done.stdout + done.stderr
    assert launched.get_parameter("vehicle_mode") == "power_saving"
    launched.send_in_turn(frames[1:3], 500)
    assert launched.finals()[501].mode == "power_saving"
    done = _ros2("param", "set", *NO_DAEMON, "/anytime_perception", "vehicle_mode", "warp_speed")
    assert "unknown vehicle mode 'warp_speed'" in done.stdout + done.stderr
    assert launched.get_parameter("vehicle_mode") == "power_saving"
    assert _ros2("param", "get", *NO_DAEMON, "/anytime_perception", "vehicle_mode").stdout.strip().endswith(
        "power_saving")


def test_ros2_topic_echo_prints_the_refined_detections(launched, frames):
    echo = subprocess.Popen(["ros2", "topic", "echo", *NO_DAEMON, "--once", "/perception/refined"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    stamp = 600
    while echo.poll() is None and time.monotonic() < deadline:  # until the echo has matched and printed one
        launched.send_in_turn([frames[stamp % len(frames)]], stamp)
        stamp += 1
        time.sleep(0.2)
    if echo.poll() is None:
        echo.kill()
    output = echo.communicate()[0]
    assert echo.returncode == 0, output
    for field in ("header:", "stage:", "is_final:", "mode:", "detections:"):
        assert field in output, output


def _lifecycle(*args: str, domain: int) -> str:
    done = subprocess.run(["ros2", "lifecycle", *args[:1], *NO_DAEMON, *args[1:]], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "ROS_DOMAIN_ID": str(domain)})
    return done.stdout + done.stderr


def test_managed_node_follows_ros2_lifecycle_set(frames):
    domain = DOMAIN + 1
    node = start_node(domain, "-p", "vehicle_mode:=performance", executable="anytime_managed_node")
    probe = RosProbe(domain)
    try:
        assert probe.set_client.wait_for_service(timeout_sec=30)
        assert "unconfigured" in _lifecycle("get", "/anytime_perception", domain=domain)
        probe.publish(frames[0], 1)
        assert not probe.wait_until(lambda: probe.finals(), 1.0), "an unconfigured node answered"

        assert "Transitioning successful" in _lifecycle("set", "/anytime_perception", "configure", domain=domain)
        assert "inactive" in _lifecycle("get", "/anytime_perception", domain=domain)
        probe.publish(frames[0], 2)
        assert not probe.wait_until(lambda: probe.finals(), 1.0), "an inactive node answered"

        assert "Transitioning successful" in _lifecycle("set", "/anytime_perception", "activate", domain=domain)
        probe.wait_for_node(frames[0])  # answering now
        stamps = probe.send_in_turn(frames[1:3], 10)
        assert all(probe.finals()[s].mode == "performance" for s in stamps)

        assert "Transitioning successful" in _lifecycle("set", "/anytime_perception", "deactivate", domain=domain)
        before = len(probe.finals())
        probe.publish(frames[3], 20)
        assert not probe.wait_until(lambda: 20 in probe.finals(), 1.0) and len(probe.finals()) == before
        assert probe.get_parameter("vehicle_mode") == "performance"  # deactivated, not unloaded

        assert "Transitioning successful" in _lifecycle("set", "/anytime_perception", "cleanup", domain=domain)
        assert "unconfigured" in _lifecycle("get", "/anytime_perception", domain=domain)
        assert "Transitioning successful" in _lifecycle("set", "/anytime_perception", "configure", domain=domain)
    finally:
        probe.close()
        output = stop(node)
    assert node.returncode == 0 and "Traceback" not in output, output
    assert "unconfigured: model unloaded" in output


def test_managed_node_configure_error_leaves_it_unconfigured_with_the_reason(tmp_path):
    domain = DOMAIN + 2
    node = start_node(domain, "-p", f"model:={tmp_path / 'no_such_model'}", executable="anytime_managed_node")
    probe = RosProbe(domain)
    try:
        assert probe.set_client.wait_for_service(timeout_sec=30)
        assert "Transitioning failed" in _lifecycle("set", "/anytime_perception", "configure", domain=domain)
        assert "unconfigured" in _lifecycle("get", "/anytime_perception", domain=domain)
    finally:
        probe.close()
        output = stop(node)
    assert node.returncode == 0 and "Traceback" not in output, output
    assert "cannot configure" in output and "no_such_model" in output


def test_multi_camera_launch_runs_one_node_per_camera_without_cross_talk(frames):
    """`ros2 launch anytime_perception multi_camera.launch.py cameras:=front,rear`, with a GPU
    provider asked for first: this CPU build of onnxruntime lacks it, so each node warns and runs
    on the CPU; `ros2 param set` on one camera leaves the other's mode alone."""
    domain = DOMAIN + 3
    with ExitStack() as stack:
        output = stack.enter_context(ros2_launch("multi_camera.launch.py", "cameras:=front,rear",
                                                 "providers:=CUDAExecutionProvider,CPUExecutionProvider",
                                                 domain=domain))
        front = stack.enter_context(closing(RosProbe(domain, "/front/anytime_perception")))
        rear = stack.enter_context(closing(RosProbe(domain, "/rear/anytime_perception")))
        for probe in (front, rear):
            probe.wait_for_node(frames[0], timeout=60)
        rear_before = len(rear.messages("refined"))
        front.send_in_turn(frames[1:3], 100)
        assert len(rear.messages("refined")) == rear_before, "the rear node answered the front camera"
        front_before = len(front.messages("refined"))
        rear.send_in_turn(frames[1:3], 200)
        assert len(front.messages("refined")) == front_before, "the front node answered the rear camera"

        done = subprocess.run(["ros2", "param", "set", *NO_DAEMON, "/rear/anytime_perception", "vehicle_mode",
                               "power_saving"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "ROS_DOMAIN_ID": str(domain)})
        assert "Set parameter successful" in done.stdout, done.stdout + done.stderr
        front.send_in_turn(frames[3:4], 300)
        rear.send_in_turn(frames[3:4], 400)
        assert front.finals()[300].mode == "normal" and rear.finals()[400].mode == "power_saving"
    log = output[0]
    for camera in ("front", "rear"):
        assert f"[{camera}.anytime_perception]" in log or f"/{camera}/anytime_perception" in log, log
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # CI: the CPU build
        assert log.count("providers: ['CUDAExecutionProvider'] not available") == 2, log
        assert log.count("sessions got [('CPUExecutionProvider',)]") == 2, log
