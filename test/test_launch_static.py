"""Static checks of what cannot run here (launch_ros is not installable): the launch file names
the real executable, params.yaml only sets parameters the node declares, packaging is consistent."""
from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

import rclpy
import yaml

import pytest

from anytime_perception.ros.big_model_node import BigModelNode
from anytime_perception.ros.node import AnytimePerceptionNode

from conftest import REPO

# launch file -> (node name, params file, node class)
LAUNCHED = {"node.launch.py": ("anytime_perception", "params.yaml", AnytimePerceptionNode),
            "big_model.launch.py": ("big_model", "big_model_params.yaml", BigModelNode)}


def _launch_node_keywords(launch_file: str) -> dict[str, object]:
    tree = ast.parse((REPO / "launch" / launch_file).read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Node"]
    assert len(calls) == 1, "the launch file should start exactly one Node"
    return {k.arg: k.value.value for k in calls[0].keywords if isinstance(k.value, ast.Constant)}


@pytest.mark.parametrize("launch_file", sorted(LAUNCHED))
def test_launch_file_names_the_installed_executable(launch_file):
    keywords = _launch_node_keywords(launch_file)
    assert keywords["package"] == "anytime_perception"
    assert keywords["name"] == LAUNCHED[launch_file][0]
    text = (REPO / "launch" / launch_file).read_text()
    executables = [e for e in ("anytime_node", "anytime_managed_node", "big_model_node") if f"'{e}'" in text
                   or f'"{e}"' in text]
    assert executables, "the launch file names no executable of the package"
    for executable in executables:
        assert (REPO / "scripts" / executable).is_file()
        assert f"scripts/{executable}" in (REPO / "CMakeLists.txt").read_text()
        assert f"{executable}=" in (REPO / "setup.py").read_text()
    assert LAUNCHED[launch_file][1] in (REPO / "launch" / launch_file).read_text()


@pytest.mark.parametrize("launch_file", sorted(LAUNCHED))
def test_params_yaml_sets_only_declared_parameters(launch_file):
    _, params_file, node_class = LAUNCHED[launch_file]
    params = yaml.safe_load((REPO / "config" / params_file).read_text())
    assert list(params) == ["/**"]  # applies to the node under any name and namespace
    keys = set(params["/**"]["ros__parameters"])
    rclpy.init()
    try:
        node = node_class()
        declared = set(node._parameters) - {"use_sim_time", "start_type_description_service"}  # rclpy built-ins
        node.destroy_node()
    finally:
        rclpy.shutdown()
    assert keys <= declared, f"{params_file} sets undeclared parameters {keys - declared}"
    assert declared <= keys, f"{params_file} does not document {declared - keys}"


def test_package_xml_is_an_interface_package_built_with_ament_cmake():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.findtext("name") == "anytime_perception"
    assert root.find("export/build_type").text == "ament_cmake"
    assert "rosidl_interface_packages" in [e.text for e in root.findall("member_of_group")]
    cmake = (REPO / "CMakeLists.txt").read_text()
    for interface in sorted((REPO / "msg").glob("*.msg")) + sorted((REPO / "srv").glob("*.srv")):
        assert f"{interface.parent.name}/{interface.name}" in cmake


def _requirements(path) -> set[str]:
    return {line.split("#")[0].strip() for line in path.read_text().splitlines()} - {""}


def test_onnxruntime_flavours_are_never_installed_together():
    """onnxruntime and onnxruntime-gpu provide the same module: one install set names one of them."""
    common = set().union(*(_requirements(p) for p in (REPO / "requirements").glob("*.txt")))
    assert not {"onnxruntime", "onnxruntime-gpu"} & common
    assert _requirements(REPO / "requirements" / "onnxruntime" / "cpu.txt") == {"onnxruntime"}
    assert _requirements(REPO / "requirements" / "onnxruntime" / "gpu.txt") == {"onnxruntime-gpu"}
    setup = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
    assert not {"onnxruntime", "onnxruntime-gpu"} & set(keywords["install_requires"])
    extras = keywords["extras_require"]
    assert extras["cpu"] == ["onnxruntime"] and extras["gpu"] == ["onnxruntime-gpu"]
    assert all(not {"onnxruntime", "onnxruntime-gpu"} & set(v) for k, v in extras.items() if k not in ("cpu", "gpu"))


def test_setup_rejects_an_unknown_onnxruntime_flavour():
    import subprocess

    done = subprocess.run([str(REPO / "scripts" / "setup_env.sh"), "env"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "ANYTIME_ORT": "tpu"}, timeout=60)
    assert done.returncode == 2 and "ORT=tpu: give cpu (onnxruntime) or gpu (onnxruntime-gpu)" in done.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("", []), ("CPUExecutionProvider", ["CPUExecutionProvider"]),
    ("CUDAExecutionProvider,CPUExecutionProvider", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("[CUDAExecutionProvider, CPUExecutionProvider]", ["CUDAExecutionProvider", "CPUExecutionProvider"])])
def test_launch_providers_argument(text, expected):
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (make setup builds it from ../shared/ros2)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("node_launch", REPO / "launch" / "node.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_providers(text) == expected
    with pytest.raises(ValueError, match="provider names"):
        module.parse_providers("[1, 2]")


def test_multi_camera_launch_rejects_bad_camera_lists():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (make setup builds it from ../shared/ros2)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("multi_camera_launch", REPO / "launch" / "multi_camera.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.parse_cameras(" front, rear ") == ["front", "rear"]
    for bad in ("", "front,front", "front/left", "1st"):
        with pytest.raises(ValueError, match="cameras:="):
            module.parse_cameras(bad)
