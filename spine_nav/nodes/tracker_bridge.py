"""Node `tracker_bridge`: OpenIGTLink tracker stream -> ROS poses (every sample), watchdog.

Parameters (config/nodes.yaml):
    mode (str): ``client`` (connect to a tracker/PLUS server, reconnect with backoff) or ``server``
        (trackers connect to us). host (str), port (int, default 18944).
    tdata (bool): send STT_TDATA after connecting (a TDATA server streams only then);
        tdata_resolution_ms (int).
    reference_device, arm_marker_device (str): PLUS names (``ReferenceToTracker``, ``ArmMarkerToTracker``).
    tool_name, tool_device, tool_tip_device (str); tip_offset_mm (float[3], Tool frame, from
        ``spine-nav calibrate pivot``); shaft_direction (float[3], empty = along the tip offset).
    max_skew_ms (float): largest |tool - reference| tracker-time difference used in a composition.
    timeout_ms, timeout_periods (float): watchdog (TRACKING_LOST when the last sample is older than
        max(timeout_ms, timeout_periods x measured period)); health_period_ms (float): how often the
        watchdog is judged (a change is published at once; while frames flow on the socket thread at the end of
        the first chunk after it is due, else by a timer; at most 1.5 periods apart); health_publish_period_ms (float): how often
        every tool's health is published even without a change (monitors, late joiners).
    reference_jump_check (bool), reference_jump_mm, reference_jump_deg, reference_noise_mm,
        reference_noise_deg, reference_max_speed_mm_s (float): bumped-reference detection
        (:mod:`spine_nav.tracking.reference_jump`): a step between consecutive reference samples
        beyond max(reference_jump_mm, speed x dt + 4 noise) or max(reference_jump_deg, 4 sqrt2 noise_deg)
        latches ``reference`` TRACKING_LOST ("reference array moved ... bumped? re-register ...")
        until the service ``tracking/reset_reference`` (std_srvs/Trigger) is called. While latched no
        tool tip is published (counted as withheld); the latch publishes every tool's health at once
        (and hands it to in-process health listeners) before any later output of the stream
        (docs/fault-attribution.md).
    allowed_peers (str): server mode: who may connect, comma-separated addresses or networks (default
        loopback only ``127.0.0.0/8,::1``; ``*`` = anyone); refused peers are logged.
    Declared from :data:`spine_nav.nodes.node_params.NODE_PARAMETERS` (descriptions, units, ranges there).
    The 3D Slicer / console output is its own node, ``slicer_output``.

Publishes ``tracking/tool_tip`` (PoseStamped, frame Reference, T_reference_tooltip),
``tracking/reference`` and ``tracking/arm_marker`` (frame Tracker), all SENSOR_QOS with
header.stamp = the OpenIGTLink message's own timestamp; ``tracking/health`` (ToolHealth per tool,
on every state change and every health_publish_period_ms); ``/diagnostics`` (1 Hz). Service
``tracking/reset_reference`` (std_srvs/Trigger): release a bumped-reference latch (after re-registration).

Poses are published straight from the socket reader thread (no queue, no drop); this is safe with
the ``spin_once`` executor loops used by :func:`main` and ComposedStack. In-process consumers (the
trajectory guard and the Slicer output composed in the same process, see :mod:`spine_nav.nodes.in_process`)
take the topics of :meth:`TrackerBridgeNode.in_process_outputs`: every published tool tip on the same
thread, at the end of its ``recv()`` chunk and before the chunk's tool tips go to DDS, and every ToolHealth
the node publishes (on the socket thread at a chunk's end or when the reference latch trips, or on the timer's
thread when no chunk came).
"""
from __future__ import annotations

import threading
import time
from collections import deque

from geometry_msgs.msg import PoseStamped
from spine_nav_interfaces.msg import ToolHealth
from std_srvs.srv import Trigger

from spine_nav.nodes.bridge_setup import bridge_core, open_link
from spine_nav.nodes.direct_publish import serialized_outputs
from spine_nav.nodes.conversions import (quat_mm_to_pose_cdr, tool_health_to_msg, validated_rows_mm_to_pose_cdr,
                                         validated_rows_mm_to_quat_mm)
from spine_nav.nodes.diagnostics import ERROR, OK, diagnostics_publisher, publish_diagnostics, status
from spine_nav.nodes.in_process import Listeners
from spine_nav.nodes.lifecycle import ManagedNode, reserve_port
from spine_nav.nodes.qos import SENSOR_QOS, STATUS_QOS
from spine_nav.tracking import native
from spine_nav.tracking.tools import ComposedPose
from spine_nav.tracking.transport import parse_allowed_peers
from spine_nav.tracking.watchdog import ToolHealthState

FRAMES = {"tool_tip": "Reference", "reference": "Tracker", "arm_marker": "Tracker"}


