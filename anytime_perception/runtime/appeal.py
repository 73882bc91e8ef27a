"""Appeals to a big network (AppealNet at run time), without ever blocking the preliminary answer.

The little network's predictor head outputs q(x), how likely its own answer is good enough. When q
is below the current vehicle mode's threshold, the frame is *appealed*: sent to a big network,
usually on a stronger computer (``ros/appeal_client.py`` carries it over a ROS 2 service), or on
this one (``LocalAppealClient``, e.g. a big model on a GPU provider). The engine keeps refining
locally meanwhile and publishes the big network's answer as the frame's final result if it
arrives before the deadline; a late answer is dropped and counted.

An appeal is only sent when the server is there (``AppealClient.ready``), the mode allows appeals
and the measured round trip fits the time left to the deadline. After ``max_unanswered`` appeals
in a row went unanswered the server counts as unresponsive: the node runs local-only and tests
the server again with one appeal every ``probe_period_s``.
"""
from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .decoder import decode
from .manifest import APPEAL_OUTPUT, Manifest
from .model import AnytimeModel
from .modes import ModeTable
from .preprocess import Preprocessor
from .types import Detection

__all__ = ["AppealAnswer", "Submission", "AppealClient", "PendingAppeal", "RoundTripEstimator", "appealing_modes",
           "Appealer",
           "BigModel", "LocalAppealClient"]


@dataclass(frozen=True)
class AppealAnswer:
    """The big network's answer to one appealed frame (boxes in pixels of the appealed image)."""

    detections: tuple[Detection, ...]
    model: str  # the model that answered
    server_ms: float  # the server's own time: decoding the image, inference, decoding the heads


@dataclass(frozen=True)
class Submission:
    """An appeal on its way: the answer to come and the bytes that went out."""

    future: Future  # Future[AppealAnswer]
    bytes_sent: int


class AppealClient(Protocol):
    """Transport to a big network. ``submit`` returns at once; the answer arrives in the future
    (cancelled when the frame stops waiting, if the transport can still take the work back)."""

    def ready(self) -> bool:
        """A server is there to answer."""
        ...

    def submit(self, image: np.ndarray, tag: object) -> Submission:
        """Send one RGB uint8 frame; ``tag`` is the caller's handle of the frame (e.g. its header)."""
        ...


@dataclass
class PendingAppeal:
    """One frame's appeal in flight."""

    submission: Submission
    sent_at: float  # time.perf_counter()
    abandoned: bool = False  # the frame's final went out without it: an answer now is late

    def failed(self) -> bool:
        """Whether the appeal ended without an answer (an error or a cancel): nothing to wait for."""
        future = self.submission.future
        return future.done() and (future.cancelled() or future.exception() is not None)


class RoundTripEstimator:
    """Recent appeal round trips: predicts the next as median + ``k`` median absolute deviations."""

    def __init__(self, window: int = 30, k: float = 2.0) -> None:
        self.k = k
        self._seconds: deque[float] = deque(maxlen=window)

    def update(self, seconds: float) -> None:
        self._seconds.append(seconds)

    def predict(self) -> float | None:
        """Predicted round trip in seconds; None before the first measurement."""
        if not self._seconds:
            return None
        median = statistics.median(self._seconds)
        return median + self.k * statistics.median(abs(s - median) for s in self._seconds)


def appealing_modes(manifest: Manifest, big_model: str, modes: ModeTable) -> list[str]:
    """Modes in which ``manifest``'s model may appeal to ``big_model``: those with an ``appeal``
    target, except, when the big network is the model's own full model (a nested detector's last
    stage on the server), modes whose MAC budget reaches the last stage: there the vehicle
    computes the same answer itself."""
    own = big_model == manifest.name
    return [m.name for m in modes.modes.values() if m.appeals and not (own and m.mac_budget >= manifest.total_macs)]


COUNTERS = ("candidates", "sent", "answered", "late", "timed_out", "failed", "skipped_no_server",
            "skipped_unresponsive", "skipped_round_trip", "skipped_busy")


