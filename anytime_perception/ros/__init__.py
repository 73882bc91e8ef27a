"""Thin ROS 2 adapter over the runtime: node, message conversions, replay and demo."""
