"""Accuracy against time on a recording: the real node, replayed frames, competing CPU load.

    python -m anytime_perception.eval.stream --bag runs/stream/road_signs_val.mcap \\
        --model models/road_signs_anywidth --modes normal performance --ceiling-variants normal=0.9 \\
        --static models/road_signs_anywidth/static ../shared/peers/yolo11n_road_signs_320.onnx \\
        --rates 10 20 30 --contention 0 1 2 --json docs/results/streaming.json --plot docs/results/streaming.png

For each system (``anytime:<mode>``: the anytime model in that vehicle mode; ``anytime:<mode>:ceiling=X``:
the same with the mode's CPU-load ceiling at X; ``static:<name>``: a one-stage model, e.g. the
anytime model's own full graph or a YOLO export) one real ``anytime_node`` process runs; for each
contention level K, K busy processes (plain Python loops at normal priority, one core each)
compete for the CPU, and for each rate R the bag's frames are published to the node at R Hz with
their recorded stamps (shifted per run, so late answers of one run never count in another).
Every result the node publishes is recorded with the node's own receipt -> publish latency and
scored by ``stream_score``: the profile (COCO mAP@0.5 of what a subscriber holds tau ms after
the frame reached the node), the accuracy at the mode's deadline, frames answered, finals within
the deadline, final stages and stop reasons, and the CPU the competing processes got.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import psutil
import yaml

from ..runtime.modes import default_modes_file
from .stream_score import TAUS_MS, Answer, map50_at, profile, stream_summary

__all__ = ["System", "parse_systems", "load_stream_annotations", "busy_processes", "run_grid", "main"]

RUN_OFFSET_NS = 10_000 * 10**9  # stamps of run n are shifted by n * this (recorded stamps stay apart)
QUIET_S = 1.0  # a run ends once the node has published nothing for this long after the last frame


@dataclass(frozen=True)
class System:
    """One configuration of the node: ``name`` as reported, the model, the mode, the modes file."""

    name: str
    model: str
    mode: str
    modes_file: str


def _with_load_ceiling(modes_file: str, mode: str, ceiling: float, out_dir: Path) -> str:
    """A copy of the modes file with ``mode``'s CPU-load ceiling set to ``ceiling``."""
    table = yaml.safe_load(Path(modes_file).read_text())
    if mode not in table.get("modes", {}):
        raise ValueError(f"--ceiling-variants: no mode {mode!r} in {modes_file}")
    table["modes"][mode]["cpu_load_ceiling"] = ceiling
    path = out_dir / f"modes_{mode}_ceiling_{ceiling:g}.yaml"
    path.write_text(yaml.safe_dump(table, sort_keys=False))
    return str(path)


def parse_ceiling_variants(items: Sequence[str]) -> list[tuple[str, float]]:
    """``normal=0.9`` -> [("normal", 0.9)]: run that mode again with that CPU-load ceiling."""
    variants = []
    for item in items:
        mode, _, value = item.partition("=")
        try:
            ceiling = float(value)
        except ValueError:
            ceiling = -1.0
        if not mode or not 0.0 < ceiling <= 1.0:
            raise ValueError(f"--ceiling-variants {item!r}: give MODE=CEILING with CEILING in (0, 1], e.g. normal=0.9")
        variants.append((mode, ceiling))
    return variants


def parse_systems(model: str | None, modes: Sequence[str], statics: Sequence[str],
                  ceiling_variants: Sequence[tuple[str, float]], modes_file: str, work_dir: Path) -> list[System]:
    """The systems to run: the anytime model in each mode as the modes file has it, each
    ``(mode, ceiling)`` variant (that mode with another CPU-load ceiling), then each static model
    in the default mode ``normal``."""
    systems = []
    if model:
        for mode in modes:
            systems.append(System(f"anytime:{mode}", model, mode, modes_file))
        for mode, ceiling in ceiling_variants:
            systems.append(System(f"anytime:{mode}:ceiling={ceiling:g}", model, mode,
                                  _with_load_ceiling(modes_file, mode, ceiling, work_dir)))
    for path in statics:
        name = Path(path).stem if path.endswith(".onnx") else Path(path).resolve().parent.name \
            if Path(path).name == "static" else Path(path).name
        systems.append(System(f"static:{name}", path, "normal", modes_file))
    return systems


