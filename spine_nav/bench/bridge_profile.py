"""Where the bridge's per-sample time goes: its hot path stage by stage, next to the floor's (``--profile``).

One 1 kHz tracker frame is what ``spine-nav bench bridge`` streams: a ``ReferenceToTracker`` and a
``StylusToTracker`` header-v1 TRANSFORM in one ``recv()`` chunk. For ``n`` such frames (pre-encoded,
1 ms apart in tracker time, the tool circling as in the bench) this runs the bridge's own code in the
order the ``tracker_bridge`` node runs it on its socket thread and times every stage of every frame
with ``perf_counter_ns``:

* ``decode``: :meth:`StreamDecoder.feed` of the chunk (framing, header, CRC, body) -> both messages;
* ``core_reference``: :meth:`BridgeCore.handle` of the reference (rigid check, watchdog, jump check,
  stored for composition; its pose output is deferred to the chunk's end);
* ``core_tool``: :meth:`BridgeCore.handle` of the tool (rigid check, watchdog, compose
  ``T_reference_tooltip``);
* ``to_cdr``: the node's conversion of the tool tip (quaternion + mm -> m + CDR pack of the PoseStamped);
* ``publish``: the node's publish of those bytes (:class:`spine_nav.nodes.direct_publish.DirectPublisher`: through rcl
  from C where built; Fast DDS, no subscriber);
* ``tool_tip_total``: ``recv`` returned -> tool tip ``publish()`` returned, the bench's latency, i.e. the
  sum of the stages above measured as one span;
* ``floor_total``: the floor's work for the same chunk (frames split by the header's body size, device
  compared, rclpy's ``publish()`` of a pre-built message), as :func:`spine_nav.bench.bridge._run_floor` does it.

``fast_path`` (what the node runs since the chunk fast path, :meth:`BridgeCore.take_chunk`; a second core of the
same configuration fed the same frames, its ``on_output`` doing the node's conversion and ``publish()``):
``before_tool_tip`` (recv -> the tool tip handed to the node: decode both messages, CRC, rigid/NaN check, the
steady-frame checks and composition, in C where built), ``to_cdr``, ``publish``, ``tool_tip_total`` (recv -> tool tip
``publish()`` returned) with ``tool_tip_total_vs_floor_p50``, and ``take_chunk`` (the whole call, including the
bookkeeping the steady-frame path does after the tool tip has left). ``stages`` above stay the general path (decoder +
``handle``), which the node still takes for anything the fast path declines.

``paced`` (the measurement that matters at 1 kHz, as in :mod:`spine_nav.bench.guard_profile`): ``fast_path``'s
``tool_tip_total`` and ``floor_total`` again, one frame per ~1 ms (a sleep before each), alternated frame by frame, so the
code runs cold as in the node (caches and branch predictors taken by the idle wait): p50/p90/p99 and their ratios
(``tool_tip_total_vs_floor_p50`` ...). Warm, the steady path's excess over the floor is ~3 us; cold it is 2-3x that.

Values: median and p90 over the frames, microseconds. This is a single-threaded micro-profile (no socket,
no executor thread): it says which stage costs what, while the bench's rounds measure the latency with
the real threads. The reference's own publication (at the chunk's end, after the tool tip) is timed as
``reference_after`` and is not part of the tool tip's latency.
"""
from __future__ import annotations

import math
import struct
import time
from typing import Any

import numpy as np

from spine_nav.bench.guard_profile import stats_us


def _frames(n: int, t0: float = 1_000_000.0) -> list[bytes]:
    from spine_nav.geometry import make_transform
    from spine_nav.tracking import codec

    T_ref = make_transform(np.eye(3), [10.0, -50.0, -1500.0])
    out = []
    for k in range(n):
        a = 2 * math.pi * k / n
        T_tool = make_transform(np.eye(3), [30.0 * math.cos(a), 30.0 * math.sin(a), -1400.0])
        t = t0 + k * 1e-3
        out.append(codec.encode_transform("ReferenceToTracker", T_ref, t) + codec.encode_transform("StylusToTracker", T_tool, t))
    return out


