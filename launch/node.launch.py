"""Launch the anytime perception node (ROS 2 installs with launch and launch_ros; `make setup`
builds them into .venv from ../shared/ros2 where no distro is installed).

    ros2 launch anytime_perception node.launch.py
    ros2 launch anytime_perception node.launch.py vehicle_mode:=power_saving image:=/front/image_raw
    ros2 launch anytime_perception node.launch.py namespace:=cam_front   # /cam_front/camera/image_raw -> /cam_front/perception/*
    ros2 launch anytime_perception node.launch.py model:=cifar10_appealnet_mobilenet
    ros2 launch anytime_perception node.launch.py managed:=true   # lifecycle node: ros2 lifecycle set ... configure
    ros2 launch anytime_perception node.launch.py providers:=CUDAExecutionProvider,CPUExecutionProvider

Camera drivers exchanging large images with this node must use the same Fast DDS transport
settings: this file sets FASTDDS_DEFAULT_PROFILES_FILE to the package's profile for the node;
export the same variable for the camera driver (see the README).
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def parse_providers(text: str) -> list[str]:
    """``A,B`` or a YAML list ``[A, B]`` -> [A, B]; empty -> [] (the params file decides)."""
    text = text.strip()
    if not text:
        return []
    value = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
        raise ValueError(f"providers:={text!r}: give provider names, e.g. CUDAExecutionProvider,CPUExecutionProvider")
    return [p.strip() for p in value]


def _node(context: LaunchContext) -> list[Node]:
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {"vehicle_mode": arg("vehicle_mode"), "model": arg("model")}
    providers = parse_providers(arg("providers"))
    if providers:
        overrides["providers"] = providers
    return [Node(
        package="anytime_perception",
        executable="anytime_managed_node" if arg("managed") == "true" else "anytime_node",
        name="anytime_perception",
        namespace=arg("namespace"),
        output="screen",
        parameters=[arg("params_file"), overrides],
        remappings=[("camera/image_raw", arg("image"))],
    )]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("anytime_perception")
    return LaunchDescription([
        DeclareLaunchArgument("vehicle_mode", default_value="normal", description="initial vehicle mode"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "params.yaml")),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics "
                              "(one per camera)"),
        DeclareLaunchArgument("image", default_value="camera/image_raw",
                              description="camera topic (relative: inside the namespace)"),
        DeclareLaunchArgument("model", default_value="road_signs_anywidth",
                              description="a model directory or a model name under the package's models/"),
        DeclareLaunchArgument("providers", default_value="",
                              description="ONNX Runtime providers in priority order, e.g. "
                              "CUDAExecutionProvider,CPUExecutionProvider (empty: the params file's)"),
        DeclareLaunchArgument("managed", default_value="false", choices=["true", "false"],
                              description="true: the lifecycle node (anytime_managed_node), unconfigured at start"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_profile.xml")),
        OpaqueFunction(function=_node),
    ])
