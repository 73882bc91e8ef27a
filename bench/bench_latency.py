"""Benchmark: anytime stages vs the same model as one static graph, and the ROS adapter's overhead.

    make bench                      # or: python bench/bench_latency.py --frames 100

Part 1 (runtime, no ROS): for every 640x480 road_signs validation frame, interleaved in one run,
(a) the anytime engine with every stage allowed and (b) preprocess + the static full graph +
decode. Reports time to preliminary and to final (p50/p99), compute of all stages vs the static
graph, and MACs per stage.
Part 2 (ROS): the real ``anytime_node`` in its own process fed by a replay at 10 Hz over DDS;
the node's own overhead (image receipt -> preliminary published, minus stage-0 compute) from
its /diagnostics, camera stamp -> preliminary received in this process, and the node's RSS.
Writes ``docs/results/benchmark.md`` and ``docs/results/benchmark.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from anytime_perception.data import load_split, read_rgb
from anytime_perception.msg import DetectionArray
from anytime_perception.ros.conversions import status_values
from anytime_perception.ros.replay import ReplayNode
from anytime_perception.runtime import AnytimeEngine, AnytimeModel
from anytime_perception.runtime.decoder import decode
from anytime_perception.runtime.modes import parse_modes
from anytime_perception.runtime.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99))}


def bench_runtime(model: AnytimeModel, frames: list[np.ndarray]) -> dict:
    """Anytime engine (all stages) and the static full graph, interleaved frame by frame."""
    unlimited = parse_modes({"modes": {"all": {"mac_budget": 1.0, "deadline_ms": 1e6, "cpu_load_ceiling": 1.0}}},
                            model.manifest.total_macs)
    engine = AnytimeEngine(model, unlimited, warmup_runs=5)
    manifest = model.manifest
    preprocess = Preprocessor(manifest.input)  # the static path's own buffers, like the engine's
    prelim, final, staged_compute, static_total, static_compute = [], [], [], [], []
    stage_ms: list[list[float]] = [[] for _ in manifest.stages]
    for i, frame in enumerate(frames * 2):
        for run_static in ((False, True) if i % 2 else (True, False)):
            t0 = time.perf_counter()
            if run_static:
                x, box = preprocess(frame)
                t1 = time.perf_counter()
                heads = model.run_full(x)
                t2 = time.perf_counter()
                decode(heads, manifest.decoder, box, manifest.labels, engine.score_threshold)
                static_total.append((time.perf_counter() - t0) * 1e3)
                static_compute.append((t2 - t1) * 1e3)
            else:
                stamps: list[float] = []
                results = engine.process(frame, t0, lambda r: stamps.append(time.perf_counter()))
                prelim.append((stamps[0] - t0) * 1e3)
                final.append((stamps[-1] - t0) * 1e3)
                staged_compute.append(sum(r.stage_ms for r in results))
                for r in results:
                    stage_ms[r.stage].append(r.stage_ms)
    full_macs = manifest.full_model.macs
    return {
        "frames": len(frames) * 2,
        "preliminary_ms": percentiles(prelim),
        "final_ms": percentiles(final),
        "static_full_ms": percentiles(static_total),
        "stage_compute_ms": [percentiles(s) for s in stage_ms],
        "staged_compute_ms": percentiles(staged_compute),
        "static_compute_ms": percentiles(static_compute),
        "preliminary_over_static_p99": float(np.percentile(prelim, 99) / np.percentile(static_total, 99)),
        "staged_over_static_compute_p50": float(np.median(staged_compute) / np.median(static_compute)),
        "stage_macs": [s.macs for s in manifest.stages],
        "full_model_macs": full_macs,
        "staged_over_full_macs": manifest.total_macs / full_macs,
    }


class _Listener(Node):
    def __init__(self) -> None:
        super().__init__("bench_listener")
        self.preliminary: dict[tuple[int, int], float] = {}
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(DetectionArray, "/perception/preliminary", self.preliminary_callback, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics_callback, 10)

    def preliminary_callback(self, msg: DetectionArray) -> None:
        now = self.get_clock().now().nanoseconds
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        self.preliminary[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (now - stamp) / 1e6

    def diagnostics_callback(self, msg: DiagnosticArray) -> None:
        self.diagnostics = status_values(msg) or self.diagnostics


def bench_ros(model_dir: Path, frames: list[np.ndarray], threads: int, providers: str = "CPUExecutionProvider",
              rate: float = 10.0) -> dict:
    """The real node over DDS: adapter overhead, camera-stamp latency, RSS, no torch."""
    domain = str(30 + os.getpid() % 60)
    node = subprocess.Popen(["anytime_node", "--ros-args", "-p", f"model:={model_dir}", "-p",
                             "vehicle_mode:=performance", "-p", "preempt_on_new_frame:=false", "-p",
                             f"intra_op_threads:={threads}", "-p", "diagnostics_period_s:=0.5",
                             "-p", f"providers:=[{providers}]"],
                            env={**os.environ, "ROS_DOMAIN_ID": domain},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["ROS_DOMAIN_ID"] = domain
    rclpy.init()
    listener = _Listener()
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    try:
        replay = ReplayNode(iter(frames), rate)
        while replay.publisher.get_subscription_count() == 0:  # the node is up and matched
            executor.spin_once(timeout_sec=0.1)
            assert node.poll() is None, "anytime_node exited"
        executor.add_node(replay)
        end = time.monotonic() + len(frames) / rate + 3.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        rss_mb = int(next(line for line in Path(f"/proc/{node.pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS")).split()[1]) / 1024
        torch_loaded = "libtorch" in Path(f"/proc/{node.pid}/maps").read_text()
        diag = dict(listener.diagnostics)
    finally:
        node.terminate()
        node.wait(timeout=10)
        rclpy.shutdown()
    received = list(listener.preliminary.values())
    return {
        "frames_published": replay.published,
        "preliminary_received": len(received),
        "camera_stamp_to_preliminary_ms": percentiles(received),
        "ros_overhead_ms": {"p50": float(diag["ros_overhead_p50_ms"]), "p99": float(diag["ros_overhead_p99_ms"])},
        "node_rss_mb": rss_mb,
        "torch_loaded_in_node": torch_loaded,
    }


def markdown(rt: dict, ros: dict, args: argparse.Namespace) -> str:
    stage_rows = "\n".join(
        f"| stage {k} | {macs / 1e6:.1f} | {sum(rt['stage_macs'][:k + 1]) / rt['full_model_macs']:.1%} | "
        f"{s['p50']:.2f} | {s['p99']:.2f} |"
        for k, (macs, s) in enumerate(zip(rt["stage_macs"], rt["stage_compute_ms"])))
    return f"""# Benchmark: anytime stages vs the static full model

