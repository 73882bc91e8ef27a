"""Appeals over ROS 2: the ``Appeal`` service of a ``big_model_node``, possibly on another machine.

Implements the runtime's ``AppealClient``: ``submit`` compresses the frame, sends the request and
returns at once; the service's answer resolves a ``concurrent.futures.Future`` on the executor
thread. Requests that stay unanswered are forgotten after ``forget_after_s`` so a dead server does
not pile them up.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future

import numpy as np
from rclpy.node import Node
from rclpy.task import Future as RclpyFuture
from std_msgs.msg import Header

from anytime_perception.srv import Appeal

from ..runtime.appeal import AppealAnswer, Submission
from .conversions import msgs_to_detections, rgb_to_compressed

__all__ = ["RosAppealClient", "AppealError"]


class AppealError(RuntimeError):
    """The server answered with an error instead of detections."""


class RosAppealClient:
    """Client of ``service`` (``anytime_perception/srv/Appeal``) on ``node``.

    Args:
        node: the node the client lives on (its executor delivers the answers).
        service: the appeal service name.
        model: the big model the server must answer with (the little model's ``appeal.big_model``).
        fmt: ``jpeg`` or lossless ``png``.
        jpeg_quality: 1..100.
        forget_after_s: unanswered requests older than this are dropped from the client.
    """

    def __init__(self, node: Node, service: str, model: str, fmt: str = "jpeg", jpeg_quality: int = 90,
                 forget_after_s: float = 5.0) -> None:
        self.client = node.create_client(Appeal, service)
        self.model, self.fmt, self.jpeg_quality, self.forget_after_s = model, fmt, jpeg_quality, forget_after_s
        self._requests: deque[tuple[float, RclpyFuture]] = deque()

    def ready(self) -> bool:
        return self.client.service_is_ready()

    def submit(self, image: np.ndarray, tag: object) -> Submission:
        """Send the frame; ``tag`` is its camera header (stamp and frame id travel with it)."""
        header = tag if isinstance(tag, Header) else Header()
        request = Appeal.Request(image=rgb_to_compressed(image, header, self.fmt, self.jpeg_quality), model=self.model)
        answer: Future = Future()
        answer.set_running_or_notify_cancel()  # the request is on its way: it cannot be taken back
        self._forget_stale()
        pending = self.client.call_async(request)
        self._requests.append((time.monotonic(), pending))
        pending.add_done_callback(lambda done: self._resolve(done, answer))
        return Submission(answer, len(request.image.data))

    @staticmethod
    def _resolve(done: RclpyFuture, answer: Future) -> None:
        """Runs on the executor: any failure goes into ``answer``, never into the node's spin."""
        try:
            error = done.exception()
            response = None if error is not None or done.cancelled() else done.result()
            if error is None and response is None:
                error = AppealError("the request was cancelled")
            elif error is None and response.error:
                error = AppealError(response.error)
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(AppealAnswer(msgs_to_detections(response.detections), response.model,
                                               float(response.server_ms)))
        except Exception as exc:  # e.g. a malformed answer
            if not answer.done():
                answer.set_exception(exc)

    def _forget_stale(self) -> None:
        now = time.monotonic()
        while self._requests and (self._requests[0][1].done() or now - self._requests[0][0] > self.forget_after_s):
            _, request = self._requests.popleft()
            if not request.done():
                self.client.remove_pending_request(request)
