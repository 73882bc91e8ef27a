"""The anytime engine: runs a frame stage by stage and reports every result as it appears."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .decoder import decode_centernet
from .gate import Gate, ThresholdGate
from .model import AnytimeModel
from .modes import ModeTable, VehicleMode
from .preprocess import Preprocessor
from .scheduler import LatencyEstimator, LoadMonitor, StageContext, decide
from .types import StageResult

__all__ = ["AnytimeEngine", "ResultCallback"]

ResultCallback = Callable[[StageResult], None]


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
    """

    def __init__(self, model: AnytimeModel, modes: ModeTable, mode: str | None = None, *,
                 score_threshold: float = 0.3, load_monitor: LoadMonitor | None = None,
                 gate: Gate | None = None, warmup_runs: int = 3) -> None:
        self.model = model
        self.modes = modes
        self._mode = modes.get(mode or modes.default_mode)
        self.score_threshold = score_threshold
        self.load_monitor = load_monitor or LoadMonitor()
        self.gate = gate or ThresholdGate(model.manifest.gates)
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
            for k in range(self.model.num_stages):
                carry.update(self._run_stage(k, x, carry)[0])

    def _run_stage(self, k: int, x: np.ndarray, carry: dict[str, np.ndarray]
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float | None, float]:
        """Run stage ``k``, feed its time to the latency estimate; returns the outputs and seconds."""
        t0 = time.perf_counter()
        new_carry, heads, confidence = self.model.run_stage(k, x, carry)
        seconds = time.perf_counter() - t0
        self.latency.update(k, seconds)
        return new_carry, heads, confidence, seconds

    def process(self, image: np.ndarray, received_at: float | None = None,
                on_result: ResultCallback | None = None,
                newer_frame_waiting: Callable[[], bool] | None = None) -> list[StageResult]:
        """Run one RGB uint8 frame; ``on_result`` gets each result as soon as it exists.

        ``received_at`` is the frame's receipt time on ``time.perf_counter``'s clock (default:
        now). Results are ordered by stage; exactly the last one is final and names the stop
        reason. ValueError for an image that is not RGB uint8 [H, W, 3].
        """
        start = time.perf_counter() if received_at is None else received_at
        manifest = self.model.manifest
        x, box = self.preprocess(image)
        carry: dict[str, np.ndarray] = {}
        results: list[StageResult] = []
        stages = manifest.stages
        macs = 0
        for k, spec in enumerate(stages):
            new_carry, heads, confidence, seconds = self._run_stage(k, x, carry)
            carry.update(new_carry)
            macs += spec.macs
            detections = decode_centernet(heads, manifest.decoder, box, manifest.labels, self.score_threshold)
            mode = self._mode  # the stage boundary: a mode switch applies from here
            last = k + 1 == len(stages)
            reason = decide(StageContext(
                next_stage=k + 1,
                num_stages=len(stages),
                macs_used=macs,
                next_stage_macs=0 if last else stages[k + 1].macs,
                now=time.perf_counter(),
                frame_start=start,
                predicted_stage_s=0.0 if last else self.latency.predict(k + 1),
                other_cpu_load=self.load_monitor.other_load(),
                confident=self.gate.is_confident(k, confidence, mode.name),
                newer_frame_waiting=bool(newer_frame_waiting and newer_frame_waiting()),
            ), mode)
            result = StageResult(
                stage=k, num_stages=len(stages), is_final=reason is not None, macs=macs,
                mac_budget=mode.mac_budget, latency_ms=(time.perf_counter() - start) * 1000.0,
                deadline_ms=mode.deadline_ms, mode=mode.name,
                stop_reason=reason.value if reason is not None else "", detections=detections,
                confidence=confidence, stage_ms=seconds * 1000.0)
            results.append(result)
            if on_result is not None:
                on_result(result)
            if reason is not None:
                break
        return results
