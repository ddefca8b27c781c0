"""Where the guard node's per-sample time goes: its tool-sample callback step by step (``bench guard --profile``).

For ``n`` tool samples of the bench's scripted path (:func:`spine_nav.bench.guard.tool_path` over the
20-screw :func:`spine_nav.bench.guard.bench_plan`, serialized PoseStamped bytes stamped "now", as the
guard's ``raw=True`` subscription hands them over) this builds a real ``trajectory_guard`` node (rclpy
context of its own, no executor, no subscriber on ``guard/status``) and times with ``perf_counter_ns``:

* ``callback_total``: the node's own DDS callback (``node.on_tool(data)``) per sample: decode, lock, clock,
  judging, the GuardStatus, ``publish()``, latency record, i.e. the node's share of the bench's latency;
* the same steps one by one, in the order the callback runs them, on the same samples (each step timed
  alone, so their sum exceeds the total by the timer's own ~0.1 us per step):
  ``decode`` (CDR -> stamp, frame, quaternion, mm), ``lock`` (the node's lock, acquired and released),
  ``clock`` (the node clock read and its conversions), ``judge`` (the core's verdict, through
  :class:`spine_nav.guard.live.LiveGuard` where the node has one: ``sample_held`` where it exists, as the node
  calls it under its lock, else ``sample`` with its re-entrant lock), ``status`` (verdict -> what is
  published: a GuardStatus message object, or CDR bytes where the node packs them), ``publish``
  (rclpy ``publish()`` of that), ``latency_add`` (the node's latency record);
* ``floor_total``: the floor relay's callback (:class:`spine_nav.nodes.floor_relay.FloorRelayNode`) on the
  same bytes.

Paced (``paced``, the measurement that matters at 1 kHz): the same callbacks one sample per ~1 ms
(``time.sleep(0.001)`` before each call, like the real stream), so the code runs cold as in the node
(caches and branch predictors taken by the idle wait; at 1 kHz the p50 latency excess over the floor
was ~4x the warm callback difference): ``callback`` (the guard's ``on_tool``), ``floor`` (the relay's),
each after its own sleep, alternated sample by sample; ``steps`` the steps above in order after one sleep
(so the first is coldest, as in the callback). ``calls_per_sample``: Python function calls (``call``) and
C function calls (``c_call``) per guard callback, counted with :func:`sys.setprofile` (the floor relay's
beside it).

Values: median and p90 over the samples (p99 too when paced), microseconds; ``cprofile`` lists the callback's
top functions by own time. Single-threaded and without DDS delivery: it says where the microseconds go; the bench's rounds
measure the latency with the real processes. The module only uses what the node offered before the
restructuring too (``on_tool``, ``on_plan``, ``guard``, ``status_pub``, ``latency``), so the same file
profiles an older checkout: ``PYTHONPATH=<checkout> python spine_nav/bench/guard_profile.py N``.
"""
from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time
from typing import Any

import numpy as np


def stats_us(ns: list[int], pcts: tuple[int, ...] = (50, 90)) -> dict[str, float]:
    """Percentiles ``pcts`` of nanosecond timings, as ``p<N>_us`` rounded to 0.01 us (also bench.bridge_profile's)."""
    a = np.asarray(ns, dtype=float) * 1e-3
    return {f"p{p}_us": round(float(np.percentile(a, p)), 2) for p in pcts}


def _count_calls(fn, args_list: list) -> dict[str, float]:
    """Python (``call``) and C (``c_call``) function calls per call of ``fn`` over ``args_list``."""
    counts = {"call": 0, "c_call": 0}

    def prof(frame, event, arg):
        if event in counts:
            counts[event] += 1
    sys.setprofile(prof)
    try:
        for a in args_list:
            fn(a)
    finally:
        sys.setprofile(None)
    return {"python_calls": round(counts["call"] / len(args_list), 1),
            "c_calls": round(counts["c_call"] / len(args_list), 1)}


