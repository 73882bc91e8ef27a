"""Plain result types of the anytime runtime (no ROS, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Detection", "StageResult", "StopReason"]


class StopReason(str, Enum):
    """Why a frame's refinement ended."""

    COMPLETE = "complete"  # every stage ran
    BUDGET = "budget"  # the next stage would exceed the mode's MAC budget
    DEADLINE = "deadline"  # the next stage would end after the frame's deadline
    LOAD = "load"  # CPU load from other processes is above the mode's ceiling
    CONFIDENT = "confident"  # the gate judged the current answer good enough
    PREEMPTED = "preempted"  # a newer frame is waiting
    APPEALED = "appealed"  # the big network's answer to an appeal arrived in time and is the final


@dataclass(frozen=True)
class Detection:
    """One box in pixels of the incoming image (centre, size)."""

    class_id: int
    label: str
    score: float
    center_x: float
    center_y: float
    width: float
    height: float


@dataclass(frozen=True)
class StageResult:
    """The answer after one stage of one frame."""

    stage: int
    num_stages: int
    is_final: bool
    macs: int  # cumulative for the frame
    mac_budget: int
    latency_ms: float  # frame receipt -> this result
    deadline_ms: float
    mode: str
    stop_reason: str  # a StopReason value on the final result, "" before
    detections: list[Detection] = field(default_factory=list)
    confidence: float | None = None
    stage_ms: float = 0.0  # compute time of this stage alone
    source: str = "local"  # "local", or "appeal": the big network's answer (stage == num_stages)
