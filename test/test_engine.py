"""The engine on real ONNX Runtime sessions: stage order, carry, every stop reason, mode switch."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from anytime_perception.data import load_split, read_rgb
from anytime_perception.runtime import (AnytimeEngine, AnytimeModel, LoadMonitor, ModeError, StopReason,
                                        load_modes)
from anytime_perception.runtime.abort import Aborter, StageAborted
from anytime_perception.runtime.modes import parse_modes

from conftest import MODES_FILE, write_tiny_model


def _modes(budget=1.0, deadline_ms=1000.0, ceiling=1.0):
    return parse_modes({"modes": {"normal": {"mac_budget": budget, "deadline_ms": deadline_ms,
                                             "cpu_load_ceiling": ceiling},
                                  "power_saving": {"mac_budget": 0.3, "deadline_ms": deadline_ms,
                                                   "cpu_load_ceiling": ceiling}}}, 1000)


def _image(size=64):
    return np.random.default_rng(0).integers(0, 255, (size, size + 16, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def shipped(shipped_model_dir):
    return AnytimeModel(shipped_model_dir)


def test_all_stages_run_in_order_and_carry_accumulates(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes())
    seen = []
    results = engine.process(_image(), on_result=seen.append)
    assert [r.stage for r in results] == [0, 1, 2]
    assert seen == results  # reported as they appear, same objects
    assert [r.macs for r in results] == [100, 300, 1000]
    assert [r.is_final for r in results] == [False, False, True]
    assert results[-1].stop_reason == "complete"
    assert all(a.latency_ms <= b.latency_ms for a, b in zip(results, results[1:]))
    box = results[-1].detections[0]  # peak (class 1, y 3, x 5), 2 cells wide, letterbox undone
    assert box.label == "b" and box.score == pytest.approx(1 / (1 + np.exp(-4.0)))
    scale = 64 / 80
    assert box.width == pytest.approx(16 / scale)
    assert box.center_x == pytest.approx((5.5 * 8 - 0) / scale)


def test_engine_stops_on_budget(tiny_model):
    results = AnytimeEngine(AnytimeModel(tiny_model), _modes(budget=0.35)).process(_image())
    assert [r.stage for r in results] == [0, 1]
    assert results[-1].stop_reason == "budget" and results[-1].macs <= 350


def test_stage_zero_always_runs_even_over_budget(tiny_model):
    results = AnytimeEngine(AnytimeModel(tiny_model), _modes(budget=50)).process(_image())
    assert len(results) == 1 and results[0].is_final and results[0].stop_reason == "budget"


def test_engine_stops_on_deadline(shipped):
    engine = AnytimeEngine(shipped, _modes(budget=10**12, deadline_ms=0.001))
    results = engine.process(_image(320))
    assert len(results) == 1 and results[0].stop_reason == "deadline"


def test_engine_stops_on_confident_gate(tmp_path):
    """The manifest's calibrated thresholds of the current mode stop refinement."""
    model = write_tiny_model(tmp_path / "gated", [0.2, 0.7, 0.99], [100, 200, 700],
                             thresholds={"normal": [0.5, 0.5, 0.5], "power_saving": [0.9, 0.9, 0.9]})
    engine = AnytimeEngine(AnytimeModel(model), _modes())
    results = engine.process(_image())
    assert [r.stage for r in results] == [0, 1]  # confidences 0.2, 0.7: exits after stage 1
    assert results[-1].stop_reason == "confident" and results[-1].confidence == pytest.approx(0.7)


def test_engine_stops_on_preemption(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes())
    results = engine.process(_image(), newer_frame_waiting=lambda: True)
    assert len(results) == 1 and results[0].stop_reason == "preempted"


def test_engine_stops_on_cpu_load_from_other_processes(tiny_model):
    burners = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
               for _ in range(2)]
    try:
        monitor = LoadMonitor(period_s=0.1)
        time.sleep(1.0)
        assert monitor.other_load() > 0.3
        engine = AnytimeEngine(AnytimeModel(tiny_model), _modes(ceiling=0.3), load_monitor=monitor, warmup_runs=0)
        results = engine.process(_image())
    finally:
        for b in burners:
            b.kill()
    assert results[-1].stop_reason == "load" and len(results) == 1
    monitor.close()