class Appealer:
    """Decides which frames to appeal and keeps the books of appeals in flight (thread-safe).

    Args:
        client: the transport to the big network.
        thresholds: vehicle mode -> q threshold (appeal when q < threshold); modes not listed never appeal.
        stage: the local stage whose q decides.
        confidence: the stage's confidence output holding q(x).
        max_in_flight: appeals awaiting an answer at once (more are skipped: back-pressure).
        max_unanswered: consecutive unanswered appeals after which the server counts as unresponsive.
        probe_period_s: while the server is unresponsive, or too slow for the deadline, one appeal
            per period still goes out to measure it again.
        forget_after_s: an appeal unanswered for this long no longer counts as in flight.
        on_health_change: called with a message when the server becomes unreachable, unresponsive
            or answers again (the node logs it as a warning).
    """

    def __init__(self, client: AppealClient, thresholds: dict[str, float], stage: int = 0,
                 confidence: str = APPEAL_OUTPUT, max_in_flight: int = 4, max_unanswered: int = 3,
                 probe_period_s: float = 1.0, forget_after_s: float = 5.0,
                 on_health_change: Callable[[str], None] | None = None) -> None:
        self.client, self.thresholds, self.stage, self.confidence = client, dict(thresholds), stage, confidence
        self.max_in_flight, self.max_unanswered = max_in_flight, max_unanswered
        self.probe_period_s, self.forget_after_s = probe_period_s, forget_after_s
        self.on_health_change = on_health_change
        self.round_trip = RoundTripEstimator()
        self._lock = threading.Lock()
        self._in_flight: deque[PendingAppeal] = deque()
        self._unanswered = 0
        self._last_probe = -float("inf")
        self._health = "unknown"
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._bytes: deque[int] = deque(maxlen=300)
        self._rtt_ms: deque[float] = deque(maxlen=300)

    @classmethod
    def for_model(cls, manifest: Manifest, modes: ModeTable, client: AppealClient, **options) -> "Appealer":
        """Appeals as a model's manifest describes them, in the modes of ``modes`` that allow them.

        See ``appealing_modes`` for the modes that may appeal.
        """
        spec = manifest.appeal
        if spec is None:
            raise ValueError(f"{manifest.name} has no appeal section")
        allowed = appealing_modes(manifest, spec.big_model, modes)
        thresholds = {m: t for m, t in spec.thresholds.items() if m in allowed}
        return cls(client, thresholds, spec.stage, spec.confidence, **options)

    def should_appeal(self, stage: int, confidences: dict[str, float], mode: str, time_left_s: float,
                      now: float) -> bool:
        """Whether the frame is appealed after local stage ``stage`` (``now``: perf_counter time)."""
        threshold = self.thresholds.get(mode)
        q = confidences.get(self.confidence)
        if stage != self.stage or threshold is None or q is None or q >= threshold:
            return False
        with self._lock:
            self._counts["candidates"] += 1
            if not self.client.ready():
                return self._skip("skipped_no_server", "unreachable", "appeal server not found: running local-only")
            while self._in_flight and (self._in_flight[0].submission.future.done()
                                       or now - self._in_flight[0].sent_at > self.forget_after_s):
                self._in_flight.popleft()
            if len(self._in_flight) >= self.max_in_flight:
                return self._skip("skipped_busy")
            probe_due = now - self._last_probe >= self.probe_period_s
            if self._unanswered >= self.max_unanswered and not probe_due:
                return self._skip("skipped_unresponsive")
            predicted = self.round_trip.predict()
            if predicted is not None and predicted > time_left_s and not probe_due:
                return self._skip("skipped_round_trip")
            self._last_probe = now
            return True

    def close(self) -> None:
        """Close the transport if it holds resources (``LocalAppealClient``: its worker thread)."""
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def _skip(self, counter: str, health: str | None = None, message: str = "") -> bool:
        self._counts[counter] += 1
        if health is not None:
            self._set_health(health, message)
        return False

    def send(self, image: np.ndarray, tag: object) -> PendingAppeal:
        """Submit the frame; a transport error becomes a failed appeal, never an exception."""
        sent_at = time.perf_counter()
        try:
            submission = self.client.submit(image, tag)
        except Exception as exc:  # the transport is a plug-in: any failure means "no answer"
            failed: Future = Future()
            failed.set_exception(exc)
            submission = Submission(failed, 0)
        pending = PendingAppeal(submission, sent_at)
        with self._lock:
            self._counts["sent"] += 1
            self._bytes.append(submission.bytes_sent)
            self._in_flight.append(pending)
        submission.future.add_done_callback(lambda _: self._on_done(pending))
        return pending

    def wait(self, pending: PendingAppeal, until: float, give_up: Callable[[], bool] | None = None,
             poll_s: float = 0.002) -> AppealAnswer | None:
        """The answer if it comes before ``until`` (perf_counter time) and ``give_up`` stays false;
        otherwise None and the appeal is abandoned: an answer after this is late and dropped."""
        future = pending.submission.future
        while not future.done():
            left = until - time.perf_counter()
            if left <= 0 or (give_up is not None and give_up()):
                break
            try:
                future.exception(timeout=min(left, poll_s) if give_up is not None else left)
            except (TimeoutError, CancelledError):
                pass
        with self._lock:  # answered, or abandoned: decided at one moment, so an answer is never lost
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()
            self._abandon_locked(pending)
        future.cancel()  # work a local client has not started yet is dropped
        return None

    def abandon(self, pending: PendingAppeal) -> None:
        """The frame ended without the answer (e.g. preempted): an answer after this is late."""
        with self._lock:
            self._abandon_locked(pending)
        pending.submission.future.cancel()  # work a local client has not started yet is dropped

    def _abandon_locked(self, pending: PendingAppeal) -> None:
        if pending.abandoned:
            return
        pending.abandoned = True
        if not pending.submission.future.done():
            self._counts["timed_out"] += 1
            self._unanswered += 1
            self._check_responsive()

    def _on_done(self, pending: PendingAppeal) -> None:
        future = pending.submission.future
        seconds = time.perf_counter() - pending.sent_at
        with self._lock:
            if future.cancelled():
                return
            if future.exception() is not None:
                self._counts["failed"] += 1
                if not pending.abandoned:  # an abandoned appeal was counted unanswered already
                    self._unanswered += 1
                    self._check_responsive()
                return
            self.round_trip.update(seconds)
            self._rtt_ms.append(seconds * 1000.0)
            self._unanswered = 0
            self._counts["late" if pending.abandoned else "answered"] += 1
            self._set_health("ok", "appeal server answers again")

    def _check_responsive(self) -> None:
        if self._unanswered >= self.max_unanswered:
            self._set_health("unresponsive", f"appeal server did not answer {self._unanswered} appeals in a row: "
                             f"running local-only, probing every {self.probe_period_s:g} s")

    def _set_health(self, health: str, message: str) -> None:
        if health != self._health:
            quiet = self._health == "unknown" and health == "ok"  # the first answer is no news
            self._health = health
            if self.on_health_change is not None and not quiet:
                self.on_health_change(message)

    @property
    def health(self) -> str:
        """``unknown`` (no appeal yet), ``ok``, ``unreachable`` or ``unresponsive``."""
        return self._health

    def summary(self) -> dict[str, float | int | str]:
        """Counters and the round-trip and size percentiles of recent appeals (for diagnostics)."""
        with self._lock:
            out: dict[str, float | int | str] = {f"appeals_{k}": v for k, v in self._counts.items()}
            out["appeal_server"] = self._health
            rtt, sizes = list(self._rtt_ms), list(self._bytes)
        if rtt:
            for q in (50, 99):
                out[f"appeal_round_trip_p{q}_ms"] = float(np.percentile(rtt, q))
        if sizes:
            out["appeal_bytes_mean"] = float(np.mean(sizes))
        return out


