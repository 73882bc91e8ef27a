"""Dataset readers (numpy/OpenCV only, no torch): detection sets in COCO, YOLO and VOC layouts
(``open_detection``), image-folder classification sets (``image_folder``), augmentation."""
from .detection import DataError, DataIssue, DetectionSet, Sample, read_rgb
from .formats import FORMATS, detect_format, load_split, open_detection, read_detection

__all__ = ["DataError", "DataIssue", "DetectionSet", "Sample", "read_rgb", "FORMATS", "detect_format",
           "load_split", "open_detection", "read_detection"]
