"""The anytime runtime: manifest, ONNX Runtime stages, scheduler, engine. No ROS, no torch."""
from .engine import AnytimeEngine, Frame, ResultCallback
from .gate import Gate, ThresholdGate
from .manifest import Manifest, ManifestError, load_manifest
from .model import AnytimeModel, available_providers
from .modes import ModeError, ModeTable, VehicleMode, load_modes
from .scheduler import LatencyEstimator, LoadMonitor, PublishMargin, StageContext, decide
from .types import Detection, StageResult, StopReason

__all__ = [
    "AnytimeEngine", "AnytimeModel", "Detection", "Frame", "Gate", "LatencyEstimator", "LoadMonitor", "PublishMargin",
    "Manifest", "ManifestError", "ModeError", "ModeTable", "ResultCallback", "StageContext",
    "StageResult", "StopReason", "ThresholdGate", "VehicleMode", "available_providers", "decide",
    "load_manifest", "load_modes",
]
