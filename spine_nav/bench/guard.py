"""Trajectory guard: core evaluation time per sample (20 screws) and node latency at 1 kHz.

Core (`core_eval_median_us`): :meth:`TrajectoryGuard.evaluate` (pose checks, automatic screw
selection, metrics, latches, debounce) on a scripted tool path over a 20-screw plan
(10 levels x 2 sides): approach, align, drill, retract, next screw, with 0.15 mm tracker noise.
``details.core`` also times the alternatives measured in the same run: numpy vs plain-math
selection, selection without the exact search skipping (full nearest search every sample),
and plain vs numpy metrics alone. The guard ships with the plain-math path (see
:mod:`spine_nav.guard.metrics`).

Node (`node_latency_p99_ms`, `node_dropped`): the `trajectory_guard` node runs in its own
process (``python -m spine_nav.bench.guard --serve EXECUTOR``); this process publishes the
registered plan and ``tracking/tool_tip`` at ``--rate-hz`` (1 kHz) for ``--duration-s`` (60 s)
from a driver node and receives ``guard/status`` (separate processes over Fast DDS on one host).
Latency (the issue's "tool sample in -> status out") = the guard node's own record of
status ``publish()`` returned (wall clock) - the tool sample's stamp (wall clock at the driver's
publish), i.e. one DDS hop + executor dispatch + judging + publishing, for the samples of the measured
window; ``round_trip_*`` adds the status's way back to the driver and the driver's own executor
(status received - stamp). Dropped = samples without a status reaching the driver. Measured with the
EventsExecutor (``executor``) and, in the same run, rclpy's SingleThreadedExecutor
(``baselines.default_executor``). The driver uses the same SingleThreadedExecutor in both runs.

Floor (issue 17, :mod:`spine_nav.bench.floor`): the bare relay node (:mod:`spine_nav.nodes.floor_relay`:
raw subscription -> constant pre-serialized GuardStatus) in the same child-process layout, executor and
process tuning, measured the same way, interleaved with the guard node (floor, guard, floor, guard, ...)
for ``--rounds`` rounds of ``--duration-s`` each. ``node_latency_p99_vs_floor`` = median over the rounds
of guard p99 / floor p99; ``node_latency_p99_ms`` = median of the rounds' guard p99; ``baselines.floor``
= the floor's own figures (median over the rounds); ``details.rounds`` = per-round values and spread.
The SingleThreadedExecutor baseline runs once, after the rounds.

``--profile`` adds ``details.profile``: the guard node's tool-sample callback step by step (decode, lock,
clock, judging, status, ``publish()``, latency record) and the floor relay's callback on the same bytes,
microseconds per sample, single-threaded (:mod:`spine_nav.bench.guard_profile`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spine_nav.bench import BenchResult, info
from spine_nav.bench.floor import add_floor_arguments, busy_core, interleave, load_env, median_of, ratio_rounds

RATE_HZ = 1000.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=15.0, help="node run per round and executor, s (default 15)")
    p.add_argument("--rate-hz", type=float, default=RATE_HZ, help="tool sample rate, Hz (default 1000)")
    p.add_argument("--quick", action="store_true",
                   help="short run for tests: at most 3 s per executor, fewer core samples")
    p.add_argument("--skip-node", action="store_true", help="core timing only")
    p.add_argument("--profile", action="store_true",
                   help="also time the node's tool-sample callback step by step "
                        "(details.profile, microseconds; spine_nav.bench.guard_profile)")
    add_floor_arguments(p)


# ---- the plan and the tool path -------------------------------------------------------------
def bench_plan(n_levels: int = 10):
    """A 2 x n_levels screw plan in Reference: levels 35 mm apart, entries +-22 mm, 20 deg medial."""
    from spine_nav.plan import KNOWN_LEVELS, Plan, Screw

    levels = [lv for lv in KNOWN_LEVELS if lv.startswith(("T", "L"))][-n_levels:]
    screws = []
    for i, lv in enumerate(levels):
        for side, sx in (("left", 1.0), ("right", -1.0)):
            entry = np.array([22.0 * sx, 35.0 * i, 0.0])
            direction = np.array([-math.sin(math.radians(20)) * sx, 0.0, math.cos(math.radians(20))])
            screws.append(Screw(id=f"{lv}_{side}", level=lv, side=side, entry_mm=entry,
                                target_mm=entry + 45.0 * direction, diameter_mm=6.5, length_mm=45.0))
    return Plan(screws=tuple(screws), frame="Reference", case_id="bench_guard")


def tool_path(plan, n_samples: int, seed: int = 6) -> list[np.ndarray]:
    """Scripted tool poses (4x4, mm) visiting the screws in turn: approach 25 mm -> entry -> 44 mm deep
    -> out; small tilt and 0.15 mm noise."""
    from scipy.spatial.transform import Rotation

    from spine_nav.geometry import make_transform

    rng = np.random.default_rng(seed)
    poses: list[np.ndarray] = []
    per_screw = 1000
    phase = np.concatenate([np.linspace(-25, 0, 300), np.linspace(0, 44, 500), np.linspace(44, -25, 200)])
    k = 0
    while len(poses) < n_samples:
        s = plan.screws[k % len(plan.screws)]
        R = Rotation.align_vectors([s.direction], [[0, 0, 1]])[0]
        tilt = Rotation.from_rotvec(np.radians(1.0) * np.array([1.0, 0.0, 0.0]))
        Rm = (tilt * R).as_matrix()
        for depth in phase[: min(per_screw, n_samples - len(poses))]:
            tip = s.entry_mm + depth * s.direction + rng.normal(0, 0.15, 3)
            poses.append(make_transform(Rm, tip))
        k += 1
    return poses


# ---- core -------------------------------------------------------------------------------------
def _time_guard(plan, poses, method: str, skip_search: bool = True) -> list[float]:
    from spine_nav.guard import TrajectoryGuard

    g = TrajectoryGuard(selection_method=method)
    g.set_plan(plan)
    if not skip_search:
        g.selector._skip_search = lambda tip: False  # noqa: SLF001 - measuring the alternative
    out = []
    clock = time.perf_counter_ns
    t = 1000.0
    for T in poses:
        t += 0.001
        t0 = clock()
        g.evaluate(T, t, t + 0.0005)
        out.append((clock() - t0) / 1000.0)
    return out


def _time_metrics(plan, poses) -> dict[str, float]:
    from spine_nav.guard import ScrewGeometry, compute_metrics, compute_metrics_numpy, tip_and_axis

    s = plan.screws[0]
    g = ScrewGeometry.from_screw(s)
    clock = time.perf_counter_ns
    plain, npy = [], []
    for T in poses[:5000]:
        t0 = clock()
        tip, axis = tip_and_axis(T)
        compute_metrics(g, tip, axis)
        t1 = clock()
        compute_metrics_numpy(s, T)
        t2 = clock()
        plain.append((t1 - t0) / 1000.0)
        npy.append((t2 - t1) / 1000.0)
    return {"metrics_plain_median_us": statistics.median(plain), "metrics_numpy_median_us": statistics.median(npy)}


def core_bench(n_samples: int) -> dict:
    plan = bench_plan()
    poses = tool_path(plan, n_samples)
    res = {"screws": len(plan), "samples": n_samples}
    for method in ("plain", "numpy"):
        for skip in (True, False):
            key = f"evaluate_{method}{'' if skip else '_full_search'}"
            times = _time_guard(plan, poses, method, skip)
            res[f"{key}_median_us"] = round(statistics.median(times), 3)
            res[f"{key}_p99_us"] = round(float(np.percentile(times, 99)), 3)
    res.update({k: round(v, 3) for k, v in _time_metrics(plan, poses).items()})
    res["shipped"] = "plain (math module, tuples) with exact search skipping"
    return res


# ---- node ---------------------------------------------------------------------------------------
def serve(executor: str, latency_out: str) -> int:
    """Child process: the trajectory_guard node alone, composed like `spine-nav up`, until SIGINT/SIGTERM;
    then saves the node's own (sample stamp ns, sample -> status published ns) pairs to ``latency_out`` (.npy)."""
    from spine_nav.nodes.runner import ComposedStack, freeze_startup_objects, tune_process_for_nodes

    if executor == "floor":  # the bare relay node: the floor (issue 17)
        from spine_nav.nodes.floor_relay import serve as serve_floor

        relay = serve_floor("guard/status")
        np.save(latency_out, np.array(list(relay.latency.samples), dtype=np.int64).reshape(-1, 2))
        return 0
    tune_process_for_nodes()
    stop = {"flag": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.__setitem__("flag", True))
    with ComposedStack(["trajectory_guard"], executor=executor,
                       extra_ros_args=["-p", "trajectory_guard:markers_period_s:=0.1"]) as stack:
        freeze_startup_objects()
        while not stop["flag"]:
            time.sleep(0.1)
        pairs = np.array(list(stack.nodes["trajectory_guard"].latency.samples), dtype=np.int64).reshape(-1, 2)
    np.save(latency_out, pairs)
    return 0


