"""Appeals in the runtime (no ROS): a little model's q(x) sends frames to a real big model (the
shipped detector on real road-sign frames) in a worker thread; the preliminary answer never waits,
an answer in time becomes the final, a late one is dropped and counted."""
from __future__ import annotations

import time

import numpy as np
import pytest

from anytime_perception.data import load_split, read_rgb
from anytime_perception.runtime import AnytimeEngine, AnytimeModel, ManifestError, load_manifest
from anytime_perception.runtime.appeal import Appealer, BigModel, LocalAppealClient, appealing_modes
from anytime_perception.runtime.modes import ModeError, parse_modes

from conftest import write_tiny_model

MODES = {"normal": {"mac_budget": 1.0, "deadline_ms": 2000.0, "cpu_load_ceiling": 1.0,
                    "appeal": {"max_accuracy_drop": 0.01}},
         "power_saving": {"mac_budget": 1.0, "deadline_ms": 2000.0, "cpu_load_ceiling": 1.0}}


def _modes(deadline_ms: float = 2000.0):
    return parse_modes({"modes": {name: {**spec, "deadline_ms": deadline_ms} for name, spec in MODES.items()}}, 1000)


@pytest.fixture(scope="module")
def big(shipped_model_dir):
    return BigModel(AnytimeModel(shipped_model_dir), score_threshold=0.05)


@pytest.fixture(scope="module")
def frame(road_signs_root):
    """A real road-sign frame on which the big detector finds something."""
    return read_rgb(load_split(road_signs_root, "val")[0].image_path)


def _engine(tmp_path, big, q: float, appeal: dict[str, float], deadline_ms: float = 2000.0, stages: int = 2):
    little = write_tiny_model(tmp_path / "little", [q, 0.9][:stages], [100, 200][:stages], appeal=appeal)
    model, modes = AnytimeModel(little), _modes(deadline_ms)
    appealer = Appealer.for_model(model.manifest, modes, LocalAppealClient(big), probe_period_s=60.0)
    return AnytimeEngine(model, modes, "normal", score_threshold=0.05, appealer=appealer)


def test_unsure_frame_is_appealed_and_the_big_answer_is_final(tmp_path, big, frame):
    engine = _engine(tmp_path, big, q=0.2, appeal={"normal": 0.5})
    seen = []
    results = engine.process(frame, on_result=seen.append)
    assert seen[0].stage == 0 and not seen[0].is_final and seen[0].source == "local"  # preliminary first
    final = results[-1]
    assert final.is_final and final.stop_reason == "appealed" and final.source == "appeal"
    assert final.stage == final.num_stages == 2
    assert final.macs == results[-2].macs  # the big network's MACs are not the vehicle's
    expected = big.answer(frame).detections
    assert [(d.label, round(d.score, 4)) for d in final.detections] == [(d.label, round(d.score, 4)) for d in expected]
    assert final.detections, "the big detector finds the road sign"
    summary = engine.appealer.summary()
    assert summary["appeals_sent"] == 1 and summary["appeals_answered"] == 1
    assert summary["appeal_round_trip_p50_ms"] > 0 and summary["appeal_bytes_mean"] == frame.nbytes


def test_sure_frame_and_modes_without_appeals_stay_local(tmp_path, big, frame):
    sure = _engine(tmp_path / "sure", big, q=0.8, appeal={"normal": 0.5})
    results = sure.process(frame)
    assert results[-1].source == "local" and results[-1].stop_reason == "complete"
    assert sure.appealer.summary()["appeals_candidates"] == 0
    unsure = _engine(tmp_path / "mode", big, q=0.2, appeal={"normal": 0.5, "power_saving": 0.5})
    assert unsure.process(frame)[-1].source == "appeal"
    unsure.set_mode("power_saving")  # the manifest has a threshold, but the modes file allows no appeals
    assert unsure.process(frame)[-1].source == "local"
    assert unsure.appealer.summary()["appeals_sent"] == 1


def test_late_answer_is_dropped_and_the_deadline_holds(tmp_path, big, frame):
    engine = _engine(tmp_path, big, q=0.2, appeal={"normal": 0.5}, deadline_ms=3.0, stages=1)
    live = engine.start(frame)
    final = engine.refine(live)[-1]
    future = live.appeal.submission.future
    # the wait ended at the 3 ms deadline, before the big detector (436 M MACs) could answer
    assert not (future.done() and not future.cancelled())
    assert final.source == "local" and final.stop_reason == "deadline"
    assert engine.appealer.summary()["appeals_timed_out"] == 1
    end = time.monotonic() + 10
    while not future.done() and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.05)  # the done-callback runs right after
    summary = engine.appealer.summary()
    assert summary["appeals_answered"] == 0  # never used ...
    assert summary["appeals_late"] == 1 or future.cancelled()  # ... dropped on arrival, or never started


