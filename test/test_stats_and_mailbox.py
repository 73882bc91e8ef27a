"""The keep-last-1 frame mailbox and the diagnostics statistics."""
from __future__ import annotations

import threading

import pytest

from anytime_perception.runtime.mailbox import LatestSlot
from anytime_perception.runtime.stats import PipelineStats
from anytime_perception.runtime.types import StageResult


def test_newest_item_replaces_an_unprocessed_one():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1  # 1 was replaced before anyone took it
    assert slot.has_item()
    assert slot.take(timeout=0.0) == 2
    assert not slot.has_item() and slot.take(timeout=0.01) is None


def test_take_wakes_up_when_an_item_arrives():
    slot: LatestSlot[str] = LatestSlot()
    threading.Timer(0.05, slot.put, args=("frame",)).start()
    assert slot.take(timeout=5.0) == "frame"


def _result(stage, latency, deadline=50.0, macs=100, budget=200, reason="complete"):
    return StageResult(stage=stage, num_stages=3, is_final=bool(reason), macs=macs, mac_budget=budget,
                       latency_ms=latency, deadline_ms=deadline, mode="normal", stop_reason=reason)


def test_summary_reports_misses_stages_budget_and_latency():
    stats = PipelineStats(window=10)
    stats.add_frame([_result(0, 2.0, reason=""), _result(1, 10.0, reason=""), _result(2, 60.0)])  # a miss
    stats.add_frame([_result(0, 3.0, macs=50, reason="budget")])
    stats.add_overhead(0.5)
    stats.count_rejected()
    summary = stats.summary()
    assert summary["frames"] == 2 and summary["rejected_images"] == 1
    assert summary["deadline_miss_rate"] == pytest.approx(0.5)
    assert summary["final_stage_0"] == 1 and summary["final_stage_2"] == 1
    assert summary["stop_budget"] == 1 and summary["stop_complete"] == 1
    assert summary["macs_over_budget_mean"] == pytest.approx((0.5 + 0.25) / 2)
    assert summary["preliminary_latency_p50_ms"] == pytest.approx(2.5)
    assert summary["ros_overhead_p50_ms"] == pytest.approx(0.5)


def test_summary_before_any_frame_has_only_counters():
    assert PipelineStats().summary() == {"frames": 0, "rejected_images": 0}