class TrackerBridgeNode(ManagedNode):
    """Lifecycle (:mod:`spine_nav.nodes.lifecycle`): configure validates the parameters, builds the core,
    publishers, service and timers and (server mode) reserves the port; activate opens the OpenIGTLink link
    (server: listens; client: connects, with reconnects); deactivate closes it (server: the port stays reserved,
    connections are refused); cleanup releases the rest."""

    def __init__(self, **kwargs) -> None:
        super().__init__("tracker_bridge", **kwargs)
        self.tool_tip_topic = self.resolve_topic_name("tracking/tool_tip")
        self.health_topic = self.resolve_topic_name("tracking/health")
        #: in-process consumers (spine_nav.nodes.in_process): tool tips fn(stamp_s, frame_id, quat_xyzw, t_mm),
        #: health fn(ToolHealth); kept across cleanup / configure (the links are wired once)
        self.tool_tip_listeners = Listeners(self, "tool-tip")
        self.health_listeners = Listeners(self, "health")
        self._health_lock = threading.Lock()  # health goes out from the timer and, on a latch, the socket thread
        self._chunk = threading.local()  # tool tips of the current recv() chunk, for the listeners
        self.link = self._reserved = None

    def configure(self) -> None:
        p = self.params
        self.core, self.tool = bridge_core(p, self._on_output, self._on_latch)
        if p["mode"] == "server":
            parse_allowed_peers(p["allowed_peers"])  # checked now: ValueError naming allowed_peers
            self._reserved = reserve_port(p["host"], p["port"], "the OpenIGTLink server")
        self.create_service(Trigger, "tracking/reset_reference", self._on_reset_reference)
        pubs = {kind: self.create_publisher(PoseStamped, f"tracking/{kind}", SENSOR_QOS) for kind in FRAMES}
        # poses leave as serialized PoseStamped bytes (spine_nav.nodes.cdr: ~3 us instead of ~25 us each), handed to rcl
        # from C (spine_nav.nodes.direct_publish: ~3.4 us less per pose, cold); released at cleanup, after deactivate
        self._outs, self._publish_how = serialized_outputs(pubs, FRAMES, self.at_cleanup)
        self.health_pub = self.create_publisher(ToolHealth, "tracking/health", STATUS_QOS)
        self.diag_pub = diagnostics_publisher(self)
        #: socket receive -> publish() returned (perf_counter ns) of the last tool-tip publications (bench)
        self.latency_ns: deque[int] = deque(maxlen=200_000)
        self.reference_latency_ns: deque[int] = deque(maxlen=200_000)  # the same for reference poses
        self.published, self.stale_reported = {kind: 0 for kind in FRAMES}, 0
        # judged every health_period_ms, but three ToolHealth messages cost ~0.2 ms of the interpreter that the
        # tracker socket thread shares: unchanged health goes out only every health_publish_period_ms
        self._health_every, self._health_ticks = max(1, round(p["health_publish_period_ms"] / p["health_period_ms"])), 0
        # judged when due on the socket thread at a chunk's end, after the chunk's tool tips (while frames flow the
        # executor thread then holds no GIL for it between frames: ~0.2 ms every 20 ms, measured, was the bridge's
        # p99 share the floor has not); the timer (every period/4) judges when no chunk did within min(period/4,
        # 2 ms) of the due time: the interval stays <= 1.5 periods without frames, ~period + 1 ms at 1 kHz
        self._health_period_s, self._health_due = p["health_period_ms"] * 1e-3, 0.0
        grace_s = min(self._health_period_s / 4, 0.002)
        self.create_timer(self._health_period_s / 4, lambda: self._publish_health(grace_s=grace_s))
        self.create_timer(1.0, self._publish_diagnostics)

    def activate(self) -> None:
        p = self.params
        self.link, self._reserved = open_link(p, self.core, self._on_chunk_end, self._reserved), None
        self.get_logger().info(f"{p['mode']} {p['host']}:{getattr(self.link, 'port', p['port'])} tool {self.tool.name} "
                               f"({self.tool.device}, tip {self.tool.tip_offset_mm} mm), max skew {p['max_skew_ms']} ms, "
                               f"per-frame arithmetic in {native.describe()}, poses published through {self._publish_how}")

    def deactivate(self) -> None:
        if self.link is not None:
            port = getattr(self.link, "port", None)
            self.link.close()
            self.link = None
            if self.params["mode"] == "server":  # keep the port ours while inactive (connections refused)
                self._reserved = reserve_port(self.params["host"], port, "the OpenIGTLink server")

    def cleanup(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    def in_process_outputs(self) -> dict:
        """Topics in-process consumers may take from this node (:func:`spine_nav.nodes.in_process.link_nodes`)."""
        return {self.tool_tip_topic: self.tool_tip_listeners.add, self.health_topic: self.health_listeners.add}

    # ------------------------------------------------------------------ hot path (socket thread)
    def _on_output(self, out: ComposedPose, receive_ns: int) -> None:
        kind = out.kind
        pub_packer = self._outs.get(kind)
        if pub_packer is None:
            if kind == "stale":
                self.stale_reported += 1
                if self.stale_reported == 1 or self.stale_reported % 1000 == 0:
                    self.get_logger().warning(f"{out.name} sample at {out.timestamp_s:.3f} s not published: "
                                              f"{out.detail} ({self.stale_reported} so far)")
            return
        publish, packer = pub_packer
        if kind == "tool_tip" and self.tool_tip_listeners.fns:  # (the list: no __bool__ call per tool tip)
            # in-process listeners (the guard) first, DDS after, at the chunk's end: every DDS reader of the
            # topic (a bag recorder, the console) makes publish() costlier, and that must not delay the guard
            q, t_mm = validated_rows_mm_to_quat_mm(out.rows)
            held = getattr(self._chunk, "tips", None)
            if held is None:
                held = self._chunk.tips = []
            held.append((out.timestamp_s, FRAMES["tool_tip"], q, t_mm,
                         quat_mm_to_pose_cdr(q, t_mm, out.timestamp_s, packer), receive_ns))
            return
        publish(validated_rows_mm_to_pose_cdr(out.rows, out.timestamp_s, packer))
        self.published[kind] += 1
        if kind == "tool_tip":
            self.latency_ns.append(time.perf_counter_ns() - receive_ns)
        elif kind == "reference":
            self.reference_latency_ns.append(time.perf_counter_ns() - receive_ns)

    def _on_chunk_end(self, conn=None) -> None:
        """End of one recv() chunk: publish what the core held back, feed in-process listeners, then
        publish the chunk's tool tips (held back for the listeners) to DDS; then judge the watchdog if due."""
        self.core.flush(conn)
        held = getattr(self._chunk, "tips", None)
        if held:
            self._chunk.tips = []
            for sample in held:
                self.tool_tip_listeners(*sample[:4])
            publish = self._outs["tool_tip"][0]
            for sample in held:  # then the tool tips go to DDS, as published without listeners
                publish(sample[4])
                self.published["tool_tip"] += 1
                self.latency_ns.append(time.perf_counter_ns() - sample[5])
        if time.monotonic() >= self._health_due:  # the watchdog, when due, here rather than on the timer (configure)
            self._publish_health()

    # ------------------------------------------------------------------ watchdog
    def _on_latch(self, reason: str) -> None:
        """The reference latch has just tripped (socket thread, before the tripping message's outputs)."""
        self._publish_health(every_tool=True)

    def _publish_health(self, every_tool: bool = False, grace_s: float = 0.0) -> None:
        with self._health_lock:
            now = time.monotonic()
            if not every_tool and now < self._health_due + grace_s:
                return
            self._health_due = now + self._health_period_s
            self._health_ticks += 1
            periodic = every_tool or self._health_ticks % self._health_every == 0
            for h in self.core.check():
                if periodic or h.changed:
                    self._publish_tool_health(h)

    def _publish_tool_health(self, h: ToolHealthState) -> None:
        frame_id = FRAMES["tool_tip"] if h.tool not in ("reference", "arm_marker") else "Tracker"
        msg = tool_health_to_msg(h, frame_id, self.get_clock().now().to_msg())
        self.health_pub.publish(msg)
        self.health_listeners(msg)
        if h.changed:
            if h.state:
                self.get_logger().warning(f"{h.tool}: {h.state_name} {h.reason}")
            else:
                self.get_logger().info(f"{h.tool}: {h.state_name}")

    def _on_reset_reference(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        cleared = self.core.reset_reference()
        resp.success = True
        resp.message = f"reference latch cleared (was: {cleared})" if cleared else "reference was not latched"
        self.get_logger().warning(f"tracking/reset_reference: {resp.message}")
        return resp

    def _publish_diagnostics(self) -> None:
        tools = [status(f"spine_nav/tracker_bridge/{h.tool}", OK if h.state == 0 else ERROR,
                        h.state_name + (f": {h.reason}" if h.reason else ""), h.device,
                        {"rate_hz": round(h.rate_hz, 1), "sample_age_ms": round(min(h.sample_age_ms, 1e9), 1),
                         "samples_received": h.samples_received, "samples_rejected": h.samples_rejected})
                 for h in self.core.watchdog.tools.values()]
        link = status("spine_nav/tracker_bridge/link", OK, f"{self.params['mode']} {self.params['host']}:"
                      f"{self.params['port']}", values={**{f"rejected {k}": v for k, v in self.core.rejected.items()},
                                                        "stale tool samples": self.stale_reported,
                                                        "tool tips withheld (reference latched)": self.core.withheld})
        publish_diagnostics(self, self.diag_pub, *tools, link)


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(TrackerBridgeNode, argv)