def _paced(core, marks: dict, floor_work, frames: list[bytes], direct_publish) -> dict[str, Any]:
    """The node's steady-state path (``core.take_chunk`` -> tool tip published, as ``fast_path``) and the floor's work
    on the same chunk, each after ~1 ms of sleep, alternated frame by frame: the code runs cold as at 1 kHz (caches
    and branch predictors taken by the idle wait). recv -> tool tip ``publish()`` returned, microseconds. A third
    column, ``floor_total_direct``, is the floor's work publishing through ``direct_publish`` (the node's way, rcl from
    C where built) instead of rclpy's ``publish()``: how much of the stack's gain over the floor is that call alone."""
    clock = time.perf_counter_ns
    stack, floor, floor_direct = [], [], []
    for chunk in frames:
        time.sleep(0.001)
        marks.pop("published", None)
        t0 = clock()
        core.take_chunk(chunk, t0)
        if "published" in marks:  # (a frame whose tool tip was not published, none here, is not timed)
            stack.append(marks["published"] - t0)
        core.flush()
        time.sleep(0.001)
        t0 = clock()
        floor_work(chunk)
        floor.append(clock() - t0)
        time.sleep(0.001)
        t0 = clock()
        floor_work(chunk, direct_publish)
        floor_direct.append(clock() - t0)
    warm = len(stack) // 10  # the first tenth warms up (allocator, caches)
    s, f, fd = (stats_us(v[warm:], (50, 90, 99)) for v in (stack, floor, floor_direct))
    return {"frames": len(stack) - warm, "tool_tip_total": s, "floor_total": f, "floor_total_direct": fd,
            **{f"tool_tip_total_vs_floor_p{q}": round(s[f"p{q}_us"] / f[f"p{q}_us"], 3) for q in (50, 90, 99)},
            **{f"tool_tip_total_vs_floor_direct_p{q}": round(s[f"p{q}_us"] / fd[f"p{q}_us"], 3) for q in (50, 90, 99)},
            "what": "one frame per ~1 ms (sleep), stack and floor alternated: cold code as at 1 kHz"}