def test_an_appeal_that_fails_at_once_leaves_local_refinement_untouched(tmp_path, big, frame):
    engine = _engine(tmp_path, big, q=0.2, appeal={"normal": 0.5})
    engine.appealer.close()  # the transport is gone: submitting fails
    results = engine.process(frame)
    assert [r.stage for r in results] == [0, 1]  # stage 1 still runs
    assert results[-1].source == "local" and results[-1].stop_reason == "complete"
    summary = engine.appealer.summary()
    assert summary["appeals_sent"] == 1 and summary["appeals_failed"] == 1 and summary["appeals_timed_out"] == 0


def test_round_trip_must_fit_the_time_left(tmp_path, big, frame):
    engine = _engine(tmp_path, big, q=0.2, appeal={"normal": 0.5})
    engine.process(frame)  # one real round trip measured
    rtt = engine.appealer.round_trip.predict()
    assert rtt is not None and rtt > 0
    appealer = engine.appealer
    now = time.perf_counter()
    assert not appealer.should_appeal(0, {"confidence": 0.2}, "normal", rtt / 10, now)  # probe not due (60 s)
    assert appealer.summary()["appeals_skipped_round_trip"] == 1
    assert appealer.should_appeal(0, {"confidence": 0.2}, "normal", rtt * 10, now)
    assert not appealer.should_appeal(0, {"confidence": 0.7}, "normal", rtt * 10, now)  # sure enough
    assert not appealer.should_appeal(1, {"confidence": 0.2}, "normal", rtt * 10, now)  # not the appeal stage


def test_unanswered_appeals_make_the_server_unresponsive_until_it_answers(tmp_path, big, frame):
    messages = []
    engine = _engine(tmp_path, big, q=0.2, appeal={"normal": 0.5}, deadline_ms=20.0, stages=1)
    appealer = engine.appealer
    appealer.on_health_change = messages.append
    with big._lock:  # the big model is busy elsewhere: no appeal can be answered
        for _ in range(appealer.max_unanswered):
            assert engine.process(frame)[-1].stop_reason == "deadline"
        assert appealer.health == "unresponsive" and "did not answer 3 appeals" in messages[-1]
        assert engine.process(frame)[-1].source == "local"
        assert appealer.summary()["appeals_skipped_unresponsive"] == 1  # no probe before 60 s
    end = time.monotonic() + 10
    while appealer.health != "ok" and time.monotonic() < end:  # the first appeal was running: it ends late
        time.sleep(0.01)
    assert appealer.health == "ok" and messages[-1] == "appeal server answers again"
    assert appealer.summary()["appeals_late"] == 1 and appealer.summary()["appeals_timed_out"] == 3


def test_manifest_and_modes_validate_the_appeal_sections(tmp_path):
    little = write_tiny_model(tmp_path / "ok", [0.2], [100], appeal={"normal": 0.4})
    spec = load_manifest(little).appeal
    assert (spec.stage, spec.confidence, spec.big_model, spec.thresholds) == (0, "confidence", "road_signs_anywidth",
                                                                              {"normal": 0.4})
    manifest = little / "manifest.yaml"
    for bad, field in (("confidence: confidence", "confidence: q"), ("stage: 0", "stage: 3"),
                       ("normal: 0.4", "normal: 1.5")):
        manifest.write_text(manifest.read_text().replace(bad, field))
        with pytest.raises(ManifestError, match="appeal"):
            load_manifest(little)
        manifest.write_text(manifest.read_text().replace(field, bad))
    with pytest.raises(ModeError, match="modes.normal.appeal"):
        parse_modes({"modes": {"normal": {"mac_budget": 1.0, "deadline_ms": 10, "cpu_load_ceiling": 1,
                                          "appeal": {"max_mean_macs": 0.2}}}}, 1000)
    table = parse_modes({"modes": {"a": {"mac_budget": 1.0, "deadline_ms": 10, "cpu_load_ceiling": 1, "appeal": False},
                                   "b": {**MODES["normal"]}}}, 1000)
    assert not table.get("a").appeals and table.get("b").appeal_target == ("max_accuracy_drop", 0.01)
    assert np.isfinite(table.get("b").deadline_ms)


def test_a_model_appealing_to_its_own_full_model_appeals_only_where_its_budget_stops_it(tmp_path):
    little = write_tiny_model(tmp_path / "own", [0.2, 0.9], [100, 900], appeal={"normal": 0.5, "minimal": 0.5})
    manifest_file = little / "manifest.yaml"
    manifest_file.write_text(manifest_file.read_text().replace("big_model: road_signs_anywidth", "big_model: tiny"))
    manifest = load_manifest(little)
    modes = parse_modes({"modes": {"normal": {**MODES["normal"]},
                                   "minimal": {**MODES["normal"], "mac_budget": 0.1},
                                   "power_saving": {**MODES["power_saving"], "mac_budget": 0.1}}}, 1000)
    assert appealing_modes(manifest, "tiny", modes) == ["minimal"]  # normal runs the last stage itself
    assert appealing_modes(manifest, "a_bigger_model", modes) == ["normal", "minimal"]
