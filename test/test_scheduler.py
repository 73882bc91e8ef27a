"""Scheduler decisions (one test per stop reason) and the online latency estimate."""
from __future__ import annotations

import pytest

from anytime_perception.runtime import LatencyEstimator, PublishMargin, StageContext, StopReason, VehicleMode, decide

MODE = VehicleMode("normal", mac_budget=1000, deadline_ms=50.0, cpu_load_ceiling=0.8)


def _ctx(**changes) -> StageContext:
    base = dict(next_stage=1, num_stages=3, macs_used=100, next_stage_macs=200, now=10.010,
                frame_start=10.0, predicted_stage_s=0.005, other_cpu_load=0.1, confident=False,
                newer_frame_waiting=False)
    return StageContext(**{**base, **changes})


def test_next_stage_runs_when_everything_permits():
    assert decide(_ctx(), MODE) is None


def test_scheduler_stops_when_complete():
    assert decide(_ctx(next_stage=3), MODE) is StopReason.COMPLETE


def test_scheduler_stops_on_budget():
    assert decide(_ctx(macs_used=900, next_stage_macs=101), MODE) is StopReason.BUDGET
    assert decide(_ctx(macs_used=900, next_stage_macs=100), MODE) is None  # exactly fits


def test_scheduler_stops_on_deadline():
    # 10 ms elapsed + 41 ms predicted > 50 ms deadline
    assert decide(_ctx(predicted_stage_s=0.041), MODE) is StopReason.DEADLINE
    assert decide(_ctx(predicted_stage_s=0.039), MODE) is None


def test_scheduler_stops_on_load():
    assert decide(_ctx(other_cpu_load=0.85), MODE) is StopReason.LOAD


def test_scheduler_stops_when_confident():
    assert decide(_ctx(confident=True), MODE) is StopReason.CONFIDENT


def test_scheduler_stops_when_preempted():
    assert decide(_ctx(newer_frame_waiting=True), MODE) is StopReason.PREEMPTED


def test_latency_estimate_scales_learned_ratios_by_this_frames_stage0():
    est = LatencyEstimator(2, window=5, k=2.0)
    assert est.predict(1, 0.002) == 0.0  # nothing learned yet
    for stage1 in (0.010, 0.014, 0.012):  # ratios 5, 7, 6: median 6, median deviation 1
        est.update(1, stage1, stage0_seconds=0.002)
    assert est.predict(1, 0.002) == pytest.approx((6 + 2 * 1) * 0.002)
    # contention shows in stage 0: the prediction for stage 1 grows with it
    assert est.predict(1, 0.004) == pytest.approx((6 + 2 * 1) * 0.004)


def test_one_stalled_run_does_not_block_a_stage_for_good():
    est = LatencyEstimator(2, window=15, k=2.0)
    for _ in range(10):
        est.update(1, 0.008, stage0_seconds=0.002)  # ratio 4
    est.update(1, 0.300, stage0_seconds=0.002)  # one run stalled (ratio 150)
    assert est.predict(1, 0.002) == pytest.approx(0.008)
    # a load spike shows in stage 0 and the stage is predicted long (-> skipped) ...
    assert est.predict(1, 0.100) == pytest.approx(0.4)
    # ... and without being re-measured it is predicted short again on the next quiet frame
    assert est.predict(1, 0.002) == pytest.approx(0.008)


def test_publish_margin_grows_with_late_publishing_and_forgets_it():
    margin = PublishMargin(floor_s=0.002, window=3)
    assert margin.seconds(deadline_s=0.05) == 0.002
    margin.update(wait_end=1.0, published=1.0005)  # quick: the floor holds
    assert margin.seconds(deadline_s=0.05) == 0.002
    margin.update(wait_end=2.0, published=2.008)  # a loaded CPU: woke and published 8 ms late
    assert margin.seconds(deadline_s=0.05) == pytest.approx(0.008)
    assert margin.seconds(deadline_s=0.01) == pytest.approx(0.005)  # never more than half the deadline
    for t in (3.0, 4.0, 5.0):  # quiet again: the late frame leaves the window
        margin.update(wait_end=t, published=t + 0.001)
    assert margin.seconds(deadline_s=0.05) == 0.002


def test_one_preempted_stage0_does_not_scale_the_frames_later_stages():
    est = LatencyEstimator(2, window=15, level_window=5)
    for _ in range(5):
        est.update(0, 0.002, stage0_seconds=0.002)
        est.update(1, 0.020, stage0_seconds=0.002)  # ratio 10
    est.update(0, 0.020, stage0_seconds=0.020)  # 2 ms of work that waited a 18 ms time slice
    assert est.predict(1, 0.020) == pytest.approx(0.020)  # the median level, not 10 x 20 ms
    for _ in range(3):  # contention that lasts raises the level
        est.update(0, 0.006, stage0_seconds=0.006)
    assert est.predict(1, 0.006) == pytest.approx(0.060)
