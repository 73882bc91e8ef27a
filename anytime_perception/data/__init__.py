"""Dataset readers (numpy/OpenCV only, no torch)."""
