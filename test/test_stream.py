"""Streaming evaluation: the profile arithmetic on a hand-built stream (what a subscriber holds tau
ms after receipt, scored with pycocotools), and one short real run of the harness (real node
process, real bag, real DDS; no timing assertions)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from anytime_perception.eval.stream_score import Answer, available_at, map50_at, profile, stream_summary

BOX = (100.0, 100.0, 200.0, 200.0)
WRONG = (300.0, 300.0, 340.0, 340.0)  # IoU 0 with BOX
TRUTHS = [(np.array([BOX], np.float32), np.array([0]))] * 3


def _stream() -> list[list[Answer]]:
    return [
        # frame 0: a wrong preliminary at 3 ms, the right box refined at 12 ms (final)
        [Answer(3.0, 0, False, "", (("sign", 0.9, WRONG),)), Answer(12.0, 1, True, "complete", (("sign", 0.9, BOX),))],
        # frame 1: right at once, stopped for load
        [Answer(4.0, 0, True, "load", (("sign", 0.8, BOX),))],
        # frame 2: never answered (dropped by the node)
        [],
    ]


def test_available_at_takes_the_latest_answer_within_tau():
    frame = _stream()[0]
    assert available_at(frame, 2.9) is None
    assert available_at(frame, 3.0).stage == 0
    assert available_at(frame, 11.9).stage == 0
    assert available_at(frame, 12.0).stage == 1 and available_at(frame, 1e9).stage == 1


def test_profile_scores_what_was_available_at_each_tau():
    answers = _stream()
    # 2 ms: nothing published yet for any frame
    assert map50_at(TRUTHS, answers, ["sign"], 2) == 0.0
    # 5 ms: frame 0 holds the wrong box (score 0.9, a false positive ranked first), frame 1 the
    # right one: precision 1/2 up to recall 1/3 -> 34 of COCO's 101 recall points at 0.5
    assert map50_at(TRUTHS, answers, ["sign"], 5) == pytest.approx(0.5 * 34 / 101, abs=1e-4)
    # 20 ms: both right, frame 2 still missed: precision 1 up to recall 2/3 -> 67 of 101 points
    assert map50_at(TRUTHS, answers, ["sign"], 20) == pytest.approx(67 / 101, abs=1e-4)
    assert profile(TRUTHS, answers, ["sign"], (2, 5, 20)) == pytest.approx(
        {"2": 0.0, "5": 0.1683, "20": 0.6634}, abs=1e-4)


def test_unknown_labels_are_dropped_and_sizes_must_match():
    answers = [[Answer(1.0, 0, True, "", (("cat", 0.9, BOX),))], [], []]
    assert map50_at(TRUTHS, answers, ["sign"], 10) == 0.0
    with pytest.raises(ValueError, match="3 frames of ground truth but 2"):
        map50_at(TRUTHS, answers[:2], ["sign"], 10)


def test_stream_summary_counts_answers_finals_and_reasons():
    summary = stream_summary(_stream(), deadline_ms=10.0)
    assert summary == {"frames": 3, "answered": 2, "final_in_deadline": 1,
                       "final_stage_histogram": {"0": 1, "1": 1}, "stop_reasons": {"complete": 1, "load": 1},
                       "cut_off_at_deadline": 0}
    # a frame whose stage 1 was started and cut off: stage 0, then stage 0 again as the final;
    # one stopped before stage 1 by the prediction: stage 0 final at once
    cut = [Answer(3.0, 0, False, "", ()), Answer(9.0, 0, True, "deadline", ())]
    skipped = [Answer(3.0, 0, True, "deadline", ())]
    summary = stream_summary([cut, skipped], deadline_ms=10.0)
    assert summary["stop_reasons"] == {"deadline": 2} and summary["cut_off_at_deadline"] == 1


def test_short_real_run_of_the_harness(road_signs_root, tmp_path):
    """`anytime_bag make` on six validation frames, then the harness: the real node on the anytime
    model (with its modes' load ceiling and with a lower one) and on its static full graph, one
    busy process."""
    import subprocess

    from anytime_perception.eval import stream

    from conftest import REPO

    bag = tmp_path / "six.mcap"
    done = subprocess.run(["anytime_bag", "make", "--images", str(road_signs_root), "--split", "val", "--limit", "6",
                           "--rate", "10", "--out", str(bag)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "stream.json"
    model = REPO / "models" / "road_signs_anywidth"
    code = stream.main(["--bag", str(bag), "--model", str(model), "--modes", "normal", "--ceiling-variants", "normal=0.5",
                        "--static", str(model / "static"), "--rates", "10", "--contention", "1",
                        "--json", str(out), "--plot", str(tmp_path / "stream.png")])
    assert code == 0
    report = json.loads(out.read_text())
    assert [r["system"] for r in report["runs"]] == ["anytime:normal", "anytime:normal:ceiling=0.5",
                                                      "static:road_signs_anywidth"]
    for run in report["runs"]:
        assert run["frames"] == 6 and run["contention"] == 1 and run["rate_hz"] == 10
        assert list(run["profile"]) == ["2", "5", "10", "20", "33", "50", "100"]
        assert all(0.0 <= v <= 1.0 for v in run["profile"].values())
        assert 0 <= run["final_in_deadline"] <= run["answered"] <= 6
        assert run["competitor_cpu_share"] is not None and run["deadline_ms"] == 50.0
    static = report["runs"][-1]
    assert set(static["final_stage_histogram"]) <= {"0"}  # one stage: every answer is final
    assert (tmp_path / "stream.png").stat().st_size > 0


def test_harness_rejects_bad_inputs(tmp_path, capsys):
    from anytime_perception.eval import stream

    assert stream.main(["--bag", str(tmp_path / "none.mcap"), "--model", "road_signs_anywidth"]) == 2
    assert "none" in capsys.readouterr().err
    bad = tmp_path / "x.coco.json"
    bad.write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    with pytest.raises(ValueError, match="stamp_ns"):
        stream.load_stream_annotations(bad)


def test_ceiling_variants_are_parsed_with_reasons():
    from anytime_perception.eval.stream import parse_ceiling_variants

    assert parse_ceiling_variants(["normal=0.9", "power_saving=1"]) == [("normal", 0.9), ("power_saving", 1.0)]
    for bad in ("normal", "normal=0", "normal=1.5", "=0.5", "normal=high"):
        with pytest.raises(ValueError, match="MODE=CEILING"):
            parse_ceiling_variants([bad])