def node_run(executor: str, duration_s: float, rate_hz: float) -> dict:
    """Run the guard node with ``executor`` in a child process and drive it at ``rate_hz``."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from spine_nav_interfaces.msg import GuardStatus, ScrewPlan

    from spine_nav.nodes.conversions import matrix_mm_to_pose, plan_to_msg, seconds_to_stamp
    from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS

    latency_file = tempfile.NamedTemporaryFile(suffix=".npy", delete=False)
    latency_file.close()
    child = subprocess.Popen([sys.executable, "-m", "spine_nav.bench.guard", "--serve", executor, latency_file.name],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_guard_driver", context=ctx)
    first_rx: dict[tuple[int, int], float] = {}
    states: dict[str, int] = {}

    def on_status(msg: GuardStatus) -> None:
        now = time.time()
        key = (msg.tool_sample_stamp.sec, msg.tool_sample_stamp.nanosec)
        if key not in first_rx:
            first_rx[key] = now
            states[msg.state_name] = states.get(msg.state_name, 0) + 1

    node.create_subscription(GuardStatus, "guard/status", on_status, STATUS_QOS)
    pub = node.create_publisher(PoseStamped, "tracking/tool_tip", SENSOR_QOS)
    plan_pub = node.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    plan = bench_plan()
    poses = [matrix_mm_to_pose(T) for T in tool_path(plan, 1000)]  # one screw's path, repeated
    sent: dict[tuple[int, int], float] = {}
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and not (pub.get_subscription_count() and node.count_publishers("guard/status")
                                                   and (executor == "floor" or plan_pub.get_subscription_count())):
            if child.poll() is not None:
                raise RuntimeError(f"guard node process exited: {child.stderr.read()[-2000:]}")
            ex.spin_once(timeout_sec=0.05)
        plan_pub.publish(plan_to_msg(plan, time.time()))
        # warm-up: until statuses come back for samples (plan latched, discovery done both ways)
        warm = time.monotonic() + 30.0
        msg = PoseStamped()
        msg.header.frame_id = "Reference"
        while time.monotonic() < warm:
            msg.pose = poses[0]
            msg.header.stamp = seconds_to_stamp(time.time())
            pub.publish(msg)
            ex.spin_once(timeout_sec=0.05)
            if len(first_rx) >= 5:
                break
        if len(first_rx) < 5:
            raise RuntimeError(f"guard node ({executor}) answered {len(first_rx)} warm-up samples in 30 s")
        info(f"bench guard: {executor} node ready ({len(first_rx)} warm-up statuses)")
        first_rx.clear()
        states.clear()
        time.sleep(0.2)
        ex.spin_once(timeout_sec=0.05)
        first_rx.clear()
        states.clear()
        info(f"bench guard: {executor} executor, {rate_hz:g} Hz for {duration_s:g} s")
        period = 1.0 / rate_hz
        n = int(round(duration_s * rate_hz))
        t_start = time.monotonic()
        for i in range(n):
            due = t_start + i * period
            while True:  # absolute deadlines; serve DDS while waiting
                left = due - time.monotonic()
                if left <= 0:
                    break
                ex.spin_once(timeout_sec=left)
            msg = PoseStamped()
            msg.header.frame_id = "Reference"
            msg.pose = poses[i % len(poses)]
            t_pub = time.time()
            msg.header.stamp = seconds_to_stamp(t_pub)
            sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = t_pub
            pub.publish(msg)
            if i and i % int(rate_hz * 10) == 0:
                info(f"  {i}/{n} samples sent, {len(first_rx)} statuses")
        achieved_hz = n / (time.monotonic() - t_start)
        drain = time.monotonic() + 3.0
        while time.monotonic() < drain and len(set(sent) - set(first_rx)) > 0:
            ex.spin_once(timeout_sec=0.05)
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    round_trip = [(first_rx[k] - sent[k]) * 1000.0 for k in sent if k in first_rx]
    dropped = sum(1 for k in sent if k not in first_rx)
    try:  # the node's own sample -> status-published ages, for the measured samples only
        pairs = np.load(latency_file.name)
    except (OSError, ValueError):
        pairs = np.zeros((0, 2), dtype=np.int64)
    finally:
        Path(latency_file.name).unlink(missing_ok=True)
    measured = {k[0] * 1_000_000_000 + k[1] for k in sent}
    lat = [age * 1e-6 for stamp, age in pairs.tolist() if stamp in measured]

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    return {"executor": executor, "sent": len(sent), "dropped": dropped, "achieved_rate_hz": round(achieved_hz, 1),
            "latency_samples": len(lat), "latency_p50_ms": pct(lat, 50), "latency_p99_ms": pct(lat, 99),
            "latency_max_ms": round(float(max(lat)), 3) if lat else None,
            "round_trip_p50_ms": pct(round_trip, 50), "round_trip_p99_ms": pct(round_trip, 99), "states": states}


def run(args: argparse.Namespace) -> BenchResult:
    quick = getattr(args, "quick", False)
    duration = min(3.0, args.duration_s) if quick else args.duration_s
    n_core = 3000 if quick else 20000
    load_before = os.getloadavg()
    with busy_core(getattr(args, "busy_core", False)):
        info(f"bench guard: core, {n_core} samples x 4 variants")
        core = core_bench(n_core)
        details = {"core": core}
        metrics = {"core_eval_median_us": core["evaluate_plain_median_us"]}
        baselines: dict = {}
        if getattr(args, "profile", False):  # its own process (and no import cycle: it uses this module's path)
            info("bench guard: --profile, the node's tool-sample callback step by step")
            prof = subprocess.run([sys.executable, "-m", "spine_nav.bench.guard_profile", str(1000 if quick else 5000)],
                                  capture_output=True, text=True, timeout=600)
            if prof.returncode != 0:
                raise RuntimeError(f"bench guard --profile failed: {prof.stderr[-2000:]}")
            details["profile"] = json.loads(prof.stdout)
        if not getattr(args, "skip_node", False):
            pairs = interleave(getattr(args, "rounds", 1), lambda i: node_run("floor", duration, args.rate_hz),
                               lambda i: node_run("events", duration, args.rate_hz), info)
            single = node_run("single", duration, args.rate_hz)
            floors, stacks = [p[0] for p in pairs], [p[1] for p in pairs]
            ratio = ratio_rounds(pairs, "latency_p99_ms")
            details["node"] = {"events": stacks[-1], "single": single,
                               "layout": "guard node (or the bare relay) in its own process; driver (publisher + "
                                         "status subscriber) in the bench process; Fast DDS on one host"}
            details["rounds"] = {"node_latency_p99_ms": ratio, "floor": floors, "events": stacks}
            metrics.update({"node_latency_p99_ms": median_of(stacks, ["latency_p99_ms"])["latency_p99_ms"],
                            "node_latency_p99_vs_floor": ratio["median_ratio"],
                            "node_dropped": sum(int(r["dropped"]) for r in stacks),
                            "executor": "rclpy.experimental.EventsExecutor"})
            baselines["default_executor"] = {"node_latency_p99_ms": single["latency_p99_ms"]}
            baselines["floor"] = {**median_of(floors, ["latency_p50_ms", "latency_p99_ms", "latency_max_ms",
                                                       "round_trip_p99_ms"]),
                                  "dropped": sum(int(r["dropped"]) for r in floors),
                                  "what": "bare relay node: raw subscription -> constant pre-serialized GuardStatus"}
    env = {"node_process_layout": "separate processes", "duration_s": duration, "rate_hz": args.rate_hz,
           "load_average": os.getloadavg(), **load_env(args, load_before)}
    return BenchResult(bench="guard", metrics=metrics, baselines=baselines, env=env, details=details)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m spine_nav.bench.guard --serve {events,single,floor} LATENCY_OUT.npy")