def load_stream_annotations(path: str | Path) -> tuple[tuple[str, ...], list[int], list[tuple[np.ndarray, np.ndarray]]]:
    """Labels, frame stamps (ns) and per-frame truths (x0, y0, x1, y1 boxes, class ids) of a COCO
    JSON written by ``anytime_bag make`` (each image carries its frame's ``stamp_ns``)."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text())
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        images = coco["images"]
        stamps = [int(image["stamp_ns"]) for image in images]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a stream annotation file (COCO JSON whose images carry stamp_ns): "
                         f"{exc}") from exc
    labels = tuple(c["name"] for c in categories)
    column = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list] = {image["id"]: [] for image in images}
    for a in coco.get("annotations", []):
        if a.get("iscrowd"):
            continue
        x, y, w, h = a["bbox"]
        per_image[a["image_id"]].append(([x, y, x + w, y + h], column[a["category_id"]]))
    truths = [(np.array([b for b, _ in per_image[i["id"]]], np.float32).reshape(-1, 4),
               np.array([c for _, c in per_image[i["id"]]], np.int64)) for i in images]
    return labels, stamps, truths


@contextmanager
def busy_processes(count: int) -> Iterator[list[psutil.Process]]:
    """``count`` CPU-bound processes at normal priority (a Python loop each) while inside."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [psutil.Process(p.pid) for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


