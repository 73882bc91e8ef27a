"""anytime_perception: anytime (staged) perception with ONNX Runtime and a ROS 2 adapter."""
