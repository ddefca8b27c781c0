"""bridge: OpenIGTLink tracker bridge, zero-loss and latency on loopback, with pyigtl's client as the baseline.

Streams (each from a separate sender process acting as the tracker server, absolute-deadline paced):
* ``transform_1khz``: 1000 Hz, per sample a ``ReferenceToTracker`` + ``StylusToTracker`` TRANSFORM pair;
* ``tdata_400hz``: 400 Hz TDATA with 4 tools (Reference, Stylus, ArmMarker and one unknown tool), after
  the bridge sends STT_TDATA.
The bridge is the real ``tracker_bridge`` ROS node (rclpy, Fast DDS) in a ComposedStack.

Metrics: ``transform_1khz_lost`` = samples sent - tool-tip poses published; ``tdata_400hz_lost`` =
3 x samples sent - poses published (tool tip, reference, arm marker); ``latency_p50_ms`` /
``latency_p99_ms``: socket receive (``perf_counter_ns`` right after ``recv``) -> ``publish()`` returned,
for every tool-tip pose of both streams. Baseline ``pyigtl``: pyigtl 0.3.4 ``OpenIGTLinkClient`` on
the same 1 kHz TRANSFORM stream, polled every 0.5 ms with ``get_latest_messages()``:
``delivered_rate_hz`` = distinct StylusToTracker samples surfaced per second; ``latency_p99_ms`` =
sender's header time -> surfaced (one way; same clock, same host; pyigtl gives no socket receive time).
``details`` has the counts per stream and the same latency for the ``reference`` poses (the bridge
publishes a frame's tool tip first and its reference once the ``recv()`` chunk is handled). No
subscriber runs in the bench process (it would compete for the GIL).

Floor (issue 17, :mod:`spine_nav.bench.floor`): a raw TCP relay of the same OpenIGTLink bytes from the
same sender process, in this process with the same tuning and an EventsExecutor spun in a thread like the
bridge's ComposedStack: a socket thread ``recv()`` -> frames split by the header's body size -> for each
StylusToTracker message ``publish()`` of a pre-built serialized PoseStamped on ``tracking/tool_tip``;
latency measured exactly like the bridge's (``perf_counter_ns`` after ``recv`` -> ``publish()``
returned). Interleaved with the bridge on the 1 kHz TRANSFORM stream (floor, bridge, floor, bridge, ...)
for ``--rounds`` rounds of ``--duration-s`` each; ``latency_p99_vs_floor`` = median over the rounds of
bridge tool-tip p99 / floor p99 on that stream (the like-for-like bytes); the TDATA stream and pyigtl
run once after the rounds. ``latency_p50_ms``/``latency_p99_ms`` pool every round's TRANSFORM tool tips
and the TDATA run, as before.

``--profile`` adds ``details.profile``: the bridge's per-sample stages (decode, core reference, core tool,
conversion to CDR, publish) and the floor's work on the same bytes, microseconds per 1 kHz frame, back to back
(warm) and paced one frame per ~1 ms (cold, as at 1 kHz; ``details.profile.paced``)
(:mod:`spine_nav.bench.bridge_profile`).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np

from spine_nav.bench import BenchResult, info
from spine_nav.resources import package_dir, share_path
from spine_nav.bench.floor import add_floor_arguments, busy_core, interleave, load_env, median_of, ratio_rounds

REPO = package_dir().parent  # the folder spine_nav is imported from (the child's cwd)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=15.0, help="seconds per stream and round (default 15)")
    p.add_argument("--quick", action="store_true", help="5 s per stream (tests)")
    p.add_argument("--profile", action="store_true",
                   help="also time the bridge's hot path stage by stage next to the floor's work "
                        "(details.profile, microseconds; spine_nav.bench.bridge_profile)")
    add_floor_arguments(p)


# ---------------------------------------------------------------------------------------------- sender
def sender_main(port: int, rate_hz: float, duration_s: float, mode: str) -> None:
    """Run in a child process: serve one client, stream ``duration_s`` at ``rate_hz``, print {"sent": N}."""
    from spine_nav.geometry import make_transform
    from spine_nav.tracking import codec
    from spine_nav.tracking.codec import TDataElement
    from spine_nav.tracking.transport import IgtlServer

    started = threading.Event()

    def on_msg(msg, _t, _c):
        if msg.type == "STT_TDATA":
            started.set()

    server = IgtlServer(port, on_message=on_msg, host="127.0.0.1").start()
    print(json.dumps({"listening": server.port}), flush=True)
    deadline = time.monotonic() + 30.0
    while server.client_count == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    if mode == "tdata":
        started.wait(30.0)
    time.sleep(0.3)  # let the receiver settle
    T_ref = make_transform(np.eye(3), [10.0, -50.0, -1500.0])
    period = 1.0 / rate_hz
    n = int(round(duration_s * rate_hz))
    t0 = time.monotonic()
    sent = nbytes = 0
    for k in range(n):
        delay = t0 + k * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        a = 2 * np.pi * k / n
        T_tool = make_transform(np.eye(3), [30.0 * np.cos(a), 30.0 * np.sin(a), -1400.0])
        t = time.time()
        if mode == "tdata":
            data = codec.encode_tdata("Tracker", [TDataElement("ReferenceToTracker", T_ref),
                                                  TDataElement("StylusToTracker", T_tool),
                                                  TDataElement("ArmMarkerToTracker", T_ref),
                                                  TDataElement("Tool4ToTracker", T_tool)], t)
        else:
            data = (codec.encode_transform("ReferenceToTracker", T_ref, t)
                    + codec.encode_transform("StylusToTracker", T_tool, t))
        if server.broadcast(data) == 0:
            break
        sent += 1
        nbytes += len(data)
    print(json.dumps({"sent": sent, "bytes": nbytes}), flush=True)
    deadline = time.monotonic() + 30.0  # keep the connection until the bridge hangs up (it may lag behind)
    while server.client_count and time.monotonic() < deadline:
        time.sleep(0.05)
    server.close()


def _spawn_sender(rate_hz: float, duration_s: float, mode: str) -> tuple[subprocess.Popen, int]:
    code = (f"from spine_nav.bench.bridge import sender_main; "
            f"sender_main(0, {rate_hz}, {duration_s}, {mode!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(REPO))
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("bench bridge: sender process did not start")
    return proc, json.loads(line)["listening"]


# ---------------------------------------------------------------------------------------------- runs
def _run_bridge(mode: str, rate_hz: float, duration_s: float) -> dict:
    from spine_nav.nodes.runner import ComposedStack, freeze_startup_objects, tune_process_for_nodes

    tune_process_for_nodes()  # as `spine-nav up` does for the stack's process
    proc, port = _spawn_sender(rate_hz, duration_s, mode)
    args = ["-p", f"tracker_bridge:port:={port}", "-p", "tracker_bridge:mode:=client",
            "-p", f"tracker_bridge:tdata:={'true' if mode == 'tdata' else 'false'}"]
    stack = ComposedStack(["tracker_bridge"], params_file=share_path("config", "nodes.yaml"), extra_ros_args=args)
    bridge = stack.nodes["tracker_bridge"]
    try:
        stack.start()
        freeze_startup_objects()
        line = proc.stdout.readline()
        report = json.loads(line) if line else {"sent": 0, "bytes": 0}
        sent = int(report["sent"])
        # drain: every byte sent has been read and the published count has settled (bridge may lag behind
        # on a loaded machine; that shows in the latency, not as loss)
        last, t_last = -1, time.monotonic()
        drain_deadline = t_last + 120.0
        while time.monotonic() < drain_deadline:
            conn = bridge.link.connection
            now = sum(bridge.published.values())
            if now != last:
                last, t_last = now, time.monotonic()
            if conn is not None and conn.bytes_received >= report["bytes"] and time.monotonic() - t_last > 0.3:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        published = dict(bridge.published)
        lat = np.array(bridge.latency_ns, dtype=float) * 1e-6
        ref_lat = np.array(bridge.reference_latency_ns, dtype=float) * 1e-6
        rejected = dict(bridge.core.rejected)
        ignored = dict(bridge.core.ignored_devices)
        stale = bridge.stale_reported
        stack.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    expected = sent if mode == "transform" else 3 * sent
    got = published["tool_tip"] if mode == "transform" else sum(published.values())
    return {"sent": sent, "lost": int(expected - got), "published": published, "latency_ms": lat,
            "reference_latency_ms": ref_lat,
            "rejected": rejected, "ignored_devices": ignored, "stale": stale}


def _run_floor(rate_hz: float, duration_s: float) -> dict:
    """The floor: raw TCP relay of the sender's TRANSFORM bytes -> publish of a pre-built PoseStamped."""
    import socket

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context

    from spine_nav.nodes.cdr import PoseStampedPacker
    from spine_nav.nodes.qos import SENSOR_QOS
    from spine_nav.nodes.runner import freeze_startup_objects, make_executor, spin_until, tune_process_for_nodes
    from spine_nav.tracking.codec import HEADER_SIZE

    tune_process_for_nodes()
    size_at = struct.calcsize(">H12s20sII")  # body_size's offset in the OpenIGTLink header (codec._HEADER)
    dev_at, dev = 14, b"StylusToTracker".ljust(20, b"\0")  # device name field: after version and type
    proc, port = _spawn_sender(rate_hz, duration_s, "transform")
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bridge_floor", context=ctx)
    pub = node.create_publisher(PoseStamped, "tracking/tool_tip", SENSOR_QOS)
    data = PoseStampedPacker("Reference").pack(time.time(), (0.0, 0.0, -1.4), (0.0, 0.0, 0.0, 1.0))
    ex = make_executor("events", context=ctx)
    ex.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=spin_until, args=(ex, lambda: not stop.is_set()), daemon=True)
    lat: list[int] = []
    got = {"bytes": 0, "published": 0}
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.2)

    def reader() -> None:
        buf = b""
        while not stop.is_set():
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            t_ns = time.perf_counter_ns()
            if not chunk:
                return
            got["bytes"] += len(chunk)
            buf += chunk
            off = 0
            while len(buf) - off >= HEADER_SIZE:
                end = off + HEADER_SIZE + struct.unpack_from(">Q", buf, off + size_at)[0]
                if end > len(buf):
                    break
                if buf[off + dev_at: off + dev_at + 20] == dev:
                    pub.publish(data)
                    got["published"] += 1
                    lat.append(time.perf_counter_ns() - t_ns)
                off = end
            buf = buf[off:]

    th = threading.Thread(target=reader, name="floor_socket", daemon=True)
    try:
        spinner.start()
        th.start()
        freeze_startup_objects()
        line = proc.stdout.readline()
        report = json.loads(line) if line else {"sent": 0, "bytes": 0}
        deadline = time.monotonic() + 60.0
        while got["bytes"] < report["bytes"] and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        sock.close()
        th.join(timeout=5)
        spinner.join(timeout=5)
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    lat_ms = np.array(lat, dtype=float) * 1e-6
    return {"sent": int(report["sent"]), "lost": int(report["sent"]) - got["published"], "latency_ms": lat_ms,
            **_pcts(lat_ms)}