def _paced(node, floor, samples: list[bytes], steps) -> dict[str, Any]:
    """The callbacks and the steps one sample per ~1 ms (a sleep before each), as the 1 kHz stream runs them."""
    clock, sleep = time.perf_counter_ns, time.sleep
    total, floor_total = [], []
    per_step: dict[str, list[int]] = {name: [] for name, _ in steps}
    for data in samples:
        sleep(0.001)
        d = _restamp(data)
        t0 = clock()
        node.on_tool(d)
        total.append(clock() - t0)
        sleep(0.001)
        t0 = clock()
        floor._on_tool(d)
        floor_total.append(clock() - t0)
    for data in samples:
        s: dict = {}
        d = _restamp(data)
        sleep(0.001)
        for name, fn in steps:
            t0 = clock()
            fn(d, s)
            per_step[name].append(clock() - t0)
    pcts = (50, 90, 99)
    return {"samples": len(samples), "callback": stats_us(total, pcts), "floor": stats_us(floor_total, pcts),
            "steps": {name: stats_us(v, pcts) for name, v in per_step.items()},
            "what": "one sample per ~1 ms: time.sleep(0.001) before each guard / floor callback (alternated), "
                    "and before each sample's steps in order; perf_counter_ns"}


def _samples(n: int) -> list[bytes]:
    from rclpy.serialization import serialize_message

    from spine_nav.bench.guard import bench_plan, tool_path
    from spine_nav.nodes.conversions import matrix_mm_to_pose_stamped

    plan = bench_plan()
    t0 = time.time()
    return [serialize_message(matrix_mm_to_pose_stamped(T, "Reference", t0 + 1e-3 * i))
            for i, T in enumerate(tool_path(plan, n))]


