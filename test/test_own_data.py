"""Bring your own data: COCO, YOLO and VOC sets with other classes, read, trained with the one
command, deployed in the real node; bad data gets a message naming the file, never a traceback.

The sets are built here from real road_signs photos, relabelled to other names and class counts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from anytime_perception.data import DataError, load_split, open_detection, read_detection, read_rgb
from anytime_perception.data.convert import main as convert
from anytime_perception.data.writers import write_coco as save_coco, write_voc as save_voc, write_yolo as save_yolo
from anytime_perception.eval.__main__ import evaluate_detector
from anytime_perception.nets import build_model
from anytime_perception.nets.checkpoint import load_checkpoint, load_matching
from anytime_perception.runtime import AnytimeModel

from conftest import ROAD_SIGNS, SHIPPED_MODEL
from ros_probe import node_and_probe

DOMAIN = 20 + (os.getpid() + 37) % 70
TWO = {"speedlimit": "sign", "crosswalk": "sign", "stop": "sign", "trafficlight": "light"}
FIVE = {"speedlimit": "limit", "crosswalk": "crossing", "stop": "halt", "trafficlight": "signal"}


def _road_sign_boxes(count: int) -> list[tuple[Path, np.ndarray, list[str]]]:
    """(image, boxes, road-sign class names) of ``count`` annotated images with every class among
    them: the first four with a stop sign, then the first others."""
    data = read_detection(ROAD_SIGNS)
    stop = data.labels.index("stop")
    with_stop = [s for s in data.samples if stop in s.labels][:4]
    chosen = with_stop + [s for s in data.samples if s not in with_stop][: count - len(with_stop)]
    return [(s.image_path, s.boxes, [data.labels[c] for c in s.labels]) for s in chosen]


def _rename(items, mapping: dict[str, str], fifth: str | None = None):
    """Relabelled items; with ``fifth``, every third box becomes that class (a five-class set)."""
    out = []
    for n, (image, boxes, names) in enumerate(items):
        new = [mapping[c] for c in names]
        if fifth and n % 3 == 0:
            new = [fifth] * len(new)
        out.append((image, boxes, new))
    return out


def write_voc(root: Path, items) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for image, boxes, names in items:
        shutil.copy(image, root / "images" / image.name)
        h, w = read_rgb(image).shape[:2]
        objects = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                          f"<ymax>{b[3]}</ymax></bndbox></object>" for b, n in zip(boxes, names))
        (root / "annotations" / f"{image.stem}.xml").write_text(
            f"<annotation><filename>{image.name}</filename><size><width>{w}</width><height>{h}</height></size>"
            f"{objects}</annotation>")
    return root


def write_coco(root: Path, items, category_ids: dict[str, int]) -> Path:
    """COCO JSON with images in ``root/images`` and the given (non-contiguous) category ids."""
    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    for i, (image, boxes, names) in enumerate(items, 1):
        shutil.copy(image, root / "images" / image.name)
        h, w = read_rgb(image).shape[:2]
        images.append({"id": i, "file_name": image.name, "width": w, "height": h})
        for b, n in zip(boxes, names):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": category_ids[n],
                                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                                "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
    categories = [{"id": c, "name": n} for n, c in category_ids.items()]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def write_yolo(root: Path, train_items, val_items, names: list[str], names_as_dict: bool = False) -> Path:
    for split, items in (("train", train_items), ("val", val_items)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image, boxes, labels in items:
            shutil.copy(image, root / "images" / split / image.name)
            h, w = read_rgb(image).shape[:2]
            lines = [f"{names.index(n)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} "
                     f"{(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}" for b, n in zip(boxes, labels)]
            (root / "labels" / split / f"{image.stem}.txt").write_text("\n".join(lines) + "\n")
    table = dict(enumerate(names)) if names_as_dict else names
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": table}))
    return root


@pytest.fixture(scope="module")
def items():
    return _road_sign_boxes(36)


def _boxes_by_image(data) -> dict[str, list[tuple[str, tuple]]]:
    return {s.image_path.name: sorted((data.labels[c], tuple(np.round(b, 1))) for b, c in zip(s.boxes, s.labels))
            for s in data.samples}


def test_the_three_formats_read_the_same_boxes_and_classes_from_the_data(items, tmp_path):
    two = _rename(items, TWO)
    voc = read_detection(write_voc(tmp_path / "voc", two))
    coco = read_detection(write_coco(tmp_path / "coco", two, {"sign": 7, "light": 3}))  # ids not contiguous
    yolo = read_detection(write_yolo(tmp_path / "yolo", two, two[:4], ["sign", "light"]))
    assert voc.format == "voc" and coco.format == "coco" and yolo.format == "yolo"
    assert voc.labels == ("light", "sign")  # VOC: sorted names found
    assert coco.labels == ("light", "sign")  # COCO: category names in id order (3, 7)
    assert yolo.labels == ("sign", "light")  # YOLO: data.yaml names
    assert len(voc) == len(coco) == len(yolo) == 36 and not (voc.issues or coco.issues or yolo.issues)
    reference = _boxes_by_image(voc)
    for other in (coco, yolo):
        got = _boxes_by_image(other)
        assert got.keys() == reference.keys()
        for name, boxes in reference.items():
            assert [n for n, _ in got[name]] == [n for n, _ in boxes]
            assert np.allclose([b for _, b in got[name]], [b for _, b in boxes], atol=0.6)


def test_the_package_writers_round_trip_and_convert_renames(tmp_path):
    source = read_detection(ROAD_SIGNS).subset(20, seed=1)
    reference = _boxes_by_image(source)
    written = [read_detection(save_coco(source, tmp_path / "coco" / "instances.json")),
               read_detection(save_yolo(source, tmp_path / "yolo")),
               read_detection(save_voc(source, tmp_path / "voc"))]
    for data in written:
        assert data.labels == source.labels or data.format == "voc"  # VOC: sorted names found
        got = _boxes_by_image(data)
        assert got.keys() == reference.keys()
        for name, boxes in reference.items():
            assert [n for n, _ in got[name]] == [n for n, _ in boxes]
            assert np.allclose([b for _, b in got[name]], [b for _, b in boxes], atol=0.6)
    out = tmp_path / "two" / "instances.json"
    assert convert(["--data", str(tmp_path / "voc"), "--to", "coco", "--out", str(out),
                    "--rename", ",".join(f"{k}={v}" for k, v in TWO.items())]) == 0
    two = read_detection(out)
    assert set(two.labels) == {"sign", "light"} and two.num_boxes == source.num_boxes
    assert convert(["--data", str(tmp_path / "voc"), "--to", "coco", "--out", str(out), "--rename", "bicycle=x"]) == 2


def test_splits_and_a_separate_validation_set(items, tmp_path):
    five = _rename(items, FIVE, fifth="bicycle")
    yolo_root = write_yolo(tmp_path / "yolo", five[:30], five[30:], ["limit", "crossing", "halt", "signal", "bicycle"],
                           names_as_dict=True)
    train, val = open_detection(yolo_root)  # YOLO: its own val split
    assert (len(train), len(val)) == (30, 6) and train.labels == val.labels and len(train.labels) == 5
    voc_root = write_voc(tmp_path / "voc", five)
    train, val = open_detection(voc_root)  # seeded 80/20 split, the same every time
    assert (len(train), len(val)) == (29, 7)
    assert [s.image_path for s in open_detection(voc_root)[1]] == [s.image_path for s in val]
    train, val = open_detection(voc_root, val_data=yolo_root)  # any format validates any other
    assert len(train) == 36 and len(val) == 6 and val.labels == train.labels
    only = load_split(voc_root, "all", classes=["halt", "bicycle"])  # --classes: these, in this order
    assert only.labels == ("halt", "bicycle") and only.ignored and set(only.ignored) <= {"limit", "crossing", "signal"}


def _broken_voc(root: Path, items) -> Path:
    write_voc(root, _rename(items[:12], TWO))
    ann, img = root / "annotations", root / "images"
    (img / items[0][0].name).unlink()                                   # missing image
    (img / items[1][0].name).write_bytes(b"not a jpeg")                  # unreadable image
    xml = (ann / f"{items[2][0].stem}.xml").read_text()
    (ann / f"{items[2][0].stem}.xml").write_text(xml.replace("<xmax>", "<xmax>9999", 1))  # box outside the image
    xml = (ann / f"{items[3][0].stem}.xml").read_text()
    (ann / f"{items[3][0].stem}.xml").write_text(xml.split("<xmax>")[0] + "<xmax>0</xmax><ymax>0</ymax>"
                                                  "</bndbox></object></annotation>")  # zero area
    (ann / f"{items[4][0].stem}.xml").write_text("<annotation><object>")  # not XML
    return root


def test_bad_data_is_skipped_and_counted_with_the_file_named(items, tmp_path):
    root = _broken_voc(tmp_path / "voc", items)
    data = read_detection(root)
    assert len(data) == 7 and len(data.issues) == 5
    problems = "\n".join(map(str, data.issues))
    for needle in (f"{items[0][0].stem}.xml: no image", f"{items[1][0].name}: image cannot be decoded",
                   "lies outside the", "zero or negative area", f"{items[4][0].stem}.xml: not valid XML"):
        assert needle in problems, problems
    with pytest.raises(DataError, match="5 problem"):
        data.finish(strict=True)

    coco = write_coco(tmp_path / "coco", _rename(items[:6], TWO), {"sign": 1, "light": 2})
    content = json.loads(coco.read_text())
    content["annotations"][0]["category_id"] = 42
    coco.write_text(json.dumps(content))
    data = read_detection(coco)
    assert len(data) == 5 and "unknown category id 42" in str(data.issues[0])

    yolo = write_yolo(tmp_path / "yolo", _rename(items[:6], TWO), _rename(items[6:8], TWO), ["sign", "light"])
    label = next((yolo / "labels" / "train").glob("*.txt"))
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    data = read_detection(yolo)
    assert len(data) == 5 and f"{label}: line 1: class 7 is not in 0..1" in str(data.issues[0])

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "annotations").mkdir()
    with pytest.raises(DataError, match="no usable annotated images"):
        open_detection(empty)
    with pytest.raises(DataError, match="cannot tell the dataset format"):
        open_detection(tmp_path)


def _train(*args: str, timeout: float = 600, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The one command, as a user runs it (the installed console script), from ``cwd``."""
    return subprocess.run(["anytime_train", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})