def profile_bridge(n: int = 3000, paced: int = 0) -> dict[str, Any]:
    """Per-stage microseconds of the bridge's hot path and of the floor's work, over ``n`` frames back to back, and
    over ``paced`` more frames one per ~1 ms (0: not paced; ~2 ms of wall time per frame)."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context

    from spine_nav.nodes.cdr import PoseStampedPacker
    from spine_nav.nodes.conversions import validated_rows_mm_to_pose_cdr
    from spine_nav.nodes.direct_publish import DirectPublisher
    from spine_nav.nodes.qos import SENSOR_QOS
    from spine_nav.tracking import codec
    from spine_nav.tracking.bridge import BridgeCore
    from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector
    from spine_nav.tracking.tools import PoseComposer, ToolDefinition
    from spine_nav.tracking.watchdog import Watchdog

    frames = _frames(n + 200)
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bridge_profile", context=ctx)
    directs: list[DirectPublisher] = []
    try:
        pub = node.create_publisher(PoseStamped, "bench/profile_tool_tip", SENSOR_QOS)
        ref_pub = node.create_publisher(PoseStamped, "bench/profile_reference", SENSOR_QOS)
        directs += [DirectPublisher(pub), DirectPublisher(ref_pub)]  # the node's publish (the floor keeps rclpy's)
        tip_publish, ref_publish = directs[0].publish, directs[1].publish
        packer, ref_packer = PoseStampedPacker("Reference"), PoseStampedPacker("Tracker")
        tool = ToolDefinition()  # config/nodes.yaml's defaults: stylus, tip 150 mm along z
        composer = PoseComposer(tools=(tool,), max_skew_ms=2.0)
        watchdog = Watchdog({"reference": "ReferenceToTracker", "arm_marker": "ArmMarkerToTracker", "stylus": "StylusToTracker"})
        held: list = []
        core = BridgeCore(composer, watchdog, on_output=lambda out, t_ns: held.append(out),
                          jump_detector=ReferenceJumpDetector(ReferenceJumpConfig()),
                          defer_kinds=frozenset({"reference", "arm_marker"}))
        marks: dict[str, int] = {}

        def publish_reference(out) -> None:
            """A deferred reference pose, as the node publishes it at the chunk's end."""
            ref_publish(validated_rows_mm_to_pose_cdr(out.rows, out.timestamp_s, ref_packer))

        def fast_on_output(out, _t_ns) -> None:
            """The node's _on_output: a tool tip to CDR and published at once (the steady-frame path calls it before
            its bookkeeping); the deferred reference at the chunk's end."""
            if out.kind == "tool_tip":
                c0 = clock()
                data = validated_rows_mm_to_pose_cdr(out.rows, out.timestamp_s, packer)
                c1 = clock()
                tip_publish(data)
                c2 = clock()
                marks.update(to_cdr=c1 - c0, publish=c2 - c1, published=c2)
            else:
                publish_reference(out)

        fast_core = BridgeCore(PoseComposer(tools=(tool,), max_skew_ms=2.0),
                               Watchdog({"reference": "ReferenceToTracker", "arm_marker": "ArmMarkerToTracker",
                                         "stylus": "StylusToTracker"}),
                               on_output=fast_on_output,
                               jump_detector=ReferenceJumpDetector(ReferenceJumpConfig()),
                               defer_kinds=frozenset({"reference", "arm_marker"}))
        fast = {k: [] for k in ("before_tool_tip", "to_cdr", "publish", "tool_tip_total", "take_chunk")}
        decoder = codec.StreamDecoder()
        stages = {k: [] for k in ("decode", "core_reference", "core_tool", "to_cdr", "publish", "tool_tip_total",
                                  "reference_after", "floor_total")}
        clock = time.perf_counter_ns
        # the floor's per-chunk work (spine_nav.bench.bridge._run_floor), on the same bytes
        size_at, dev_at = struct.calcsize(">H12s20sII"), 14
        dev = b"StylusToTracker".ljust(20, b"\0")
        floor_data = packer.pack(time.time(), (0.0, 0.0, -1.4), (0.0, 0.0, 0.0, 1.0))
        unpack_q = struct.Struct(">Q").unpack_from

        def floor_work(chunk: bytes, publish=pub.publish) -> None:
            """The floor's per-chunk work (spine_nav.bench.bridge._run_floor): frames split by the header's body size,
            the device compared, publish() of a pre-built message (rclpy's, unless ``publish`` says otherwise)."""
            off = 0
            while len(chunk) - off >= codec.HEADER_SIZE:
                end = off + codec.HEADER_SIZE + unpack_q(chunk, off + size_at)[0]
                if end > len(chunk):
                    break
                if chunk[off + dev_at: off + dev_at + 20] == dev:
                    publish(floor_data)
                off = end

        def publish_held(core_, held_) -> tuple[int, int, int]:
            """The node's steps after a chunk is taken: the tool tip to CDR, publish it, flush the deferred
            reference pose and publish it; the clock after the CDR, after the publish and at the end."""
            tip = held_.pop()
            data = validated_rows_mm_to_pose_cdr(tip.rows, tip.timestamp_s, packer)
            c_cdr = clock()
            tip_publish(data)
            c_pub = clock()
            core_.flush()
            for out in held_:
                publish_reference(out)
            held_.clear()
            return c_cdr, c_pub, clock()

        for i, chunk in enumerate(frames):
            t0 = clock()
            ref_msg, tool_msg = decoder.feed(chunk)
            t1 = clock()
            core.handle(ref_msg, t0)
            t2 = clock()
            core.handle(tool_msg, t0)
            t3 = clock()
            t4, t5, t6 = publish_held(core, held)
            # the fast path on the same chunk
            g0 = clock()
            if fast_core.take_chunk(chunk, g0) != 2:
                raise RuntimeError("bridge profile: the fast path declined a well-formed frame")
            g1 = clock()
            fast_core.flush()
            # the floor on the same chunk
            f0 = clock()
            floor_work(chunk)
            f1 = clock()
            if i < 200:  # warm-up: caches, first-device general path, allocator
                continue
            for k, v in (("decode", t1 - t0), ("core_reference", t2 - t1), ("core_tool", t3 - t2), ("to_cdr", t4 - t3),
                         ("publish", t5 - t4), ("tool_tip_total", t5 - t0), ("reference_after", t6 - t5),
                         ("floor_total", f1 - f0)):
                stages[k].append(v)
            tip_total = marks["published"] - g0
            for k, v in (("before_tool_tip", tip_total - marks["to_cdr"] - marks["publish"]), ("to_cdr", marks["to_cdr"]),
                         ("publish", marks["publish"]), ("tool_tip_total", tip_total), ("take_chunk", g1 - g0)):
                fast[k].append(v)
        paced_out = _paced(fast_core, marks, floor_work, _frames(paced, t0=2_000_000.0), tip_publish) if paced else None
    finally:
        for direct in directs:
            direct.close()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    out = {k: stats_us(v) for k, v in stages.items()}
    total, floor = out["tool_tip_total"]["p50_us"], out["floor_total"]["p50_us"]
    fast_out = {k: stats_us(v) for k, v in fast.items()}
    fast_total = fast_out["tool_tip_total"]["p50_us"]
    return {"frames": n, "stages": out, "tool_tip_total_vs_floor_p50": round(total / floor, 3) if floor else None,
            "fast_path": {"stages": fast_out,
                          "tool_tip_total_vs_floor_p50": round(fast_total / floor, 3) if floor else None},
            **({"paced": paced_out} if paced_out else {}), "node_publishes_through": directs[0].how,
            "what": "per 1 kHz frame (Reference + Stylus TRANSFORM in one chunk), single-threaded micro-profile "
                    "of the bridge's own code; median/p90 microseconds"}


if __name__ == "__main__":  # python -m spine_nav.bench.bridge_profile [n] [paced]
    import json
    import sys

    print(json.dumps(profile_bridge(int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
                                    paced=int(sys.argv[2]) if len(sys.argv) > 2 else 0), indent=1))