class _Recorder:
    """Camera publisher and result recorder of the harness, on its own context and thread."""

    def __init__(self, domain: int) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from rcl_interfaces.srv import GetParameters
        from sensor_msgs.msg import Image

        from ..msg import DetectionArray

        os.environ["ROS_DOMAIN_ID"] = str(domain)
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("anytime_stream_eval", context=self.context)
        self.camera = self.node.create_publisher(Image, "camera/image_raw", qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.answers: dict[int, list[Answer]] = {}
        self.deadline_ms = 0.0
        self.last_message = time.monotonic()
        for topic in ("perception/preliminary", "perception/refined"):
            self.node.create_subscription(DetectionArray, topic, self._record, 100)
        self.parameters = self.node.create_client(GetParameters, "anytime_perception/get_parameters")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _record(self, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        detections = tuple((d.label, float(d.score), (d.center_x - d.width / 2, d.center_y - d.height / 2,
                                                      d.center_x + d.width / 2, d.center_y + d.height / 2))
                           for d in msg.detections)
        answer = Answer(float(msg.latency_ms), int(msg.stage), bool(msg.is_final), msg.stop_reason, detections)
        with self.lock:
            self.answers.setdefault(stamp, []).append(answer)
            self.deadline_ms = float(msg.deadline_ms)
            self.last_message = time.monotonic()

    def publish(self, msg, stamp_ns: int) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        self.camera.publish(msg)

    def wait_for_node(self, msg, timeout: float = 60.0) -> None:
        """Until the node answers a warm-up frame (stamp 1 s, outside every run)."""
        if not self.parameters.wait_for_service(timeout_sec=timeout):
            raise RuntimeError("the node's parameter service never appeared (did it start?)")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish(msg, 10**9)
            time.sleep(0.5)
            with self.lock:
                if self.answers.get(10**9):
                    return
        raise RuntimeError("the node never answered a frame")

    def wait_quiet(self, quiet_s: float = QUIET_S, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if time.monotonic() - self.last_message >= quiet_s:
                    return
            time.sleep(0.05)

    def take(self, stamps: Sequence[int]) -> list[list[Answer]]:
        with self.lock:
            return [list(self.answers.get(s, [])) for s in stamps]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def _load_frames(bag: str | Path, count: int) -> list[tuple[int, object]]:
    """(recorded stamp ns, sensor_msgs/Image) of the bag's image frames, deserialised up front so
    that publishing costs the harness nothing during a run."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from ..bag.io import read_image_bag

    frames = []
    for item in read_image_bag(bag):
        if not item.msgtype.endswith("Image") or "Compressed" in item.msgtype:
            raise ValueError(f"{bag}: stream evaluation replays raw sensor_msgs/Image frames, got {item.msgtype}")
        frames.append((item.stamp_ns, deserialize_message(item.rawdata_cdr, Image)))
        if count and len(frames) >= count:
            break
    if not frames:
        raise ValueError(f"{bag}: no image frames")
    return frames


def _start_node(system: System, domain: int, threads: int, score_threshold: float, log_file) -> subprocess.Popen:
    """The node process; its output goes to ``log_file`` (a pipe nobody reads during a run could
    fill up and block a node that logs every frame)."""
    command = ["anytime_node", "--ros-args", "-p", f"model:={system.model}", "-p", f"vehicle_mode:={system.mode}",
               "-p", f"modes_file:={system.modes_file}", "-p", f"intra_op_threads:={threads}",
               "-p", f"score_threshold:={score_threshold}"]
    return subprocess.Popen(command, env={**os.environ, "ROS_DOMAIN_ID": str(domain)},
                            stdout=log_file, stderr=subprocess.STDOUT)


def _stop_node(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(timeout=15)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


def run_system(system: System, frames: list[tuple[int, object]], labels: tuple[str, ...],
               truths: list, rates: Sequence[float], contentions: Sequence[int], domain: int,
               threads: int = 1, score_threshold: float = 0.05, taus: Sequence[float] = TAUS_MS,
               log=print) -> list[dict]:
    """One node process for ``system``; a run per (contention, rate). Returns the runs' records."""
    runs = []
    with tempfile.TemporaryFile("w+") as node_log, ExitStack() as stack:
        recorder = _Recorder(domain)
        stack.callback(recorder.close)
        node = _start_node(system, domain, threads, score_threshold, node_log)
        stack.callback(_report_failure, node, node_log, log)
        stack.callback(_stop_node, node)
        _run_grid_on(node, recorder, system, frames, labels, truths, rates, contentions, taus, runs, log)
    return runs


def _report_failure(node: subprocess.Popen, node_log, log) -> None:
    """The node's output, if it did not end as asked (SIGTERM: -15)."""
    if node.returncode not in (0, -15):
        node_log.seek(0)
        log(node_log.read())


def _run_grid_on(node: subprocess.Popen, recorder: _Recorder, system: System, frames: list, labels: tuple[str, ...],
                 truths: list, rates: Sequence[float], contentions: Sequence[int], taus: Sequence[float],
                 runs: list[dict], log) -> None:
    """The runs of one node: for each contention level its busy processes, for each rate the frames
    published at that rate, then the answers scored; each run's record is appended to ``runs``."""
    recorder.wait_for_node(frames[0][1])
    run_index = 0
    for contention in contentions:
        with busy_processes(contention) as hogs:
            time.sleep(1.0)  # the node's load monitor sees the competitors before the first frame
            for rate in rates:
                run_index += 1
                offset = run_index * RUN_OFFSET_NS
                node_proc = psutil.Process(node.pid)
                hog_before, node_before = _cpu_seconds(hogs), _cpu_seconds([node_proc])
                started = time.perf_counter()
                for i, (stamp, msg) in enumerate(frames):
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    recorder.publish(msg, stamp + offset)
                wall = time.perf_counter() - started
                hog_cpu, node_cpu = _cpu_seconds(hogs) - hog_before, _cpu_seconds([node_proc]) - node_before
                recorder.wait_quiet()
                answers = recorder.take([stamp + offset for stamp, _ in frames])
                deadline = recorder.deadline_ms
                record = {"system": system.name, "rate_hz": rate, "contention": contention,
                          "profile": profile(truths, answers, labels, taus),
                          "ap_at_deadline": round(map50_at(truths, answers, labels, deadline), 4),
                          "deadline_ms": deadline, **stream_summary(answers, deadline),
                          "competitor_cpu_share": round(hog_cpu / (contention * wall), 3) if contention else None,
                          "node_cpu_ms_per_frame": round(1000 * node_cpu / len(frames), 2)}
                runs.append(record)
                log(f"{system.name:34s} {rate:4g} Hz  K={contention}  answered {record['answered']}/{len(frames)}"
                    f"  final<=deadline {record['final_in_deadline']}  AP@deadline {record['ap_at_deadline']:.3f}"
                    f"  profile {' '.join(f'{v:.2f}' for v in record['profile'].values())}"
                    f"  stages {record['final_stage_histogram']}  competitors' CPU {record['competitor_cpu_share']}")


def run_grid(systems: Sequence[System], bag: str, annotations: str, rates: Sequence[float],
             contentions: Sequence[int], frames: int = 0, threads: int = 1, score_threshold: float = 0.05,
             log=print) -> dict:
    """Every system over every (contention, rate); the JSON document of the issue."""
    labels, stamps, truths = load_stream_annotations(annotations)
    loaded = _load_frames(bag, frames)
    by_stamp = dict(zip(stamps, truths))
    missing = [s for s, _ in loaded if s not in by_stamp]
    if missing:
        raise ValueError(f"{annotations}: no annotation for {len(missing)} of the bag's frames "
                         f"(e.g. stamp {missing[0]})")
    truths = [by_stamp[s] for s, _ in loaded]
    domain = 30 + os.getpid() % 60
    runs = []
    for system in systems:
        runs += run_system(system, loaded, labels, truths, rates, contentions, domain, threads, score_threshold,
                           log=log)
    return {"bag": str(bag), "annotations": str(annotations), "frames": len(loaded), "labels": list(labels),
            "taus_ms": list(TAUS_MS), "cores": psutil.cpu_count(), "threads": threads,
            "score_threshold": score_threshold, "runs": runs,
            "command": "python -m anytime_perception.eval.stream " + " ".join(sys.argv[1:])}


def plot(report: dict, path: Path) -> None:
    """One panel per (contention, rate): each system's profile, the deadline marked."""
    from .plots import plt, save_plot

    rates = sorted({r["rate_hz"] for r in report["runs"]})
    contentions = sorted({r["contention"] for r in report["runs"]})
    fig, axes = plt.subplots(len(contentions), len(rates), figsize=(4.2 * len(rates), 3.2 * len(contentions)),
                             dpi=110, squeeze=False, sharey=True)
    for i, k in enumerate(contentions):
        for j, rate in enumerate(rates):
            ax = axes[i][j]
            for run in (r for r in report["runs"] if r["rate_hz"] == rate and r["contention"] == k):
                taus = [float(t) for t in run["profile"]]
                ax.plot(taus, list(run["profile"].values()), marker="o", ms=3,
                        ls="--" if run["system"].startswith("static") else "-", label=run["system"])
            ax.set_xscale("log")
            ax.set_title(f"{rate:g} Hz, {k} busy core(s)", fontsize=9)
            ax.set_xlabel("ms after receipt")
            if j == 0:
                ax.set_ylabel("mAP@0.5 available")
    save_plot(fig, path, [axes[0][-1]], legend_size=7)


def markdown(report: dict) -> str:
    """Tables of a report: the profile and deadline accuracy per run."""
    taus = report["taus_ms"]
    lines = ["| rate Hz | busy cores | system | " + " | ".join(f"{t} ms" for t in taus)
             + " | at deadline | answered | finals in deadline | final stages | stop reasons | cut off at deadline"
             " | competitors' CPU |",
             "|---" * (len(taus) + 10) + "|"]
    for r in sorted(report["runs"], key=lambda r: (r["rate_hz"], r["contention"])):
        lines.append(f"| {r['rate_hz']:g} | {r['contention']} | {r['system']} | "
                     + " | ".join(f"{v:.3f}" for v in r["profile"].values())
                     + f" | **{r['ap_at_deadline']:.3f}** ({r['deadline_ms']:g} ms) | {r['answered']}/{r['frames']} | "
                     f"{r['final_in_deadline']} | {r['final_stage_histogram']} | {r['stop_reasons']} | "
                     f"{r.get('cut_off_at_deadline', '')} | "
                     f"{'' if r['competitor_cpu_share'] is None else r['competitor_cpu_share']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.eval.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", required=True, help="rosbag2 recording of the frames (anytime_bag make)")
    p.add_argument("--annotations", help="COCO JSON with frame stamps (default: the bag's .coco.json beside it)")
    p.add_argument("--model", help="the anytime model (directory or name under the package's models/)")
    p.add_argument("--modes", nargs="+", default=["normal"], help="vehicle modes to run the anytime model in")
    p.add_argument("--ceiling-variants", nargs="*", default=[], metavar="MODE=CEILING",
                   help="also run the anytime model in MODE with this CPU-load ceiling (e.g. normal=0.9): "
                        "what stopping for load costs and buys")
    p.add_argument("--modes-file", default=None, help="modes YAML (default: the package's)")
    p.add_argument("--static", nargs="*", default=[], help="one-stage models: model directories or YOLO .onnx exports")
    p.add_argument("--rates", "--rate", nargs="+", type=float, default=[20.0], help="replay rates in Hz")
    p.add_argument("--contention", nargs="+", type=int, default=[0], help="busy processes competing for the CPU")
    p.add_argument("--frames", type=int, default=0, help="use only the first N frames of the bag")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of the node")
    p.add_argument("--score-threshold", type=float, default=0.05,
                   help="the node's score_threshold: low, so that mAP sees the ranking as offline evaluation does "
                        "(the node's default 0.3 cuts the precision-recall curve short)")
    p.add_argument("--json", type=Path, help="write the report here")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    p.add_argument("--plot", type=Path, help="write the profiles here (png)")
    args = p.parse_args(argv)
    if not args.model and not args.static:
        p.error("nothing to run: give --model and/or --static")
    if min(args.rates) <= 0 or min(args.contention) < 0:
        p.error("--rates must be > 0 and --contention >= 0")
    try:
        annotations = args.annotations or _beside(args.bag)
        with tempfile.TemporaryDirectory() as tmp:
            systems = parse_systems(args.model, args.modes, args.static, parse_ceiling_variants(args.ceiling_variants),
                                    args.modes_file or str(default_modes_file()), Path(tmp))
            report = run_grid(systems, args.bag, annotations, args.rates, args.contention, args.frames, args.threads,
                              args.score_threshold)
    except (OSError, ValueError, RuntimeError, psutil.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(report))
    if args.plot:
        plot(report, args.plot)
    print(markdown(report))
    return 0


def _beside(bag: str) -> str:
    """The annotations ``anytime_bag make`` writes beside a bag: ``X.coco.json`` for ``X.mcap``
    (given as ``X.mcap``, the folder ``X/``, its ``.mcap`` file or its ``metadata.yaml``)."""
    from ..bag.io import annotations_path, resolve_bag

    path = resolve_bag(bag)
    return str(annotations_path(path.parent if path.is_file() else path))


if __name__ == "__main__":
    raise SystemExit(main())