def _run_pyigtl(rate_hz: float, duration_s: float) -> dict:
    import pyigtl

    proc, port = _spawn_sender(rate_hz, duration_s, "transform")
    client = pyigtl.OpenIGTLinkClient(host="127.0.0.1", port=port)
    seen: set[float] = set()
    lat = []
    reader: dict = {}
    th = threading.Thread(target=lambda: reader.update(line=proc.stdout.readline()), daemon=True)
    th.start()
    try:
        while th.is_alive():  # until the sender reports it has sent everything
            for msg in client.get_latest_messages():
                if msg.device_name == "StylusToTracker" and msg.timestamp not in seen:
                    now = time.time()
                    seen.add(msg.timestamp)
                    lat.append(now - msg.timestamp)
            time.sleep(0.0005)
        time.sleep(0.1)
        for msg in client.get_latest_messages():
            if msg.device_name == "StylusToTracker" and msg.timestamp not in seen:
                seen.add(msg.timestamp)
        sent = int(json.loads(reader["line"])["sent"]) if reader.get("line") else 0
    finally:
        client.stop()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"sent": sent, "delivered": len(seen), "duration_s": duration_s,
            "latency_ms": np.array(lat) * 1e3}


def _pcts(lat_ms: np.ndarray) -> dict:
    if not lat_ms.size:
        return {}
    return {f"latency_p{q}_ms": round(float(np.percentile(lat_ms, q)), 4) for q in (50, 90, 99)}