def test_train_command_rejects_bad_input_with_one_clear_line(items, tmp_path):
    root = _broken_voc(tmp_path / "voc", items)
    done = _train("--data", str(root), "--out", str(tmp_path / "m"), "--strict", "--epochs", "1")
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr.startswith("error: 5 problem(s)") and "not valid XML" in done.stderr
    done = _train("--data", str(root), "--out", str(tmp_path / "m"), "--input-size", "300", "--steps", "train")
    assert done.returncode == 2 and "input size 300 is not a positive multiple of the network stride 32" in done.stderr
    done = _train("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"))
    assert done.returncode == 2 and "no such file or folder" in done.stderr and "Traceback" not in done.stderr


def test_fine_tuning_keeps_the_rows_of_the_classes_both_models_have():
    shipped = load_checkpoint(SHIPPED_MODEL)
    model = build_model(shipped["family"], num_classes=2, input_size=320)
    skipped = load_matching(model, shipped, ("stop", "bicycle"))
    old = shipped["labels"].index("stop")
    for k in range(model.num_stages):
        new = model.heads[k].heatmap.weight
        assert torch.equal(new[0], shipped["model"][f"heads.{k}.heatmap.weight"][old])
        assert torch.equal(model.heads[k].size.weight, shipped["model"][f"heads.{k}.size.weight"])
    assert any("bicycle" in s for s in skipped) and not any("layers." in s for s in skipped)