def _restamp(data: bytes) -> bytes:
    """The sample stamped now (system clock), so the guard does not judge it stale."""
    import struct

    ns = time.time_ns()
    return data[:4] + struct.pack("<iI", ns // 1_000_000_000, ns % 1_000_000_000) + data[12:]


def _steps(node) -> list[tuple[str, Any]]:
    """(name, fn(data, state)) for the node's per-sample steps, as its callback runs them."""
    from spine_nav.nodes import conversions as conv

    live = getattr(node, "live", None)
    packer = getattr(node, "status_packer", None)  # the pre-packed CDR GuardStatus, where the node has one
    lock = getattr(node, "_lock", None) or live.lock  # the node's; LiveGuard.sample's own re-entry is in "judge"
    clock = node.get_clock()
    fast_decode = getattr(conv, "pose_cdr_fields_mm", None)
    # the node judges under its own lock with LiveGuard.sample_held where it has it (no second acquisition)
    judge_live = None if live is None else getattr(live, "sample_held", live.sample)

    def decode(data, s):
        if fast_decode is not None and packer is not None:
            sec, nsec, frame, q, t = fast_decode(data)
            s["stamp"] = (sec, nsec)
            s["args"] = (frame, q, t, sec + nsec * 1e-9)
        else:
            stamp, frame, q, t = conv.pose_cdr_to_quat_mm(data)
            s["stamp"] = stamp
            s["args"] = (frame, q, t, stamp.sec + stamp.nanosec * 1e-9)

    def take_lock(data, s):
        with lock:
            pass

    def read_clock(data, s):
        if packer is not None:
            s["now_ns"] = node.now_ns()
        else:
            now = clock.now()
            s["now_s"], s["now_msg"] = now.nanoseconds * 1e-9, now.to_msg()

    def judge(data, s):
        frame, q, t, stamp_s = s["args"]
        now_s = s["now_s"] if "now_s" in s else s["now_ns"] * 1e-9
        s["v"] = judge_live(frame, q, t, stamp_s, now_s) if live is not None else \
            node.guard.evaluate_quat(q, t, stamp_s, now_s)

    def status(data, s):
        if packer is not None:
            s["msg"] = conv.verdict_to_status_cdr(s["v"], packer, s["now_ns"], s["stamp"])
        elif hasattr(conv, "verdict_to_msg"):
            s["msg"] = conv.verdict_to_msg(s["v"], "Reference", s["now_msg"], s["stamp"])
        else:  # 1cad138: the same fields, built inline in the node
            from spine_nav_interfaces.msg import GuardStatus

            v = s["v"]
            m = v.metrics
            msg = GuardStatus(active_screw_id=v.screw_id, state=int(v.state), state_name=v.state.name,
                              reason=v.reason, lateral_error_mm=m.lateral_error_mm,
                              entry_offset_mm=m.entry_offset_mm, angular_error_deg=m.angular_error_deg,
                              depth_mm=m.depth_mm, remaining_mm=m.remaining_mm,
                              predicted_tip_error_mm=m.predicted_tip_error_mm, sample_age_ms=v.sample_age_ms)
            msg.header.frame_id = "Reference"
            msg.header.stamp = s["now_msg"]
            msg.tool_sample_stamp = s["stamp"]
            s["msg"] = msg

    def publish(data, s):
        node.status_pub.publish(s["msg"])

    def latency_add(data, s):
        st = s["stamp"]
        if isinstance(st, tuple):
            node.latency.add_ns(st[0], st[1])
        else:
            node.latency.add(st)

    return [("decode", decode), ("lock", take_lock), ("clock", read_clock), ("judge", judge),
            ("status", status), ("publish", publish), ("latency_add", latency_add)]


def profile_guard(n: int = 5000, with_cprofile: bool = True, paced: int = 0) -> dict[str, Any]:
    """Per-step microseconds of the guard node's tool-sample callback and the floor relay's, over ``n`` samples
    back to back, and over ``paced`` samples one per ~1 ms (0: not paced; ~4 ms of wall time per sample)."""
    import rclpy
    from rclpy.context import Context

    from spine_nav.bench.guard import bench_plan
    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.nodes.floor_relay import FloorRelayNode
    from spine_nav.nodes.trajectory_guard import TrajectoryGuardNode

    samples = _samples(n)
    ctx = Context()
    rclpy.init(context=ctx, args=["guard_profile", "--ros-args", "-p", "trajectory_guard:tool_in_process:=false"])
    node = TrajectoryGuardNode(context=ctx)
    floor = FloorRelayNode("bench/floor_status_profile", "bench/tool_tip_profile", context=ctx)
    try:
        node.on_plan(plan_to_msg(bench_plan(), time.time()))
        clock = time.perf_counter_ns
        for data in samples[:500]:  # warm-up: the node, the selector, the publisher
            node.on_tool(_restamp(data))
        total, floor_total = [], []
        steps = _steps(node)
        per_step: dict[str, list[int]] = {name: [] for name, _ in steps}
        states: dict[str, int] = {}
        for data in samples:
            d = _restamp(data)
            t0 = clock()
            node.on_tool(d)
            total.append(clock() - t0)
            t0 = clock()
            floor._on_tool(d)
            floor_total.append(clock() - t0)
            s: dict = {}
            for name, fn in steps:
                t0 = clock()
                fn(d, s)
                per_step[name].append(clock() - t0)
            states[s["v"].state.name] = states.get(s["v"].state.name, 0) + 1
        out: dict[str, Any] = {"samples": n, "callback_total": stats_us(total), "floor_total": stats_us(floor_total),
                               "steps": {name: stats_us(v) for name, v in per_step.items()}, "states": states,
                               "what": "guard node tool-sample callback (node.on_tool(bytes)) and its steps, "
                                       "single-threaded, no DDS delivery, no subscriber; perf_counter_ns"}
        if paced:
            out["paced"] = _paced(node, floor, [samples[i % n] for i in range(paced)], steps)
        restamped = [_restamp(d) for d in samples[:1000]]
        out["calls_per_sample"] = {"guard": _count_calls(node.on_tool, restamped),
                                   "floor": _count_calls(floor._on_tool, restamped)}
        if with_cprofile:
            prof = cProfile.Profile()
            prof.enable()
            for data in samples:
                node.on_tool(_restamp(data))
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(14)
            out["cprofile_top_tottime"] = [line for line in buf.getvalue().splitlines()
                                           if line.strip() and ("{" in line or "/" in line or ".py" in line)][:16]
        return out
    finally:
        floor.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


if __name__ == "__main__":
    print(json.dumps(profile_guard(int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
                                   paced=int(sys.argv[2]) if len(sys.argv) > 2 else 0), indent=1))
