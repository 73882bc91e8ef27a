"""Manifest validation: good manifests load, bad ones are refused naming the field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from anytime_perception.runtime import AnytimeModel, ManifestError, load_manifest


def _edit(model_dir: Path, change) -> Path:
    path = model_dir / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return model_dir


def test_shipped_manifest_loads_with_measured_macs(shipped_model_dir):
    manifest = load_manifest(shipped_model_dir)
    assert len(manifest.stages) >= 3
    assert all(s.macs > 0 for s in manifest.stages)
    assert manifest.full_model is not None
    # the stages partition the full model's compute up to the small per-stage heads
    assert manifest.full_model.macs <= manifest.total_macs <= 1.25 * manifest.full_model.macs


def test_tiny_manifest_loads(tiny_model):
    manifest = load_manifest(tiny_model / "manifest.yaml")
    assert [s.macs for s in manifest.stages] == [100, 200, 700]
    assert manifest.total_macs == 1000


@pytest.mark.parametrize("change, field", [
    (lambda d: d.pop("stages"), "manifest.stages: missing"),
    (lambda d: d.update(format_version=7), "manifest.format_version"),
    (lambda d: d.update(task="segmentation"), "manifest.task"),
    (lambda d: d["stages"][1].update(macs=-5), "stages[1].macs"),
    (lambda d: d["stages"][1].update(macs="many"), "stages[1].macs: expected int"),
    (lambda d: d["stages"][2].update(file="missing.onnx"), "stages[2].file"),
    (lambda d: d["stages"][1].update(inputs=["image", "carry.7"]), "stages[1].inputs: carry.7"),
    (lambda d: d["stages"][0]["head_outputs"].pop("size"), "stages[0].head_outputs: missing size"),
    (lambda d: d["input"].update(std=[1, 0, 1]), "input.mean/std"),
    (lambda d: d["decoder"].update(type="ssd"), "decoder.type: 'ssd' unsupported for detection"),
    (lambda d: d["decoder"].update(type="softmax"), "decoder.type: 'softmax' unsupported for detection"),
    (lambda d: d["decoder"].update(type="yolo"), "stages[0].head_outputs: missing predictions"),
    (lambda d: d["decoder"].update(type="yolo", nms_iou=1.5), "decoder.nms_iou"),
    (lambda d: d["stages"][0].update(image_input=3), "stages[0].image_input: expected str"),
    (lambda d: d.update(gate={"rule": "confidence", "thresholds": {"confidence": {"normal": [0.5]}}}),
     "gate.thresholds.confidence.normal"),
    (lambda d: d.update(gate={"rule": "msp", "thresholds": {"msp": {"normal": [0.5] * 3}}}),
     "gate.thresholds.msp: stages"),
    (lambda d: d.update(gate={"rule": "policy", "thresholds": {}}), "gate.rule: 'policy' has no thresholds"),
])
def test_bad_manifest_names_the_field(tiny_model, change, field):
    _edit(tiny_model, change)
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_manifest(tiny_model)


def test_invalid_yaml_is_refused(tiny_model):
    (tiny_model / "manifest.yaml").write_text("stages: [unclosed\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(tiny_model)


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_corrupt_onnx_is_refused_on_load(tiny_model):
    (tiny_model / "stage1.onnx").write_bytes(b"\x08\x01garbage, not a protobuf model")
    with pytest.raises(ManifestError, match="stage1.file: .* not a loadable ONNX graph"):
        AnytimeModel(tiny_model)


def test_manifest_inputs_must_match_the_graph(tiny_model):
    _edit(tiny_model, lambda d: d["stages"][1].update(inputs=["image"]))
    with pytest.raises(ManifestError, match="stage1.inputs: manifest says"):
        AnytimeModel(tiny_model)


def test_unknown_provider_is_refused(tiny_model):
    with pytest.raises(ValueError, match="not available"):
        AnytimeModel(tiny_model, providers=["NoSuchExecutionProvider"])


@pytest.mark.parametrize("name", ["road_signs_anywidth", "cifar10_resnet20_pteenet", "cifar10_appealnet_mobilenet"])
def test_the_dataclasses_write_back_exactly_what_they_read(name):
    """One contract: the manifest the runtime reads is the one the export and calibration write."""
    path = Path(__file__).resolve().parents[1] / "models" / name / "manifest.yaml"
    assert load_manifest(path).to_dict() == yaml.safe_load(path.read_text())


def test_an_invalid_manifest_is_not_saved_and_the_old_one_stays(tiny_model):
    from dataclasses import replace

    from anytime_perception.runtime.manifest import save_manifest

    before = (tiny_model / "manifest.yaml").read_text()
    manifest = load_manifest(tiny_model)
    with pytest.raises(ManifestError, match="gate.rule"):
        save_manifest(replace(manifest, gate_rule="entropy_of_nothing", gates={}))
    assert (tiny_model / "manifest.yaml").read_text() == before
    assert not (tiny_model / "manifest.yaml.tmp").exists()
    save_manifest(replace(manifest, name="renamed"))
    assert load_manifest(tiny_model).name == "renamed"