def run(args: argparse.Namespace) -> BenchResult:
    duration = 5.0 if args.quick else float(args.duration_s)
    load_before = os.getloadavg()
    with busy_core(getattr(args, "busy_core", False)):
        info(f"bench bridge: floor and bridge interleaved on a 1 kHz TRANSFORM stream, {duration:g} s each")

        def stack(i: int) -> dict:
            r = _run_bridge("transform", 1000.0, duration)
            info(f"bench bridge: sent {r['sent']}, lost {r['lost']}")
            return {**r, **_pcts(r["latency_ms"])}

        pairs = interleave(getattr(args, "rounds", 1), lambda i: _run_floor(1000.0, duration), stack, info)
        info(f"bench bridge: 400 Hz TDATA x4 tools, {duration:g} s")
        td = _run_bridge("tdata", 400.0, duration)
        info(f"bench bridge: sent {td['sent']}, lost {td['lost']}; baseline pyigtl client on 1 kHz, {duration:g} s")
        py = _run_pyigtl(1000.0, duration)
    floors, trs = [p[0] for p in pairs], [p[1] for p in pairs]
    tr = trs[-1]
    ratio = ratio_rounds(pairs, "latency_p99_ms")
    lat = np.concatenate([*(r["latency_ms"] for r in trs), td["latency_ms"]])
    metrics = {
        "transform_1khz_lost": sum(r["lost"] for r in trs),
        "tdata_400hz_lost": td["lost"],
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
        "latency_p99_vs_floor": ratio["median_ratio"],
    }
    baselines = {"pyigtl": {
        "delivered_rate_hz": round(py["delivered"] / duration, 1),
        "latency_p99_ms": round(float(np.percentile(py["latency_ms"], 99)), 3) if py["latency_ms"].size else None,
    }, "floor": {**median_of(floors, ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms"]),
                   "lost": sum(r["lost"] for r in floors),
                   "what": "raw TCP relay of the same OpenIGTLink bytes: recv -> publish a pre-built PoseStamped"}}
    details = {
        "duration_s": duration,
        "rounds": {"latency_p99_ms": ratio, "floor": [{k: v for k, v in r.items() if k != "latency_ms"} for r in floors],
                   "bridge": [{k: v for k, v in r.items() if not k.endswith("latency_ms") or k.startswith("latency_p")}
                              for r in trs]},
        "transform_1khz": {**{k: v for k, v in tr.items() if not k.endswith("latency_ms")}, **_pcts(tr["latency_ms"]),
                           "reference": _pcts(tr["reference_latency_ms"])},
        "tdata_400hz": {**{k: v for k, v in td.items() if not k.endswith("latency_ms")}, **_pcts(td["latency_ms"]),
                        "reference": _pcts(td["reference_latency_ms"])},
        "pyigtl": {"sent": py["sent"], "delivered": py["delivered"],
                   "latency_p50_ms": round(float(np.percentile(py["latency_ms"], 50)), 3) if py["latency_ms"].size
                   else None},
        "why_own_transport": "pyigtl keeps only the latest message per device, polls with a 10 ms socket "
                             "timeout without TCP_NODELAY and drops TDATA/STATUS on receive",
    }
    if getattr(args, "profile", False):
        from spine_nav.bench.bridge_profile import profile_bridge

        info("bench bridge: --profile, the hot path stage by stage")
        details["profile"] = profile_bridge(1000 if args.quick else 5000, paced=300 if args.quick else 2000)
    from importlib.metadata import version

    env = {"pyigtl": version("pyigtl"), "executor": "events (spin_once loop)",
           "sender": "separate process, absolute-deadline sleep", **load_env(args, load_before)}
    return BenchResult("bridge", metrics, baselines, env, details)