Command: `make bench` (`python bench/bench_latency.py --frames {args.frames} --threads {args.threads}`).
Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()};
model `{args.model.name}`; {rt['frames']} runs on real road_signs validation frames at 640x480,
anytime and static interleaved frame by frame in one process (ONNX Runtime {rt['sessions_got']},
{args.threads} thread(s); carry between stages {'bound on ' + rt['device'] + ' (IOBinding)' if rt['device_carry'] else 'in host arrays'}).

## Latency (ms, from the frame in memory: preprocessing, inference, decoding)

| | p50 | p99 |
|---|---|---|
| anytime: time to preliminary (stage 0) | {rt['preliminary_ms']['p50']:.2f} | {rt['preliminary_ms']['p99']:.2f} |
| anytime: time to final (all stages) | {rt['final_ms']['p50']:.2f} | {rt['final_ms']['p99']:.2f} |
| static full graph | {rt['static_full_ms']['p50']:.2f} | {rt['static_full_ms']['p99']:.2f} |

- preliminary p99 / static p99 = **{rt['preliminary_over_static_p99']:.3f}** (target <= 0.125)
- compute of all stages / static graph compute (p50) = **{rt['staged_over_static_compute_p50']:.3f}** (target <= 1.25)
- MACs of all stages / static graph MACs = **{rt['staged_over_full_macs']:.3f}**

## MACs and compute per stage

| stage | MMACs | cumulative of full | compute p50 ms | compute p99 ms |
|---|---|---|---|---|
{stage_rows}
| static full graph | {rt['full_model_macs'] / 1e6:.1f} | 100% | {rt['static_compute_ms']['p50']:.2f} | {rt['static_compute_ms']['p99']:.2f} |

## ROS 2 (real `anytime_node` process, replay at 10 Hz over Fast DDS, shared-memory profile)

| | p50 | p99 |
|---|---|---|
| ROS overhead: receipt -> preliminary published, minus stage-0 compute (ms) | {ros['ros_overhead_ms']['p50']:.2f} | {ros['ros_overhead_ms']['p99']:.2f} |
| camera stamp -> preliminary received by a subscriber (ms) | {ros['camera_stamp_to_preliminary_ms']['p50']:.2f} | {ros['camera_stamp_to_preliminary_ms']['p99']:.2f} |

- frames published {ros['frames_published']}, preliminary results received {ros['preliminary_received']}
- node RSS after the run: **{ros['node_rss_mb']:.0f} MB** (target <= 300); torch loaded in the node: **{ros['torch_loaded_in_node']}**
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "road_signs_anywidth")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "road_signs")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--providers", default="CPUExecutionProvider",
                        help="ONNX Runtime providers, comma-separated (GPU: CUDAExecutionProvider,CPUExecutionProvider)")
    parser.add_argument("--device-carry", choices=("auto", "on", "off"), default="auto",
                        help="carry between stages bound with IOBinding (auto: on for a GPU provider)")
    parser.add_argument("--strict-providers", action="store_true", help="fail if a provider is missing or fell back")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "benchmark.md")
    args = parser.parse_args()
    frames = [cv2.resize(read_rgb(s.image_path), (640, 480)) for s in load_split(args.data, "val")[: args.frames]]
    model = AnytimeModel(args.model, providers=args.providers.split(","), threads=args.threads,
                         strict_providers=args.strict_providers,
                         device_carry={"auto": None, "on": True, "off": False}[args.device_carry])
    for warning in model.provider_warnings:
        print(f"warning: {warning}")
    rt = bench_runtime(model, frames)
    rt.update(sessions_got=", ".join(sorted({p for got in model.session_providers for p in got})),
              device=model.device, device_carry=model.device_carry)
    ros = bench_ros(args.model.resolve(), frames, args.threads, args.providers)
    report = markdown(rt, ros, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps({"runtime": rt, "ros": ros}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
