"""Launch the anytime perception node (real ROS 2 installs: needs launch and launch_ros).

    ros2 launch anytime_perception node.launch.py
    ros2 launch anytime_perception node.launch.py vehicle_mode:=power_saving image:=/front/image_raw
    ros2 launch anytime_perception node.launch.py namespace:=cam_front   # /cam_front/camera/image_raw -> /cam_front/perception/*
    ros2 launch anytime_perception node.launch.py model:=cifar10_appealnet_mobilenet
    ros2 launch anytime_perception node.launch.py managed:=true   # lifecycle node: ros2 lifecycle set ... configure

Camera drivers exchanging large images with this node must use the same Fast DDS transport
settings: this file sets FASTDDS_DEFAULT_PROFILES_FILE to the package's profile for the node;
export the same variable for the camera driver (see the README).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


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
        DeclareLaunchArgument("managed", default_value="false", choices=["true", "false"],
                              description="true: the lifecycle node (anytime_managed_node), unconfigured at start"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_profile.xml")),
        Node(
            package="anytime_perception",
            executable=PythonExpression(["'anytime_managed_node' if '", LaunchConfiguration("managed"),
                                         "' == 'true' else 'anytime_node'"]),
            name="anytime_perception",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"vehicle_mode": LaunchConfiguration("vehicle_mode"),
                         "model": LaunchConfiguration("model")}],
            remappings=[("camera/image_raw", LaunchConfiguration("image"))],
        ),
    ])
