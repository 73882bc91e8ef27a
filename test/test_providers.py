"""Execution providers as asked for and as got: a provider this onnxruntime lacks is dropped with
a warning (or refused when strict), the providers each session got are reported, and the
IOBinding path that keeps the carry on a GPU gives the same outputs as the plain one (on the CPU,
where CI runs it)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from anytime_perception.runtime.engine import AnytimeEngine
from anytime_perception.runtime.model import AnytimeModel, ProviderError
from anytime_perception.runtime.modes import default_modes_file, load_modes
from anytime_perception.runtime.preprocess import Preprocessor

from conftest import REPO

DETECTOR = REPO / "models" / "road_signs_anywidth"
CLASSIFIER = REPO / "models" / "cifar10_resnet20_pteenet"
MISSING = "CUDAExecutionProvider" if "CUDAExecutionProvider" not in ort.get_available_providers() else None
needs_cpu_build = pytest.mark.skipif(MISSING is None, reason="this onnxruntime has CUDA; the test needs one without")


def test_sessions_report_the_providers_they_got():
    model = AnytimeModel(DETECTOR, threads=1)
    assert model.session_providers == [("CPUExecutionProvider",)] * model.num_stages
    assert model.provider_warnings == [] and model.device == "cpu" and not model.device_carry


@needs_cpu_build
def test_a_missing_provider_is_dropped_with_a_warning_or_refused_when_strict():
    model = AnytimeModel(DETECTOR, providers=[MISSING, "CPUExecutionProvider"], threads=1)
    assert model.providers == ("CPUExecutionProvider",)
    assert model.requested_providers == (MISSING, "CPUExecutionProvider")
    assert len(model.provider_warnings) == 1 and MISSING in model.provider_warnings[0]
    assert "onnxruntime-gpu" in model.provider_warnings[0]
    with pytest.raises(ProviderError, match=MISSING):
        AnytimeModel(DETECTOR, providers=[MISSING, "CPUExecutionProvider"], strict_providers=True)
    with pytest.raises(ProviderError, match="not available"):  # nothing left to run on
        AnytimeModel(DETECTOR, providers=[MISSING])
    with pytest.raises(ValueError, match="empty"):
        AnytimeModel(DETECTOR, providers=[])


@pytest.mark.parametrize("path", [DETECTOR, CLASSIFIER], ids=["detector", "classifier"])
def test_bound_carry_gives_the_same_outputs_as_host_carry(path):
    plain = AnytimeModel(path, threads=1)
    bound = AnytimeModel(path, threads=1, device_carry=True)
    size = plain.manifest.input.size
    rng = np.random.default_rng(0)
    for _ in range(2):  # a second frame: the image bound at stage 0 is the new one
        x, _ = Preprocessor(plain.manifest.input)(rng.integers(0, 256, (size, size + 40, 3), dtype=np.uint8))
        steps = list(bound.stages(x))
        for a, b in zip(plain.stages(x), steps, strict=True):
            assert a.heads.keys() == b.heads.keys()
            for key in a.heads:
                np.testing.assert_allclose(a.heads[key], b.heads[key], rtol=0, atol=1e-6)
            assert a.confidences == pytest.approx(b.confidences, abs=1e-6)
        carried = [v for s in steps for v in s.carry.values()]
        assert carried and all(isinstance(v, ort.OrtValue) for v in carried)  # never copied to numpy


def test_engine_gives_the_same_detections_on_a_bound_carry(road_signs_root):
    from anytime_perception.data import load_split, read_rgb

    image = read_rgb(load_split(road_signs_root, "val")[0].image_path)
    runs = []
    for device_carry in (False, True):
        model = AnytimeModel(DETECTOR, threads=1, device_carry=device_carry)
        engine = AnytimeEngine(model, load_modes(default_modes_file(), model.manifest.total_macs), "performance",
                               warmup_runs=1)
        try:
            results = engine.process(image)
        finally:
            engine.close()
        assert [r.stage for r in results] == list(range(len(results))) and results[-1].is_final
        runs.append(results)
    # the scheduler may stop the two at different stages (deadline, load); each common stage agrees
    for plain, bound in zip(*runs):
        assert [d.label for d in plain.detections] == [d.label for d in bound.detections]
        for a, b in zip(plain.detections, bound.detections):
            assert a.score == pytest.approx(b.score, abs=1e-5)
    assert any(r.detections for r in runs[0])