def test_mode_switch_applies_without_reload(shipped, road_signs_root):
    engine = AnytimeEngine(shipped, load_modes(MODES_FILE, shipped.manifest.total_macs))
    frame = read_rgb(load_split(road_signs_root, "val")[0].image_path)
    sessions = list(shipped.sessions)
    engine.set_mode("power_saving")
    results = engine.process(frame)
    assert results[-1].macs <= engine.mode.mac_budget or len(results) == 1
    assert results[-1].mode == "power_saving"
    assert shipped.sessions == sessions
    with pytest.raises(ModeError, match="unknown vehicle mode"):
        engine.set_mode("ludicrous")
    assert engine.mode.name == "power_saving"  # old mode kept


def test_non_rgb_input_is_refused(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes())
    with pytest.raises(ValueError, match="RGB uint8"):
        engine.process(np.zeros((10, 10), np.uint8))


def test_start_gives_the_preliminary_and_refine_continues_the_same_frame(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes())
    seen = []
    frame = engine.start(_image(), on_result=seen.append)
    assert [r.stage for r in seen] == [0] and not frame.finished
    later = engine.start(_image(), on_result=seen.append)  # a newer frame starts before refinement
    results = engine.refine(frame, on_result=seen.append)
    assert [r.stage for r in results] == [0, 1, 2] and results[-1].stop_reason == "complete"
    assert [r.macs for r in later.results] == [100]


def test_stop_finalises_a_frame_that_was_replaced_before_refinement(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes())
    frame = engine.start(_image())
    final = engine.stop(frame, StopReason.PREEMPTED)
    assert frame.finished and final.is_final and final.stop_reason == "preempted"
    assert final.stage == 0 and final.detections == frame.results[0].detections
    assert engine.refine(frame) == frame.results  # nothing more runs


class _CutAtOnce(Aborter):
    """Every armed graph call is already past its abort time (a stage that cannot fit)."""

    def arm(self, at):
        return super().arm(time.perf_counter())


def test_a_refinement_stage_cut_off_at_the_deadline_ends_the_frame_with_what_it_has(tiny_model):
    engine = AnytimeEngine(AnytimeModel(tiny_model), _modes(), aborter=_CutAtOnce())
    seen = []
    results = engine.process(_image(), on_result=seen.append)
    # stage 0 is never cut off; stage 1's call is stopped by ONNX Runtime's terminate flag
    assert [(r.stage, r.is_final, r.stop_reason) for r in results] == [(0, False, ""), (0, True, "deadline")]
    assert seen == results and results[1].detections == results[0].detections
    engine.aborter.close()
    engine.aborter = Aborter()  # the same sessions run the next frame to the end
    assert [r.stage for r in engine.process(_image())] == [0, 1, 2]
    engine.close()


def test_aborter_sets_terminate_at_the_armed_time_unless_disarmed():
    aborter = Aborter()
    _, past = aborter.arm(time.perf_counter() - 1.0)
    assert past.terminate  # already late: stopped at once
    _, soon = aborter.arm(time.perf_counter() + 0.05)
    handle, disarmed = aborter.arm(time.perf_counter() + 0.05)
    assert not soon.terminate
    aborter.disarm(handle)
    deadline = time.perf_counter() + 5.0
    while not soon.terminate and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert soon.terminate and not disarmed.terminate
    aborter.close()


def test_a_graph_call_stopped_by_its_run_options_raises_stage_aborted(tiny_model):
    model = AnytimeModel(tiny_model)
    size = model.manifest.input.size
    _, options = Aborter().arm(time.perf_counter() - 1.0)
    with pytest.raises(StageAborted):
        model.run_stage_outputs(0, np.zeros((1, 3, size, size), np.float32), {}, options)
