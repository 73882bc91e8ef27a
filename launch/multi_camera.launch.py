"""One anytime perception node per camera, each in its own namespace (node.launch.py per camera).

    ros2 launch anytime_perception multi_camera.launch.py cameras:=front,rear
        /front/camera/image_raw -> /front/perception/{preliminary,refined,detections}
        /rear/camera/image_raw  -> /rear/perception/...
    ros2 param set /rear/anytime_perception vehicle_mode power_saving   # one camera only

Every other argument of node.launch.py (vehicle_mode, model, params_file, providers, managed)
applies to all cameras; `image` is relative, so each camera reads its own namespace's topic.
"""
import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

FORWARDED = ("vehicle_mode", "model", "params_file", "providers", "managed", "image")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def parse_cameras(text: str) -> list[str]:
    """``front,rear`` -> [front, rear]; each a valid ROS name token, no repeats."""
    cameras = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in cameras if not NAME.match(c)]
    if not cameras or bad or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras:={text!r}: give distinct names of letters, digits and _ (e.g. front,rear)"
                         + (f"; invalid: {bad}" if bad else ""))
    return cameras


def _cameras(context: LaunchContext) -> list[GroupAction]:
    node_launch = os.path.join(get_package_share_directory("anytime_perception"), "launch", "node.launch.py")
    forwarded = {name: LaunchConfiguration(name).perform(context) for name in FORWARDED}
    return [GroupAction([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(node_launch),
        launch_arguments={**forwarded, "namespace": camera}.items())], scoped=True)
        for camera in parse_cameras(LaunchConfiguration("cameras").perform(context))]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("anytime_perception")
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,rear", description="comma-separated camera names; "
                              "one node per camera in the namespace of that name"),
        DeclareLaunchArgument("vehicle_mode", default_value="normal", description="initial vehicle mode of every camera"),
        DeclareLaunchArgument("model", default_value="road_signs_anywidth"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "params.yaml")),
        DeclareLaunchArgument("providers", default_value=""),
        DeclareLaunchArgument("managed", default_value="false", choices=["true", "false"]),
        DeclareLaunchArgument("image", default_value="camera/image_raw",
                              description="camera topic, relative to each camera's namespace"),
        OpaqueFunction(function=_cameras),
    ])
