"""The anytime engine: runs a frame stage by stage and reports every result as it appears.

A frame is started (preprocessing + stage 0: the preliminary answer) and then refined stage by
stage. The two halves may run on different threads, so a new frame's preliminary answer never
waits for an older frame's refinement; the older one is then preempted at its next stage boundary.

With an ``Appealer``, a frame whose little-network q(x) is below the mode's threshold is also sent
to a big network after its appeal stage (after that stage's result is out). Local refinement goes
on meanwhile; the big network's answer becomes the frame's final result (``appealed``) at the next
stage boundary, or when local refinement is done, if it comes before the deadline.

A refinement stage starts when its typical (median) time fits before the deadline, and it is cut
off at the deadline (``Aborter``) if it runs over: the frame then ends with the result it already
has (``deadline``), on time. Stage 0 is never cut off: every frame gets its preliminary answer.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..letterbox import Letterbox
from .decoder import decode
from .abort import Aborter, StageAborted
from .appeal import Appealer, AppealAnswer, PendingAppeal
from .gate import Gate, ThresholdGate
from .model import AnytimeModel
from .modes import ModeTable, VehicleMode
from .preprocess import Preprocessor
from .scheduler import LatencyEstimator, LoadMonitor, PublishMargin, StageContext, decide
from .types import StageResult, StopReason

__all__ = ["AnytimeEngine", "Frame", "ResultCallback"]

ResultCallback = Callable[[StageResult], None]
NewerFrameWaiting = Callable[[], bool]


@dataclass
class Frame:
    """One frame in flight: its image, network input, carry and the results so far."""

    image: np.ndarray  # the incoming RGB frame (what an appeal sends)
    input: np.ndarray
    letterbox: Letterbox
    start: float  # receipt time, time.perf_counter() clock
    tag: object = None  # the caller's handle of the frame (e.g. its header), passed to the appeal client
    carry: dict[str, np.ndarray] = field(default_factory=dict)
    results: list[StageResult] = field(default_factory=list)
    appeal: PendingAppeal | None = None
    local_stop: StopReason | None = None  # local refinement ended, the appeal's answer is awaited

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
        appealer: sends frames the little network is unsure of to a big network (None: never).
        warmup_runs: runs of every stage at start-up to seed the latency estimates.
        aborter: cuts refinement stages off at their frame's deadline (default: its own thread).

    ``start`` must be called from one thread at a time; ``refine`` of an earlier frame may run
    concurrently on another thread.
    """

    def __init__(self, model: AnytimeModel, modes: ModeTable, mode: str | None = None, *,
                 score_threshold: float = 0.3, load_monitor: LoadMonitor | None = None,
                 gate: Gate | None = None, appealer: Appealer | None = None, warmup_runs: int = 3,
                 aborter: Aborter | None = None) -> None:
        self.model = model
        self.modes = modes
        self._mode = modes.get(mode or modes.default_mode)
        self.score_threshold = score_threshold
        self.load_monitor = load_monitor or LoadMonitor()
        self.gate = gate or ThresholdGate(model.manifest.gates.get(model.gate_rule, {}))
        self.appealer = appealer
        self.latency = LatencyEstimator(model.num_stages)
        self.publish_margin = PublishMargin()  # an appeal's wait or an aborted stage ends this long before the deadline
        self.aborter = aborter or Aborter()
        self.preprocess = Preprocessor(model.manifest.input)
        self._warm_up(warmup_runs)

    def close(self) -> None:
        """Stop the load monitor's and the aborter's threads and close the appeal transport."""
        self.load_monitor.close()
        self.aborter.close()
        if self.appealer is not None:
            self.appealer.close()

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
                new_carry, _, _, _, seconds = self._run_stage(k, x, carry, stage0_seconds)
                carry.update(new_carry)
                stage0_seconds = stage0_seconds or seconds

    def _run_stage(self, k: int, x: np.ndarray, carry: dict[str, np.ndarray], stage0_seconds: float | None,
                   abort_at: float | None = None
                   ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float], float | None, float]:
        """Run stage ``k`` and feed its time (relative to the frame's stage 0) to the latency
        estimate: new carry, heads, every confidence output, the gate's score, seconds. With
        ``abort_at`` (perf_counter time) the call is cut off then: ``StageAborted``."""
        t0 = time.perf_counter()
        if abort_at is None:
            new_carry, heads, confidences = self.model.run_stage_outputs(k, x, carry)
        else:
            handle, options = self.aborter.arm(abort_at)
            try:
                new_carry, heads, confidences = self.model.run_stage_outputs(k, x, carry, options)
            finally:
                self.aborter.disarm(handle)
        score = self.model.gate_score(k, heads, confidences)
        seconds = time.perf_counter() - t0
        self.latency.update(k, seconds, stage0_seconds or seconds)
        return new_carry, heads, confidences, score, seconds

    def start(self, image: np.ndarray, received_at: float | None = None,
              on_result: ResultCallback | None = None,
              newer_frame_waiting: NewerFrameWaiting | None = None, tag: object = None) -> Frame:
        """Preprocess one RGB uint8 frame and run stage 0 (the preliminary answer).

        ``received_at`` is the frame's receipt time on ``time.perf_counter``'s clock (default:
        now); ``tag`` goes with an appeal of the frame. ValueError for an image that is not RGB
        uint8 [H, W, 3].
        """
        start = time.perf_counter() if received_at is None else received_at
        frame = Frame(image, *self.preprocess(image), start=start, tag=tag)
        self._step(frame, on_result, newer_frame_waiting)
        return frame

    def refine(self, frame: Frame, on_result: ResultCallback | None = None,
               newer_frame_waiting: NewerFrameWaiting | None = None) -> list[StageResult]:
        """Run further stages until the scheduler stops the frame; returns all its results."""
        while not frame.finished:
            appeal = frame.appeal
            if appeal is not None and frame.local_stop is None and appeal.failed():
                frame.appeal = None  # failed early (e.g. the server refused it): refine locally as if never sent
                continue
            if appeal is not None and (frame.local_stop is not None or appeal.submission.future.done()):
                self._finish_appeal(frame, on_result, newer_frame_waiting)
            else:
                self._step(frame, on_result, newer_frame_waiting)
        return frame.results

    def process(self, image: np.ndarray, received_at: float | None = None,
                on_result: ResultCallback | None = None,
                newer_frame_waiting: NewerFrameWaiting | None = None, tag: object = None) -> list[StageResult]:
        """``start`` then ``refine``: results in stage order, exactly the last one final."""
        frame = self.start(image, received_at, on_result, newer_frame_waiting, tag)
        return self.refine(frame, on_result, newer_frame_waiting)

    def stop(self, frame: Frame, reason: StopReason, on_result: ResultCallback | None = None) -> StageResult:
        """End an unfinished frame without further stages (e.g. replaced before refinement); an
        appeal in flight is abandoned."""
        if frame.appeal is not None and self.appealer is not None:
            self.appealer.abandon(frame.appeal)
        return self._final(frame, dataclasses.replace(frame.results[-1], stop_reason=reason.value), on_result)

    def _final(self, frame: Frame, result: StageResult, on_result: ResultCallback | None) -> StageResult:
        final = dataclasses.replace(result, is_final=True, latency_ms=(time.perf_counter() - frame.start) * 1000.0)
        frame.results.append(final)
        if on_result is not None:
            on_result(final)
        return final

    def _finish_appeal(self, frame: Frame, on_result: ResultCallback | None,
                       newer_frame_waiting: NewerFrameWaiting | None) -> None:
        """The big network's answer as the final result if it comes before the deadline (a newer
        frame waiting ends the wait); otherwise the last local result."""
        until = self._wait_end(frame, frame.results[-1].deadline_ms)  # the frame's own mode, even after a switch
        wait_start = time.perf_counter()
        answer = self.appealer.wait(frame.appeal, until, newer_frame_waiting)
        last = frame.results[-1]
        if answer is not None:
            self._final(frame, self._appealed_result(last, answer), on_result)
            return
        if newer_frame_waiting is not None and newer_frame_waiting():
            reason = StopReason.PREEMPTED
        elif time.perf_counter() >= until:
            reason = StopReason.DEADLINE
        else:  # the appeal failed before the deadline
            reason = frame.local_stop or StopReason.COMPLETE
        self._final(frame, dataclasses.replace(last, stop_reason=reason.value), on_result)
        if reason is StopReason.DEADLINE:
            self.publish_margin.update(max(until, wait_start), time.perf_counter())

    def _wait_end(self, frame: Frame, deadline_ms: float) -> float:
        """When a wait for the frame's appeal, or a refinement stage, must end (perf_counter
        time): the deadline less the time needed to publish the final."""
        deadline_s = deadline_ms / 1000.0
        return frame.start + deadline_s - self.publish_margin.seconds(deadline_s)

    def _appealed_result(self, last: StageResult, answer: AppealAnswer) -> StageResult:
        """The answer as a result after every local stage (``stage == num_stages``)."""
        detections = [d for d in answer.detections if d.score >= self.score_threshold]
        return dataclasses.replace(last, stage=last.num_stages, stop_reason=StopReason.APPEALED.value,
                                   detections=detections, confidence=None, stage_ms=0.0, source="appeal")

    def _step(self, frame: Frame, on_result: ResultCallback | None,
              newer_frame_waiting: NewerFrameWaiting | None) -> None:
        """Run the frame's next stage, decide whether it may go on, report the result."""
        manifest = self.model.manifest
        stages = manifest.stages
        k = len(frame.results)
        stage0_seconds = frame.results[0].stage_ms / 1000.0 if frame.results else None
        # a refinement stage ends by the deadline of the mode that let it start
        abort_at = self._wait_end(frame, frame.results[-1].deadline_ms) if frame.results else None
        try:
            new_carry, heads, confidences, confidence, seconds = self._run_stage(k, frame.input, frame.carry,
                                                                                 stage0_seconds, abort_at)
        except StageAborted:
            if frame.appeal is not None:  # the appeal's answer, if in by now, is the final
                frame.local_stop = StopReason.DEADLINE
                return
            returned = time.perf_counter()
            self._final(frame, dataclasses.replace(frame.results[-1], stop_reason=StopReason.DEADLINE.value), on_result)
            # the margin learns what publishing needs; how late ONNX Runtime saw the flag (up to one
            # graph node) is not fed back, or each late cut would cut the next stages earlier still
            self.publish_margin.update(max(abort_at, returned), time.perf_counter())
            return
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
        now = time.perf_counter()
        appeal_now = self.appealer is not None and frame.appeal is None and self.appealer.should_appeal(
            k, confidences, mode.name, self._wait_end(frame, mode.deadline_ms) - now, now)
        if reason not in (None, StopReason.PREEMPTED) and (appeal_now or frame.appeal is not None):
            frame.local_stop, reason = reason, None  # the final waits for the appeal's answer
        elif reason is StopReason.PREEMPTED and frame.appeal is not None:
            self.appealer.abandon(frame.appeal)
        result = StageResult(
            stage=k, num_stages=len(stages), is_final=reason is not None, macs=macs,
            mac_budget=mode.mac_budget, latency_ms=(time.perf_counter() - frame.start) * 1000.0,
            deadline_ms=mode.deadline_ms, mode=mode.name,
            stop_reason=reason.value if reason is not None else "", detections=detections,
            confidence=confidence, stage_ms=seconds * 1000.0)
        frame.results.append(result)
        if on_result is not None:
            on_result(result)
        if appeal_now and not result.is_final:  # after the result is out: sending never delays it
            frame.appeal = self.appealer.send(frame.image, frame.tag)
