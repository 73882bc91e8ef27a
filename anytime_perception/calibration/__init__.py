"""Exit rules, threshold calibration and learned exit policies (numpy only, no torch, no ROS)."""
