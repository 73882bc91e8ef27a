"""The anytime engine: runs a frame stage by stage and reports every result as it appears.

A frame is started (preprocessing + stage 0: the preliminary answer) and then refined stage by
stage. The two halves may run on different threads, so a new frame's preliminary answer never
waits for an older frame's refinement; the older one is then preempted at its next stage boundary.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..letterbox import Letterbox
from .decoder import decode
from .gate import Gate, ThresholdGate
from .model import AnytimeModel
from .modes import ModeTable, VehicleMode
from .preprocess import Preprocessor
from .scheduler import LatencyEstimator, LoadMonitor, StageContext, decide
from .types import StageResult, StopReason

__all__ = ["AnytimeEngine", "Frame", "ResultCallback"]

ResultCallback = Callable[[StageResult], None]
NewerFrameWaiting = Callable[[], bool]


@dataclass
class Frame:
    """One frame in flight: its network input, carry and the results so far."""

    input: np.ndarray
    letterbox: Letterbox
    start: float  # receipt time, time.perf_counter() clock
    carry: dict[str, np.ndarray] = field(default_factory=dict)
    results: list[StageResult] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return bool(self.results) and self.results[-1].is_final


class AnytimeEngine:
    """Stage 0 always; each further stage only if budget, deadline, load, gate and preemption allow.

    Args:
        model: the loaded anytime model.
        modes: vehicle modes (MAC budgets resolved against ``model``).
        mode: initial mode name (default: the table's default).
        score_threshold: minimum detection score in [0, 1].
        load_monitor: source of other processes' CPU load (default: measured with psutil).
        gate: early-exit decision (default: the manifest's calibrated thresholds).
        warmup_runs: runs of every stage at start-up to seed the latency estimates.

    ``start`` must be called from one thread at a time; ``refine`` of an earlier frame may run
    concurrently on another thread.
    """

    def __init__(self, model: AnytimeModel, modes: ModeTable, mode: str | None = None, *,
                 score_threshold: float = 0.3, load_monitor: LoadMonitor | None = None,
                 gate: Gate | None = None, warmup_runs: int = 3) -> None:
        self.model = model
        self.modes = modes
        self._mode = modes.get(mode or modes.default_mode)
        self.score_threshold = score_threshold
        self.load_monitor = load_monitor or LoadMonitor()
        self.gate = gate or ThresholdGate(model.manifest.gates.get(model.gate_rule, {}))
        self.latency = LatencyEstimator(model.num_stages)
        self.preprocess = Preprocessor(model.manifest.input)
        self._warm_up(warmup_runs)

    @property
    def mode(self) -> VehicleMode:
        return self._mode

    def set_mode(self, name: str) -> None:
        """Switch vehicle mode; applies at the next stage boundary. ModeError if unknown."""
        self._mode = self.modes.get(name)

    def _warm_up(self, runs: int) -> None:
        """Run every stage ``runs`` times: first-run allocations out of the way, estimates seeded."""
        size = self.model.manifest.input.size
        x, _ = self.preprocess(np.zeros((size, size, 3), np.uint8))
        for _ in range(runs):
            carry: dict[str, np.ndarray] = {}
            stage0_seconds = None
            for k in range(self.model.num_stages):
                new_carry, _, _, seconds = self._run_stage(k, x, carry, stage0_seconds)
                carry.update(new_carry)
                stage0_seconds = stage0_seconds or seconds

    def _run_stage(self, k: int, x: np.ndarray, carry: dict[str, np.ndarray], stage0_seconds: float | None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float | None, float]:
        """Run stage ``k`` and feed its time (relative to the frame's stage 0) to the latency estimate."""
        t0 = time.perf_counter()
        new_carry, heads, confidence = self.model.run_stage(k, x, carry)
        seconds = time.perf_counter() - t0
        self.latency.update(k, seconds, stage0_seconds or seconds)
        return new_carry, heads, confidence, seconds

    def start(self, image: np.ndarray, received_at: float | None = None,
              on_result: ResultCallback | None = None,
              newer_frame_waiting: NewerFrameWaiting | None = None) -> Frame:
        """Preprocess one RGB uint8 frame and run stage 0 (the preliminary answer).

        ``received_at`` is the frame's receipt time on ``time.perf_counter``'s clock (default:
        now). ValueError for an image that is not RGB uint8 [H, W, 3].
        """
        start = time.perf_counter() if received_at is None else received_at
        frame = Frame(*self.preprocess(image), start=start)
        self._step(frame, on_result, newer_frame_waiting)
        return frame

    def refine(self, frame: Frame, on_result: ResultCallback | None = None,
               newer_frame_waiting: NewerFrameWaiting | None = None) -> list[StageResult]:
        """Run further stages until the scheduler stops the frame; returns all its results."""
        while not frame.finished:
            self._step(frame, on_result, newer_frame_waiting)
        return frame.results

    def process(self, image: np.ndarray, received_at: float | None = None,
                on_result: ResultCallback | None = None,
                newer_frame_waiting: NewerFrameWaiting | None = None) -> list[StageResult]:
        """``start`` then ``refine``: results in stage order, exactly the last one final."""
        frame = self.start(image, received_at, on_result, newer_frame_waiting)
        return self.refine(frame, on_result, newer_frame_waiting)

    def stop(self, frame: Frame, reason: StopReason, on_result: ResultCallback | None = None) -> StageResult:
        """End an unfinished frame without further stages (e.g. replaced before refinement)."""
        last = frame.results[-1]
        final = dataclasses.replace(last, is_final=True, stop_reason=reason.value,
                                    latency_ms=(time.perf_counter() - frame.start) * 1000.0)
        frame.results.append(final)
        if on_result is not None:
            on_result(final)
        return final

    def _step(self, frame: Frame, on_result: ResultCallback | None,
              newer_frame_waiting: NewerFrameWaiting | None) -> None:
        """Run the frame's next stage, decide whether it may go on, report the result."""
        manifest = self.model.manifest
        stages = manifest.stages
        k = len(frame.results)
        stage0_seconds = frame.results[0].stage_ms / 1000.0 if frame.results else None
        new_carry, heads, confidence, seconds = self._run_stage(k, frame.input, frame.carry, stage0_seconds)
        stage0_seconds = stage0_seconds or seconds
        frame.carry.update(new_carry)
        macs = (frame.results[-1].macs if frame.results else 0) + stages[k].macs
        detections = decode(heads, manifest.decoder, frame.letterbox, manifest.labels, self.score_threshold)
        mode = self._mode  # the stage boundary: a mode switch applies from here
        last = k + 1 == len(stages)
        reason = decide(StageContext(
            next_stage=k + 1,
            num_stages=len(stages),
            macs_used=macs,
            next_stage_macs=0 if last else stages[k + 1].macs,
            now=time.perf_counter(),
            frame_start=frame.start,
            predicted_stage_s=0.0 if last else self.latency.predict(k + 1, stage0_seconds),
            other_cpu_load=self.load_monitor.other_load(),
            confident=self.gate.is_confident(k, confidence, mode.name),
            newer_frame_waiting=bool(newer_frame_waiting and newer_frame_waiting()),
        ), mode)
        result = StageResult(
            stage=k, num_stages=len(stages), is_final=reason is not None, macs=macs,
            mac_budget=mode.mac_budget, latency_ms=(time.perf_counter() - frame.start) * 1000.0,
            deadline_ms=mode.deadline_ms, mode=mode.name,
            stop_reason=reason.value if reason is not None else "", detections=detections,
            confidence=confidence, stage_ms=seconds * 1000.0)
        frame.results.append(result)
        if on_result is not None:
            on_result(result)