def test_coco_map50_agrees_with_the_voc_ap_of_the_earlier_results(shipped_model_dir):
    rows = evaluate_detector(AnytimeModel(shipped_model_dir), ROAD_SIGNS)
    for row in rows:
        assert abs(row["map50"] - row["map50_voc"]) < 0.01, row
        assert 0 < row["map"] < row["map50"]
    assert rows[-1]["map50"] > 0.7  # the shipped detector's final stage, as documented


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_one_command_trains_exports_calibrates_and_the_node_publishes_the_new_classes(items, tmp_path, fmt):
    if fmt == "coco":
        names = {"sign", "light"}
        data = write_coco(tmp_path / "set", _rename(items, TWO), {"sign": 5, "light": 9})
    elif fmt == "voc":
        names = {"limit", "crossing", "halt", "signal"}
        data = write_voc(tmp_path / "set", _rename(items, FIVE))
    else:
        names = {"limit", "crossing", "halt", "signal", "bicycle"}
        five = _rename(items, FIVE, fifth="bicycle")
        data = write_yolo(tmp_path / "set", five[:28], five[28:], sorted(names))
    out, run = tmp_path / "models" / f"own_{fmt}", tmp_path / "runs" / f"own_{fmt}"
    done = _train("--data", str(data), "--out", str(out), "--run-dir", str(run), "--epochs", "2", "--input-size", "128",
                  "--batch-size", "8", "--val-every", "1", "--warmup-epochs", "0", "--threads", "2",
                  cwd=tmp_path)  # the package's modes file is found from anywhere
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for f in ("best.pt", "last.pt", "results.csv", "results.png", "eval.json"):
        assert (run / f).is_file(), f
    assert len((run / "results.csv").read_text().splitlines()) == 3  # header + 2 epochs
    report = json.loads((run / "eval.json").read_text())
    assert len(report["stages"]) == 3 and set(report["stages"][0]["per_class"]) == names
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert set(manifest["labels"]) == names and manifest["gate"]["rule"] == "policy"
    assert load_checkpoint(out)["labels"] == manifest["labels"]

    frame = cv2.resize(read_rgb(items[0][0]), (640, 480))
    with node_and_probe(DOMAIN + ["coco", "yolo", "voc"].index(fmt), frame, "-p", f"model:={out}", "-p", "score_threshold:=0.02",
                        "-p", "vehicle_mode:=performance") as peer:
        peer.send_in_turn([frame] * 2, 100)
        published = {d.label for _, m in peer.messages("refined") for d in m.detections}
    assert published and published <= names, published
