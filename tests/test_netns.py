"""The virtual OR LAN (spine_nav.sim.netns) and `spine-nav demo --hosts` (needs root; skipped otherwise).

- a cut host's link stops its traffic and a restored one resumes (TCP across namespaces);
- an OpenIGTLink server in one namespace refuses a peer from another namespace outside
  ``allowed_peers`` (and logs its address) while the allowed peer is served;
- a delayed link (VirtualLan.delay, the user-space stand-in for tc netem) never delivers a frame early,
  keeps UDP and TCP intact (checksums), and goes away with its forwarder;
- the multi-host demo: 2 screws placed across namespaces with the robot host's (or the console's) link
  cut mid-drilling; a cut console (the registered command source) holds the arm with "console silent".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from spine_nav.sim.netns import NetnsNotPermitted, VirtualLan, check_permitted, enter_netns
from spine_nav.tracking import codec
from spine_nav.tracking.transport import IgtlClient, IgtlServer
from tests.helpers import wait_until
from tests.netns_helpers import REPO, domain_id, lan_for_test, require_netns


def test_not_permitted_is_said_clearly(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsNotPermitted, match="need root"):
        check_permitted()
    with pytest.raises(ValueError, match="unknown host"):
        VirtualLan(["a"]).ip("b")


def test_cut_stops_a_link_and_restore_resumes_it_and_outsiders_are_refused():
    require_netns()
    with lan_for_test(["srv", "ok", "bad"], "n") as lan:
        got: list[tuple[float, str]] = []
        with enter_netns(lan.ns("srv")):  # the listening socket (and its thread) live in host "srv"
            server = IgtlServer(0, host=lan.ip("srv"), allowed_peers=lan.ip("ok"),
                                on_message=lambda m, t, c: got.append((time.time(), m.device, m.timestamp_s))).start()
        with enter_netns(lan.ns("ok")):
            good = IgtlClient(lan.ip("srv"), server.port, on_message=None, backoff_s=(0.05, 0.2)).start()
        try:
            with enter_netns(lan.ns("bad")):
                outsider = IgtlClient(lan.ip("srv"), server.port, on_message=None).start()
            assert good.wait_connected(10.0)
            assert wait_until(lambda: len(server.refused) >= 1, 10.0)
            outsider.close()
            assert server.refused[0][0] == lan.ip("bad")
            # the client side counts as connected once the kernel completed the handshake; the server's thread
            # registers the peer when it gets to accept() (after refusing the outsider, if that came first)
            assert wait_until(lambda: server.client_count == 1, 10.0), "the allowed peer was never served"

            def send_for(seconds: float) -> None:
                t_end = time.monotonic() + seconds
                while time.monotonic() < t_end:
                    good.send(codec.encode_transform("Tool", np.eye(4), time.time()))
                    time.sleep(0.01)

            send_for(0.5)
            # (the server's thread takes them when a loaded machine lets it: wait, bounded, rather than read once)
            assert wait_until(lambda: bool(got), 15.0), "nothing arrived before the cut"
            lan.cut("ok")
            assert not lan.link_up("ok")
            t_cut = time.time()
            send_for(1.0)
            # nothing SENT after the cut (the message's own timestamp) arrives while the link is cut; what was sent
            # before it may still be taken late by a stalled server thread (receipt time alone cannot tell them apart)
            during = [(t, sent) for t, _, sent in got if sent > t_cut]
            lan.restore("ok")
            t_back = time.time()
            # a tracker keeps streaming: send while waiting (what was buffered during the cut may be gone with the
            # connection, e.g. when the cut made it fail and the client reconnected; traffic must resume either way)
            def resumed() -> bool:
                good.send(codec.encode_transform("Tool", np.eye(4), time.time()))
                return any(t > t_back for t, _, _ in got)

            assert wait_until(resumed, 15.0), "no traffic after the link came back"
            assert during == []
            assert all(d == "Tool" for _, d, _ in got)
        finally:
            good.close()
            server.close()


def test_delay_holds_every_frame_each_way_and_keeps_udp_and_tcp_intact():
    require_netns()
    import socket
    import threading

    ms = 30.0
    with lan_for_test(["a", "b"], "y") as lan:
        with enter_netns(lan.ns("a")):
            echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        echo.bind((lan.ip("a"), 0))
        listener.bind((lan.ip("a"), 0))
        listener.listen(1)
        stop = threading.Event()

        def serve() -> None:
            echo.settimeout(0.2)
            while not stop.is_set():
                try:
                    data, peer = echo.recvfrom(65536)
                except socket.timeout:
                    continue
                echo.sendto(data, peer)

        threading.Thread(target=serve, daemon=True).start()
        with enter_netns(lan.ns("b")):
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(30.0)

        def rtts(n: int) -> list[float]:
            out = []
            for i in range(n):
                payload = i.to_bytes(4, "big") * 300  # 1200 bytes: one full frame, checksum over all of it
                t0 = time.monotonic()
                client.sendto(payload, (lan.ip("a"), echo.getsockname()[1]))
                data, _ = client.recvfrom(65536)
                out.append((time.monotonic() - t0) * 1000.0)
                assert data == payload
            return out

        rtts(3)
        proc = lan.delay("b", ms)
        try:
            delayed = rtts(10)
            with enter_netns(lan.ns("b")):
                tcp = socket.create_connection((lan.ip("a"), listener.getsockname()[1]), timeout=30.0)
            conn, _ = listener.accept()
            blob = bytes(range(256)) * 4096  # 1 MiB in MTU-sized segments through the forwarder
            threading.Thread(target=lambda: tcp.sendall(blob), daemon=True).start()
            got = bytearray()
            conn.settimeout(30.0)
            while len(got) < len(blob):
                chunk = conn.recv(1 << 20)
                assert chunk, "TCP connection closed early"
                got += chunk
            tcp.close()
            conn.close()
        finally:
            proc.terminate()
            proc.wait(15.0)
            stop.set()
        assert bytes(got) == blob
        # each way held >= ms: a round trip can never be shorter than 2 ms (no upper bound: shared machine)
        assert min(delayed) >= 2 * ms, delayed


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(1800)  # the suite's 300 s is shorter than this run on a loaded machine (the flake)
@pytest.mark.parametrize("host", ["robot", "console"])
def test_demo_hosts_two_screws_with_the_robot_link_cut(tmp_path, host):
    """`demo --hosts --inject cut:HOST`: both screws placed across namespaces; the arm held when the host
    was cut (robot: on its own; console: "console silent", the console being the registered command
    source that relays the surgeon's align/resume), resumed (hold_after_ms reported, docs/network.md has
    the measured values)."""
    require_netns()
    out = tmp_path / "hosts"
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from spine_nav.demo.run import DemoConfig, run_demo
from spine_nav.demo.hosts import HostsDemo, parse_inject
cfg = DemoConfig(out_dir=Path({str(out)!r}), seed=11, voxel_mm=1.0, cbct_voxel_mm=1.0, handeye_poses=12,
                 levels=("L4",), align_timeout_s=120.0, extra_guard_params={{"stale_after_s": 0.3}})
# reference_timeout_s 0.2 s (the one-machine demo's watchdog), not the 0.06 s of the measured runs: this
# test checks that a cut holds and the case resumes and completes, not the hold time (docs/network.md);
# with 0.06 s a 2-core machine at load 30-90 stale-stopped the arm until aligning timed out (the flake);
# the guard's stale_after_s 0.3 s (0.1 s in the demo) for the same reason: at load 50 with a busy core its
# TRACKING_LOST stops kept the first screw from reaching half depth, so the cut was never injected.
run_demo(cfg, print, lambda c, log: HostsDemo(c, log, parse_inject("cut:{host}"), tag="t{domain_id()}{host[0]}",
                                              reference_timeout_s=0.2))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    try:
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1700)
    finally:  # a run killed half way leaves its node processes in the namespaces: stop them, by namespace
        VirtualLan(["tracker", "navigation", "robot", "console", "world"], tag=f"t{domain_id()}d").destroy()
    log = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 0, log
    data = json.loads((out / "report.json").read_text())
    assert [s["status"] for s in data["screws"]] == ["placed", "placed"], log
    (fault,) = data["faults"]
    assert fault["name"] == f"cut:{host}" and fault["detected"] and fault["arm_held"], fault
    if host == "console":
        assert fault["cause"].startswith("console silent"), fault
    net = data["case"]["network"]
    assert net["cut"]["hold_after_ms"] is not None and net["cut"]["screw_status"] == "placed", net["cut"]
    assert net["reference_timeout_s"] == 0.2
    hosts = net["hosts"]
    assert set(hosts) == {"tracker", "navigation", "robot", "console", "world"}
    assert [p["label"] for p in hosts["navigation"]["processes"]] == ["navigation", "registration"]
    assert {"arm", "sim_arm", "hold_probe"} <= {p["label"] for p in hosts["robot"]["processes"]}
    for h in ("navigation", "robot", "console", "world"):
        assert hosts[h]["dds_udp_datagrams_in"] > 0, (h, hosts[h])
    assert hosts["tracker"]["igtl_tcp_segments_in"] > 0 and hosts["tracker"]["dds_udp_datagrams_out"] == 0
    assert "## The OR network" in (out / "report.md").read_text()
    assert not any(name.startswith(f"t{domain_id()}{host[0]}-") for name in os.listdir("/var/run/netns"))
