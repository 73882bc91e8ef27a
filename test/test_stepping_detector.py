"""SteppingNet detector on real road-sign images: training steps, increment export, the engine runs it."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from anytime_perception.data import load_split, read_rgb
from anytime_perception.export.stages import verify_stages
from anytime_perception.export.stepping import export_stepping, head_outputs
from anytime_perception.nets.stepping import SteppingSpec
from anytime_perception.nets.stepping_detector import CENTERNET_CHAIN, CENTERNET_NECK, OUTPUT_STRIDE, stepping_centernet
from anytime_perception.runtime import AnytimeEngine, AnytimeModel
from anytime_perception.runtime.modes import load_modes
from anytime_perception.training.dataset import MEAN, STD, DetectionDataset
from anytime_perception.training.stepping import SteppingConfig, assign_regular_levels, make_optimizer, train_batch
from anytime_perception.training.stepping_tasks import detection_loss

from conftest import MODES_FILE

CLASSES = ("speedlimit", "crosswalk", "trafficlight", "stop")  # road_signs' classes, in the order the tests use


def _small_detector(spec: SteppingSpec) -> torch.nn.Module:
    """The detector at a quarter of its width with three any-width subnets (fast on a CPU)."""
    model = stepping_centernet(len(CLASSES), num_subnets=3, expansion=0.25, spec=spec)
    full = model.macs(0)
    assign_regular_levels(model, [full // 10, full // 3, full])
    return model


DETECTORS = pytest.mark.parametrize("spec", [CENTERNET_CHAIN, CENTERNET_NECK], ids=lambda s: s.name)


@DETECTORS
def test_detector_geometry_matches_the_centernet_targets(spec):
    model = stepping_centernet(len(CLASSES), spec=spec)
    assert model.spec.input_size // OUTPUT_STRIDE == round(model.final_hw ** 0.5) == 40
    assert model.spec.num_classes == len(CLASSES) + 4 == spec.num_classes


@DETECTORS
def test_detector_trains_exports_and_runs_in_the_engine(road_signs_root, tmp_path, spec):
    torch.manual_seed(0)
    model = _small_detector(spec)
    data = DetectionDataset.from_path(road_signs_root, "train", 320, OUTPUT_STRIDE, None, classes=CLASSES)
    images, targets = next(iter(DataLoader(data, 4)))
    loss_fn = partial(detection_loss, gamma=1.0, num_classes=len(CLASSES))
    cfg = SteppingConfig(lr=0.02)
    optimizer = make_optimizer(model, cfg)
    first = train_batch(model, optimizer, images, targets, loss_fn, cfg, None, cfg.beta)
    for _ in range(5):
        last = train_batch(model, optimizer, images, targets, loss_fn, cfg, None, cfg.beta)
    assert all(b < a for a, b in zip(first, last))  # every subnet learns on real boxes

    export_stepping(model.eval(), tmp_path, "stepping_detector_test", CLASSES, tuple(MEAN), tuple(STD))
    image = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        expected = [head_outputs(model, o) for o in model.forward_all(image)]
    assert verify_stages(expected, tmp_path, image) < 1e-3
    runtime = AnytimeModel(tmp_path)
    assert runtime.manifest.task == "detection" and runtime.manifest.decoder.stride == OUTPUT_STRIDE
    assert [s.macs for s in runtime.manifest.stages] == [model.macs(k) - (model.macs(k - 1) if k else 0)
                                                          for k in range(3)]
    engine = AnytimeEngine(runtime, load_modes(MODES_FILE, runtime.manifest.total_macs), "performance")
    frame = read_rgb(load_split(road_signs_root, "val")[0].image_path)
    results = engine.process(frame)
    assert [r.stage for r in results] == [0, 1, 2] and results[-1].is_final
