"""Benchmark: appeals from the vehicle's node to the big network on another host, then the server dies.

    python bench/bench_appeal.py --little models/cifar10_appealnet_mobilenet --big models/cifar10_resnet32 \
        --data ../shared/datasets/cifar10/cifar10_jpg.zip --frames 400 --rate 20
    python bench/bench_appeal.py --little models/road_signs_anywidth --big models/road_signs_anywidth \
        --data ../shared/datasets/road_signs --frames 140 --rate 10

The real ``anytime_node`` (little model, the modes file ``--modes``, mode ``--mode``) and the real
``big_model_node`` run as separate processes; the server sits on another host (a network namespace
joined by a veth pair, over UDP only) where the machine allows it. Frames are replayed at
``--rate``; after the first half the server is killed (SIGKILL: no goodbye). Per phase: the share
of frames appealed, bytes per appealed frame, round trip p50/p99, final latency and deadline
misses, and the quality of the finals vs the preliminary answers (accuracy, or mAP@0.5).
Writes ``docs/results/appeal_benchmark.md`` and ``.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))  # the integration-test harness: a real ROS peer, two hosts

from anytime_perception.data.image_folder import load_image_folder  # noqa: E402
from anytime_perception.data import load_split, read_rgb  # noqa: E402
from anytime_perception.metrics.voc import mean_average_precision  # noqa: E402
from anytime_perception.runtime import load_manifest  # noqa: E402
from netns import two_hosts  # noqa: E402
from ros_probe import node_and_probe, start_node  # noqa: E402

DOMAIN = 60 + os.getpid() % 30


def _frames(data: str, task: str, count: int, size: int, labels: tuple[str, ...]) -> tuple[list[np.ndarray], list]:
    """Frames and their truth: class labels (classification) or (boxes, labels) per frame."""
    if task == "classification":
        test = load_image_folder(data, "test", size).subset(count, 0)
        return list(test.images), list(test.labels)
    samples = load_split(data, "val", classes=labels)[:count]
    return [read_rgb(s.image_path) for s in samples], [(s.boxes, s.labels) for s in samples]


def _quality(messages: list, truth: list, task: str, classes: int) -> float:
    """Accuracy (top detection's class) or mAP@0.5 of one answer per frame."""
    if task == "classification":
        return float(np.mean([bool(m.detections) and m.detections[0].class_id == y for m, y in zip(messages, truth)]))
    predictions: list[list] = [[] for _ in range(classes)]
    for i, m in enumerate(messages):
        for d in m.detections:
            box = np.array([d.center_x - d.width / 2, d.center_y - d.height / 2,
                            d.center_x + d.width / 2, d.center_y + d.height / 2])
            predictions[d.class_id].append((i, d.score, box))
    truths = [{i: b[l == c] for i, (b, l) in enumerate(truth)} for c in range(classes)]
    return mean_average_precision(predictions, truths)[0]


def _replay(peer, frames: list[np.ndarray], first: int, rate: float) -> list[int]:
    stamps = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        peer.publish(frame, first + i)
        stamps.append(first + i)
    peer.wait_until(lambda: all(s in peer.finals() for s in stamps), 10.0)
    return stamps


def _counts(diag: dict) -> dict[str, float]:
    return {k: float(v) for k, v in diag.items() if k.startswith("appeals_")}


def _phase(peer, stamps: list[int], truth: list, task: str, classes: int, before: dict, after: dict) -> dict:
    finals, prelim = peer.finals(), {m.header.stamp.sec: m for _, m in peer.messages("preliminary")}
    answered = [s for s in stamps if s in finals]
    latency = [finals[s].latency_ms for s in answered]
    sent = after.get("appeals_sent", 0) - before.get("appeals_sent", 0)
    return {
        "frames": len(stamps), "finals": len(answered),
        "appealed_share": sent / len(stamps),
        "answered_by_big_share": float(np.mean([finals[s].source == "appeal" for s in answered])),
        "timed_out": after.get("appeals_timed_out", 0) - before.get("appeals_timed_out", 0),
        "late": after.get("appeals_late", 0) - before.get("appeals_late", 0),
        "deadline_misses": int(sum(finals[s].latency_ms > finals[s].deadline_ms for s in answered)),
        "final_latency_p50_ms": float(np.percentile(latency, 50)), "final_latency_p99_ms": float(np.percentile(latency, 99)),
        "deadline_ms": float(finals[answered[0]].deadline_ms),
        "quality_preliminary": _quality([prelim[s] for s in answered], [truth[stamps.index(s)] for s in answered],
                                        task, classes),
        "quality_final": _quality([finals[s] for s in answered], [truth[stamps.index(s)] for s in answered], task, classes),
    }


def run(args: argparse.Namespace) -> dict:
    manifest = load_manifest(args.little)
    task, classes = manifest.task, len(manifest.labels)
    frames, truth = _frames(args.data, task, args.frames, manifest.input.size, manifest.labels)
    half = len(frames) // 2
    with two_hosts(subnet=7) as host:
        env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "test" / "udp_only_profile.xml")}
        if host is not None:
            env["ROS_STATIC_PEERS"] = host.local_address
        server = start_node(DOMAIN, "-p", f"model:={args.big}", executable="big_model_node", env=env,
                            prefix=host.prefix() if host else None)
        try:
            with node_and_probe(DOMAIN, frames[0], "-p", f"model:={args.little}", "-p", f"vehicle_mode:={args.mode}",
                                "-p", "diagnostics_period_s:=0.2", "-p", f"score_threshold:={args.score_threshold}",
                                "-p", "preempt_on_new_frame:=false",
                                *(["-p", f"modes_file:={Path(args.modes).resolve()}"] if args.modes else [])) as peer:
                peer.wait_until(lambda: peer.diagnostics().get("appeal_server") == "ok", 20.0)
                start = _counts(peer.diagnostics())
                up = _replay(peer, frames[:half], 10_000, args.rate)
                time.sleep(0.5)
                diag_up = peer.diagnostics()
                server.send_signal(signal.SIGKILL)
                server.wait(10)
                down = _replay(peer, frames[half:], 20_000, args.rate)
                time.sleep(0.5)
                diag_down = peer.diagnostics()
        finally:
            server.kill()
            server.communicate(timeout=10)
    return {
        "little": str(args.little), "big": str(args.big), "task": task, "mode": args.mode, "rate_hz": args.rate,
        "modes": args.modes or "config/modes.yaml",
        "hosts": "network namespace + veth (UDP only)" if host else "two processes (UDP only server)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "bytes_per_appealed_frame": float(diag_up.get("appeal_bytes_mean", "nan")),
        "round_trip_p50_ms": float(diag_up.get("appeal_round_trip_p50_ms", "nan")),
        "round_trip_p99_ms": float(diag_up.get("appeal_round_trip_p99_ms", "nan")),
        "server_up": _phase(peer, up, truth[:half], task, classes, start, _counts(diag_up)),
        "server_killed": _phase(peer, down, truth[half:], task, classes, _counts(diag_up), _counts(diag_down)),
        "server_state_after_kill": diag_down.get("appeal_server"),
    }