class BigModel:
    """An anytime model's full answer to a whole frame: the big network's side of an appeal.

    Runs the model's static single graph when it ships one, else every stage in turn. Used by the
    appeal server (``big_model_node``) and by ``LocalAppealClient``; one frame at a time.
    """

    def __init__(self, model: AnytimeModel, score_threshold: float = 0.05) -> None:
        self.model, self.score_threshold = model, score_threshold
        self.preprocess = Preprocessor(model.manifest.input)
        self._lock = threading.Lock()

    def answer(self, image: np.ndarray) -> AppealAnswer:
        """Run the model on one RGB uint8 frame; ValueError for anything else."""
        start = time.perf_counter()
        with self._lock:
            x, letterbox = self.preprocess(image)
            heads = self._heads(x)
        m = self.model.manifest
        detections = decode(heads, m.decoder, letterbox, m.labels, self.score_threshold)
        return AppealAnswer(tuple(detections), m.name, (time.perf_counter() - start) * 1000.0)

    def _heads(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.model.manifest.full_model is not None:
            return self.model.run_full(x)
        *_, last = self.model.stages(x)
        return last.heads


class LocalAppealClient:
    """Appeals answered by a big model on this machine, in its own worker thread (e.g. a big
    model on a GPU provider beside a little one on the CPU)."""

    def __init__(self, big: BigModel) -> None:
        self.big = big
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="appeal")

    def ready(self) -> bool:
        return True

    def submit(self, image: np.ndarray, tag: object) -> Submission:
        return Submission(self._pool.submit(self.big.answer, image), image.nbytes)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
