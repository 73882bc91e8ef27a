"""Launch the appeal server on the stronger computer (real ROS 2 installs: needs launch and launch_ros).

    ros2 launch anytime_perception big_model.launch.py
    ros2 launch anytime_perception big_model.launch.py model:=/path/to/big_model

The vehicle's anytime_node appeals frames its little network is unsure of to this server's
service; both hosts must share a ROS_DOMAIN_ID and see each other (same subnet with
ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, or ROS_STATIC_PEERS naming the other host).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("anytime_perception")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "big_model_params.yaml")),
        DeclareLaunchArgument("model", default_value="road_signs_anywidth", description="the big model"),
        Node(
            package="anytime_perception",
            executable="big_model_node",
            name="big_model",
            output="screen",
            parameters=[LaunchConfiguration("params_file"), {"model": LaunchConfiguration("model")}],
        ),
    ])