def markdown(r: dict) -> str:
    quality = "accuracy" if r["task"] == "classification" else "mAP@0.5"
    rows = [("frames", "frames", "{:.0f}"), ("frames appealed", "appealed_share", "{:.1%}"),
            ("finals answered by the big network", "answered_by_big_share", "{:.1%}"),
            ("appeals unanswered at the deadline", "timed_out", "{:.0f}"), ("late answers dropped", "late", "{:.0f}"),
            ("final latency p50 (ms)", "final_latency_p50_ms", "{:.1f}"),
            ("final latency p99 (ms)", "final_latency_p99_ms", "{:.1f}"), ("deadline (ms)", "deadline_ms", "{:.0f}"),
            ("deadline misses", "deadline_misses", "{:.0f}"),
            (f"{quality} of the preliminary (little) answers", "quality_preliminary", "{:.3f}"),
            (f"{quality} of the finals", "quality_final", "{:.3f}")]
    lines = [f"Little `{r['little']}` on the vehicle, big `{r['big']}` on the server ({r['hosts']}); mode "
             f"`{r['mode']}`, {r['rate_hz']:g} Hz, {r['machine']}.", "",
             f"Bytes per appealed frame: **{r['bytes_per_appealed_frame']:.0f}**; round trip (vehicle node -> server "
             f"-> vehicle node) p50 **{r['round_trip_p50_ms']:.1f} ms**, p99 **{r['round_trip_p99_ms']:.1f} ms**. "
             f"Appeal server state after the kill: `{r['server_state_after_kill']}`.", "",
             "| | server up | server killed (SIGKILL) mid-run |", "|---|---|---|"]
    lines += [f"| {label} | {fmt.format(r['server_up'][key])} | {fmt.format(r['server_killed'][key])} |"
              for label, key, fmt in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--little", required=True, help="the vehicle's model (with an appeal section)")
    p.add_argument("--big", required=True, help="the appeal server's model")
    p.add_argument("--data", required=True, help="CIFAR-10/GTSRB zip (classifier) or road_signs root (detector)")
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--mode", default="normal")
    p.add_argument("--modes", help="modes YAML of the node (default: the package's config/modes.yaml)")
    p.add_argument("--score-threshold", type=float, default=0.05)
    p.add_argument("--out", default=str(REPO / "docs" / "results"))
    p.add_argument("--name", default="appeal_benchmark", help="output file stem")
    args = p.parse_args()
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (out / f"{args.name}.md").write_text(f"# Appeal benchmark (generated by `bench/bench_appeal.py`)\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
