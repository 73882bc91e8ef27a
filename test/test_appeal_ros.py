"""Appeals between two real nodes over real DDS: anytime_node (vehicle) appeals to big_model_node
(server) on another host — a network namespace joined by a veth pair where the machine allows it,
else another process. Real big model (the shipped detector), real road-sign frames."""
from __future__ import annotations

import os
import signal
import time

import pytest

from anytime_perception.data import load_split, read_rgb
from anytime_perception.runtime import AnytimeModel, load_manifest
from anytime_perception.runtime.appeal import BigModel

from conftest import REPO, SHIPPED_MODEL, write_tiny_model
from ros_probe import node_and_probe, start_node, stop

DOMAIN = 20 + (os.getpid() + 17) % 70
DEADLINE_MS = 400.0  # generous: the two-core test machine runs both models and the probe
MODES = f"""default_mode: normal
modes:
  normal: {{mac_budget: 1.0, deadline_ms: {DEADLINE_MS}, cpu_load_ceiling: 1.0, appeal: {{max_accuracy_drop: 0.01}}}}
  power_saving: {{mac_budget: 1.0, deadline_ms: {DEADLINE_MS}, cpu_load_ceiling: 1.0, appeal: false}}
"""


@pytest.fixture(scope="module")
def frames(road_signs_root):
    return [read_rgb(s.image_path) for s in load_split(road_signs_root, "val")[:14]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A little model that is never sure (q = 0.2 < 0.5) and the modes file."""
    root = tmp_path_factory.mktemp("appeal")
    little = write_tiny_model(root / "little", [0.2], [1000], appeal={"normal": 0.5, "power_saving": 0.5},
                              labels=load_manifest(SHIPPED_MODEL).labels)
    modes = root / "modes.yaml"
    modes.write_text(MODES)
    return little, modes


def _server(host, domain: int, *args: str):
    """big_model_node on the other host (or in another process), UDP only: nothing shared with us.
    On another host it names the vehicle's address as its static peer; the vehicle's own discovery
    settings stay as they are (adding a static peer there disturbs its local camera traffic)."""
    env = {"FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "test" / "udp_only_profile.xml")}
    if host is not None:
        env.update(ROS_STATIC_PEERS=host.local_address)
    return start_node(domain, "-p", f"model:={SHIPPED_MODEL}", *args, executable="big_model_node", env=env,
                      prefix=host.prefix() if host else None)


def test_unsure_frames_are_appealed_over_the_network_and_the_deadline_holds_when_the_server_dies(
        setup, remote_host, frames):
    hosts = remote_host
    little, modes = setup
    print(f"appeal server {'on host ' + hosts.address + ' (network namespace)' if hosts else 'in another process'}")
    server = _server(hosts, DOMAIN)
    try:
        sent_before = hosts.bytes_sent() if hosts else 0
        with node_and_probe(DOMAIN, frames[0], "-p", f"model:={little}", "-p", f"modes_file:={modes}",
                            "-p", "preempt_on_new_frame:=false", "-p", "diagnostics_period_s:=0.2",
                            "-p", "score_threshold:=0.3") as peer:
            # discovery of the server is asynchronous: frames go local-only until it is found
            assert peer.publish_until(frames[0], 90, lambda: any(m.source == "appeal" for m in _finals(peer, [90])),
                                      60.0), "no appeal was ever answered"
            stamps = peer.send_in_turn(frames[1:9], 100, pause_s=0.05)
            finals = _finals(peer, stamps)
            appealed = [m for m in finals if m.source == "appeal"]
            assert len(appealed) >= len(stamps) - 2, [(m.source, m.stop_reason, m.latency_ms) for m in finals]
            big = BigModel(AnytimeModel(SHIPPED_MODEL), 0.05)
            for m in appealed:
                assert m.stop_reason == "appealed" and m.stage == m.num_stages == 1 and m.is_final
                assert m.latency_ms <= DEADLINE_MS
                assert all(d.score >= 0.3 for d in m.detections)
            assert sum(bool(m.detections) for m in appealed) >= len(appealed) // 2, "the big detector finds signs"
            first = frames[1 + stamps.index(appealed[0].header.stamp.sec)]
            expected = [d.label for d in big.answer(first).detections if d.score >= 0.45]  # jpeg moves scores a bit
            assert set(expected) <= {d.label for d in appealed[0].detections}
            prelim = {m.header.stamp.sec: t for t, m in peer.messages("preliminary")}
            final_at = {m.header.stamp.sec: t for t, m in peer.messages("refined") if m.is_final}
            assert all(prelim[s] <= final_at[s] for s in stamps)  # the preliminary never waits for the appeal
            assert peer.wait_until(lambda: int(peer.diagnostics().get("appeals_answered", 0)) >= len(appealed), 5.0)
            diag = peer.diagnostics()
            assert 0 < float(diag["appeal_bytes_mean"]) < min(f.nbytes for f in frames[:9])  # jpeg, not raw
            assert 0 < float(diag["appeal_round_trip_p50_ms"]) <= float(diag["appeal_round_trip_p99_ms"])
            if hosts is not None:  # the appeals really crossed the link
                assert hosts.bytes_sent() - sent_before > len(appealed) * float(diag["appeal_bytes_mean"])

            server.send_signal(signal.SIGKILL)  # no goodbye: DDS still believes the server is there
            server.wait(10)
            stamps = peer.send_in_turn(frames[9:14], 200, pause_s=0.05)
            finals = _finals(peer, stamps)
            assert all(m.source == "local" for m in finals), [(m.source, m.stop_reason) for m in finals]
            assert all(m.latency_ms <= DEADLINE_MS + 50.0 for m in finals), [m.latency_ms for m in finals]
            assert peer.wait_until(lambda: peer.diagnostics().get("appeal_server") in ("unresponsive", "unreachable"),
                                   5.0), peer.diagnostics()
            assert int(peer.diagnostics()["appeals_timed_out"]) + int(peer.diagnostics()["appeals_skipped_no_server"]) > 0
        assert "running local-only" in peer.node_output
    finally:
        server.kill()
        server.communicate(timeout=10)


def _finals(peer, stamps):
    wanted = set(stamps)
    return [m for _, m in peer.messages("refined") if m.is_final and m.header.stamp.sec in wanted]


def test_modes_without_appeals_missing_server_and_wrong_model_stay_local(setup, frames, tmp_path):
    little, modes = setup
    with node_and_probe(DOMAIN + 1, frames[0], "-p", f"model:={little}", "-p", f"modes_file:={modes}",
                        "-p", "diagnostics_period_s:=0.2") as peer:  # no server at all
        stamps = peer.send_in_turn(frames[1:4], 300, pause_s=0.05)
        assert all(m.source == "local" and m.stop_reason == "complete" for m in _finals(peer, stamps))
        assert peer.wait_until(lambda: peer.diagnostics().get("appeal_server") == "unreachable", 5.0)
        assert int(peer.diagnostics()["appeals_sent"]) == 0
    assert "appeal server not found: running local-only" in peer.node_output

    wrong = write_tiny_model(tmp_path / "wrong", [0.2], [1000], appeal={"normal": 0.5})
    manifest = wrong / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("big_model: road_signs_anywidth", "big_model: cifar10_resnet56"))
    server = _server(None, DOMAIN + 1)
    try:
        with node_and_probe(DOMAIN + 1, frames[0], "-p", f"model:={wrong}", "-p", f"modes_file:={modes}",
                            "-p", "diagnostics_period_s:=0.2") as peer:
            # until the server has been discovered and has refused an appeal
            assert peer.publish_until(frames[4], 390, lambda: int(peer.diagnostics().get("appeals_failed", 0)) > 0,
                                      30.0), peer.diagnostics()
            peer.set_parameter("vehicle_mode", "power_saving")
            stamps = peer.send_in_turn(frames[4:7], 400, pause_s=0.05)
            assert all(m.source == "local" and m.mode == "power_saving" for m in _finals(peer, stamps))
            sent = int(peer.diagnostics()["appeals_sent"])
            time.sleep(0.5)
            assert int(peer.diagnostics()["appeals_sent"]) == sent  # no appeals in power_saving
            assert peer.set_parameter("appeal_format", "gif")[0] is False  # read-only, and not a format
    finally:
        output = stop(server)
    assert server.returncode == 0 and "Traceback" not in output, output  # SIGTERM ends the server cleanly


def test_a_big_model_on_this_machine_answers_appeals_without_a_server(setup, frames):
    little, modes = setup
    with node_and_probe(DOMAIN + 2, frames[0], "-p", f"model:={little}", "-p", f"modes_file:={modes}",
                        "-p", f"appeal_local_model:={SHIPPED_MODEL}", "-p", "preempt_on_new_frame:=false") as peer:
        finals = _finals(peer, peer.send_in_turn(frames[1:5], 500, pause_s=0.05))
        assert all(m.source == "appeal" and m.stop_reason == "appealed" for m in finals), \
            [(m.source, m.stop_reason, m.latency_ms) for m in finals]
    assert "appeals to road_signs_anywidth on this machine" in peer.node_output
