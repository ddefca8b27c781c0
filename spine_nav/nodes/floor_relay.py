"""The bare relay node: the floor under the guard's per-sample path (issue 17, ``spine_nav.bench.floor``).

Raw subscription to ``tracking/tool_tip`` (the guard's QoS) -> publish a constant, pre-serialized
GuardStatus whose ``tool_sample_stamp`` is the sample's, on ``--out-topic`` (``guard/status`` in
`spine-nav bench guard`, ``bench/floor_status`` during the demo so nothing else listens). No judging, no
Python message objects: what DDS, rclpy's executor and this interpreter cost on this machine under
this load. Its own latency record (sample stamp -> publish() returned, system clock) is the same
measurement as the guard's.

Run as its own process, like the guard: ``python -m spine_nav.nodes.floor_relay --latency-out F.json
[--out-topic T] [--rt-priority N] [--executor events]``; SIGINT/SIGTERM end it and write the record.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from types import SimpleNamespace

from rclpy.node import Node


class FloorRelayNode(Node):
    def __init__(self, out_topic: str = "guard/status", in_topic: str = "tracking/tool_tip", **kwargs) -> None:
        from geometry_msgs.msg import PoseStamped
        from spine_nav_interfaces.msg import GuardStatus

        from spine_nav.nodes.cdr import PrePackedStamped, stamp_of_pose_stamped
        from spine_nav.nodes.latency_record import LatencyRecord
        from spine_nav.nodes.qos import STATUS_QOS
        from spine_nav.nodes.qos import TOOL_SUB_QOS

        super().__init__("floor_relay", **kwargs)
        template = GuardStatus(active_screw_id="floor", state=3, state_name="ALIGNED", reason="floor relay")
        template.header.frame_id = "Reference"
        self._packed = PrePackedStamped(template, "tool_sample_stamp")
        self._stamp_of = stamp_of_pose_stamped
        self.latency = LatencyRecord("floor_relay", "tool sample stamp -> constant status publish() returned")
        self.pub = self.create_publisher(GuardStatus, out_topic, STATUS_QOS)
        self.sub = self.create_subscription(PoseStamped, in_topic, self._on_tool, TOOL_SUB_QOS, raw=True)

    def _on_tool(self, data: bytes) -> None:
        sec, nanosec = self._stamp_of(data)
        self.pub.publish(self._packed.with_stamp(sec, nanosec))
        self.latency.add(SimpleNamespace(sec=sec, nanosec=nanosec))


def serve(out_topic: str, executor: str = "events", rt_priority: int = 0, stop=None,
          latency_out: str = "") -> FloorRelayNode:
    """Host the relay in this process as the stack hosts its nodes (same tuning, executor, priority) until
    SIGINT/SIGTERM or ``stop()`` is true; returns the (destroyed) node, its record intact. ``latency_out``:
    the record is written there as soon as the stop is asked, before the teardown (as `spine-nav up` does)."""
    import rclpy
    from rclpy.context import Context

    from spine_nav.nodes.runner import (freeze_startup_objects, make_executor, set_process_realtime, spin_until,
                                        tune_process_for_nodes)

    tune_process_for_nodes()
    set_process_realtime(rt_priority)
    flag = {"stop": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: flag.__setitem__("stop", True))
    ctx = Context()
    rclpy.init(context=ctx)
    node = FloorRelayNode(out_topic, context=ctx)
    node.latency.path = latency_out
    ex = make_executor(executor, context=ctx)
    ex.add_node(node)
    freeze_startup_objects()
    try:
        spin_until(ex, lambda: not flag["stop"] and not (stop and stop()))
    finally:
        node.latency.flush()  # before the teardown, which a loaded machine can make outlast the stop grace
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return node


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spine_nav.nodes.floor_relay", description=__doc__.splitlines()[0])
    ap.add_argument("--latency-out", required=True, help="write the latency record (JSON) here on exit")
    ap.add_argument("--out-topic", default="guard/status")
    ap.add_argument("--executor", default="events", choices=("events", "single"))
    ap.add_argument("--rt-priority", type=int, default=0, help="SCHED_FIFO priority (0: normal)")
    ap.add_argument("--duration", type=float, default=1800.0, help="exit after this many seconds at most")
    a = ap.parse_args(argv)
    t_end = time.monotonic() + a.duration
    node = serve(a.out_topic, a.executor, a.rt_priority, stop=lambda: time.monotonic() > t_end,
                 latency_out=a.latency_out)
    node.latency.flush()  # again, with the samples that came in during the teardown
    return 0


if __name__ == "__main__":
    sys.exit(main())
