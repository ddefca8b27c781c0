"""Node `tracker_bridge`: OpenIGTLink tracker stream -> ROS poses (every sample), watchdog, console output.

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
        watchdog is judged (a change is published at once); health_publish_period_ms (float): how often
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
    allowed_peers (str): server mode and console server: who may connect, comma-separated addresses or
        networks (default loopback only ``127.0.0.0/8,::1``; ``*`` = anyone); refused peers are logged.
    console_port (int): 0 = off; else an OpenIGTLink server for consoles (3D Slicer OpenIGTLinkIF):
        tool tip as TRANSFORM ``StylusTipToReference``, ``ReferenceToTracker``, the registered plan as
        POINT ``PlanPoints`` + TRAJ ``PlanTrajectories``, guard state as STRING ``GuardState``;
        console_rate_hz (float) limits the pose/guard stream (state changes go out at once).

Publishes ``tracking/tool_tip`` (PoseStamped, frame Reference, T_reference_tooltip),
``tracking/reference`` and ``tracking/arm_marker`` (frame Tracker), all SENSOR_QOS with
header.stamp = the OpenIGTLink message's own timestamp; ``tracking/health`` (ToolHealth per tool,
on every state change and every health_publish_period_ms); ``/diagnostics`` (1 Hz). Service
``tracking/reset_reference`` (std_srvs/Trigger): release a bumped-reference latch (after re-registration).

Poses are published straight from the socket reader thread (no queue, no drop); this is safe with
the ``spin_once`` executor loops used by :func:`main` and ComposedStack. In-process consumers (the
trajectory guard composed in the same process, see :mod:`spine_nav.nodes.in_process`) register with
:meth:`TrackerBridgeNode.add_tool_tip_listener` and get every published tool tip on the same thread,
after the whole ``recv()`` chunk has been published, and with :meth:`TrackerBridgeNode.add_health_listener`
every ToolHealth the node publishes (on the timer's thread, or on the socket thread when the reference
latch trips).
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from spine_nav_interfaces.msg import GuardStatus, ScrewPlan, ToolHealth
from std_srvs.srv import Trigger

from spine_nav.nodes.cdr import PoseStampedPacker
from spine_nav.nodes.conversions import (msg_to_plan, quat_mm_to_pose_cdr, seconds_to_stamp, stamp_to_seconds,
                                         validated_rows_mm_to_quat_mm)
from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS
from spine_nav.nodes.diagnostics import publish_diagnostics
from spine_nav.tracking import codec
from spine_nav.tracking.bridge import BridgeCore
from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector
from spine_nav.tracking.tools import ComposedPose, PoseComposer, ToolDefinition
from spine_nav.tracking.transport import IgtlClient, IgtlServer
from spine_nav.tracking.watchdog import ToolHealthState, Watchdog

FRAMES = {"tool_tip": "Reference", "reference": "Tracker", "arm_marker": "Tracker"}


class TrackerBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("tracker_bridge", **kwargs)
        p = {name: self.declare_parameter(name, default).value for name, default in [
            ("mode", "client"), ("host", "127.0.0.1"), ("port", 18944), ("tdata", False),
            ("tdata_resolution_ms", 0), ("reference_device", "ReferenceToTracker"),
            ("arm_marker_device", "ArmMarkerToTracker"), ("tool_name", "stylus"), ("tool_device", "StylusToTracker"),
            ("tool_tip_device", "StylusTipToReference"), ("tip_offset_mm", [0.0, 0.0, 150.0]),
            ("shaft_direction", [0.0, 0.0, 0.0]), ("max_skew_ms", 2.0), ("timeout_ms", 50.0),
            ("timeout_periods", 3.0), ("health_period_ms", 20.0), ("health_publish_period_ms", 20.0), ("console_port", 0), ("console_rate_hz", 30.0),
            ("max_body_bytes", codec.DEFAULT_MAX_BODY_BYTES), ("allowed_peers", "127.0.0.0/8,::1"), ("reference_jump_check", True),
            ("reference_jump_mm", 1.0), ("reference_jump_deg", 0.5), ("reference_noise_mm", 0.25),
            ("reference_noise_deg", 0.1), ("reference_max_speed_mm_s", 5.0)]}
        self.params = p
        if p["mode"] not in ("client", "server"):
            raise ValueError(f"tracker_bridge: parameter mode must be 'client' or 'server', got {p['mode']!r}")
        shaft = tuple(float(x) for x in p["shaft_direction"])
        tool = ToolDefinition(name=p["tool_name"], device=p["tool_device"], tip_device=p["tool_tip_device"],
                              tip_offset_mm=tuple(float(x) for x in p["tip_offset_mm"]),
                              shaft_direction=shaft if any(shaft) else None)
        composer = PoseComposer(tools=(tool,), reference_device=p["reference_device"],
                                arm_marker_device=p["arm_marker_device"], max_skew_ms=float(p["max_skew_ms"]))
        watchdog = Watchdog({"reference": p["reference_device"], "arm_marker": p["arm_marker_device"],
                             tool.name: tool.device}, timeout_ms=float(p["timeout_ms"]),
                            timeout_periods=float(p["timeout_periods"]))
        jump = None
        if p["reference_jump_check"]:
            jump = ReferenceJumpDetector(ReferenceJumpConfig(
                min_jump_mm=float(p["reference_jump_mm"]), max_rotation_deg=float(p["reference_jump_deg"]),
                noise_mm=float(p["reference_noise_mm"]), noise_deg=float(p["reference_noise_deg"]),
                max_speed_mm_s=float(p["reference_max_speed_mm_s"])))
        self.core = BridgeCore(composer, watchdog, on_output=self._on_output, jump_detector=jump,
                               defer_kinds=frozenset({"reference", "arm_marker"}), on_latch=self._on_latch)
        self.create_service(Trigger, "tracking/reset_reference", self._on_reset_reference)
        self.pubs = {kind: self.create_publisher(PoseStamped, f"tracking/{kind}", SENSOR_QOS) for kind in FRAMES}
        self.tool_tip_topic = self.pubs["tool_tip"].topic_name
        # poses leave as serialized PoseStamped bytes (spine_nav.nodes.cdr: ~3 us instead of ~25 us each)
        self._packers = {kind: PoseStampedPacker(frame) for kind, frame in FRAMES.items()}
        self.health_pub = self.create_publisher(ToolHealth, "tracking/health", STATUS_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        #: socket receive -> publish() returned (perf_counter ns) of the last tool-tip publications (bench)
        self.latency_ns: deque[int] = deque(maxlen=200_000)
        self.reference_latency_ns: deque[int] = deque(maxlen=200_000)  # the same for reference poses
        self.published = {kind: 0 for kind in FRAMES}
        #: in-process tool-tip consumers: fn(stamp_s, frame_id, quat_xyzw, t_mm), see add_tool_tip_listener
        self._tool_tip_listeners: list = []
        self.listener_failures: list[int] = []  # per listener
        #: in-process health consumers: fn(ToolHealth), see add_health_listener
        self._health_listeners: list = []
        self._health_lock = threading.Lock()  # health goes out from the timer and, on a latch, the socket thread
        self._chunk = threading.local()  # tool tips of the current recv() chunk, for the listeners
        self.stale_reported = 0
        self._last_console_s = 0.0
        self._last_guard_state = None
        self._last_guard_s = 0.0
        self._plan_bytes = b""
        self.console: IgtlServer | None = None
        # console output leaves through its own thread and a bounded queue, so a slow console never
        # stalls the tracker socket thread; display messages beyond the bound are counted, not queued
        self._console_q: queue.Queue[bytes] = queue.Queue(maxsize=256)
        self.console_dropped = 0
        if int(p["console_port"]) > 0:
            self.console = IgtlServer(int(p["console_port"]), on_connect=self._console_connected,
                                      allowed_peers=p["allowed_peers"]).start()
            threading.Thread(target=self._console_sender, name="console-out", daemon=True).start()
            self.create_subscription(ScrewPlan, "plan/registered", self._on_plan, PLAN_QOS)
            self.create_subscription(GuardStatus, "guard/status", self._on_guard, STATUS_QOS)
        # judged every health_period_ms, but three ToolHealth messages cost ~0.2 ms of the interpreter that the
        # tracker socket thread shares: unchanged health goes out only every health_publish_period_ms
        self._health_every = max(1, round(float(p["health_publish_period_ms"]) / float(p["health_period_ms"])))
        self._health_ticks = 0
        self.create_timer(float(p["health_period_ms"]) * 1e-3, self._publish_health)
        self.create_timer(1.0, self._publish_diagnostics)
        on_msg = lambda msg, t_ns, conn: self.core.handle(msg, t_ns, conn.peer)  # noqa: E731
        if p["mode"] == "client":
            on_connect = None
            if p["tdata"]:
                stt = codec.encode_stt_tdata(int(p["tdata_resolution_ms"]))
                on_connect = lambda conn: conn.send(stt)  # noqa: E731
            self.link = IgtlClient(p["host"], int(p["port"]), on_msg, on_connect=on_connect,
                                   max_body_bytes=int(p["max_body_bytes"]), on_chunk_end=self._on_chunk_end).start()
        else:
            self.link = IgtlServer(int(p["port"]), on_message=on_msg, host=p["host"],
                                   max_body_bytes=int(p["max_body_bytes"]), on_chunk_end=self._on_chunk_end,
                                   allowed_peers=p["allowed_peers"]).start()
        self.get_logger().info(f"tracker_bridge: {p['mode']} {p['host']}:{p['port']} tool {tool.name} "
                               f"({tool.device}, tip {tool.tip_offset_mm} mm), max skew {p['max_skew_ms']} ms"
                               + (f", console on port {self.console.port}" if self.console else ""))

    # ------------------------------------------------------------------ hot path (socket thread)
    def _on_output(self, out: ComposedPose, receive_ns: int) -> None:
        if out.kind == "stale":
            self.stale_reported += 1
            if self.stale_reported == 1 or self.stale_reported % 1000 == 0:
                self.get_logger().warning(f"{out.name} sample at {out.timestamp_s:.3f} s not published: {out.detail} "
                                          f"({self.stale_reported} so far)")
            return
        pub = self.pubs.get(out.kind)
        if pub is None:
            return
        q, t_mm = validated_rows_mm_to_quat_mm(out.rows)
        data = quat_mm_to_pose_cdr(q, t_mm, out.timestamp_s, self._packers[out.kind])
        if out.kind == "tool_tip" and self._tool_tip_listeners:
            # in-process listeners (the guard) first, DDS after, at the chunk's end: every DDS reader of the
            # topic (a bag recorder, the console) makes publish() costlier, and that must not delay the guard
            held = getattr(self._chunk, "tips", None)
            if held is None:
                held = self._chunk.tips = []
            held.append((out.timestamp_s, FRAMES["tool_tip"], q, t_mm, data, receive_ns))
        else:
            pub.publish(data)
            self.published[out.kind] += 1
        if out.kind == "tool_tip":
            if not self._tool_tip_listeners:
                self.latency_ns.append(time.perf_counter_ns() - receive_ns)
            if self.console is not None:
                self._console_pose(out)
        elif out.kind == "reference":
            self.reference_latency_ns.append(time.perf_counter_ns() - receive_ns)

    def _on_chunk_end(self, conn=None) -> None:
        """End of one recv() chunk: publish what the core held back, feed in-process listeners, then
        publish the chunk's tool tips (held back for the listeners) to DDS."""
        self.core.flush(conn)
        held = getattr(self._chunk, "tips", None)
        if held:
            self._chunk.tips = []
            for sample in held:
                for i, fn in enumerate(self._tool_tip_listeners):
                    try:
                        fn(*sample[:4])
                    except Exception:  # noqa: BLE001 - a consumer's bug must not stop the tracker stream
                        self.listener_failures[i] += 1
                        if self.listener_failures[i] == 1:
                            self.get_logger().error(f"in-process tool-tip listener {fn!r} failed (it keeps getting "
                                                    f"samples; further failures only counted):\n"
                                                    f"{traceback.format_exc()}")
            pub = self.pubs["tool_tip"]
            for sample in held:  # then the tool tips go to DDS, as published without listeners
                pub.publish(sample[4])
                self.published["tool_tip"] += 1
                self.latency_ns.append(time.perf_counter_ns() - sample[5])

    def add_tool_tip_listener(self, fn) -> None:
        """``fn(stamp_s, frame_id, quat_xyzw, t_mm)``: every published tool tip (T_reference_tooltip, mm;
        what the PoseStamped carries), called on the socket thread at the end of its recv() chunk, before
        the chunk's tool tips are published to DDS; must be quick and thread-safe."""
        self._tool_tip_listeners.append(fn)
        self.listener_failures.append(0)

    def add_health_listener(self, fn) -> None:
        """``fn(msg: ToolHealth)``: every ToolHealth this node publishes, right after publishing it (timer
        thread, or the socket thread when the reference latch trips); must be quick and thread-safe."""
        self._health_listeners.append(fn)

    # ------------------------------------------------------------------ watchdog
    def _on_latch(self, reason: str) -> None:
        """The reference latch has just tripped (socket thread, before the tripping message's outputs)."""
        self._publish_health(every_tool=True)

    def _publish_health(self, every_tool: bool = False) -> None:
        with self._health_lock:
            self._health_ticks += 1
            periodic = every_tool or self._health_ticks % self._health_every == 0
            for h in self.core.check():
                if periodic or h.changed:
                    self._publish_tool_health(h)

    def _publish_tool_health(self, h: ToolHealthState) -> None:
        msg = ToolHealth(tool=h.tool, device=h.device, state=h.state, reason=h.reason, visible=h.visible,
                         sample_age_ms=float(min(h.sample_age_ms, 1e9)), rate_hz=float(h.rate_hz),
                         samples_received=h.samples_received, samples_rejected=h.samples_rejected)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = FRAMES["tool_tip"] if h.tool not in ("reference", "arm_marker") else "Tracker"
        msg.last_sample_stamp = seconds_to_stamp(h.last_sample_stamp_s)
        self.health_pub.publish(msg)
        for fn in self._health_listeners:
            try:
                fn(msg)
            except Exception:  # noqa: BLE001 - a consumer's bug must not stop the health stream
                self.get_logger().error(f"in-process health listener {fn!r} failed:\n{traceback.format_exc()}",
                                        throttle_duration_sec=5.0)
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
        statuses = []
        for h in self.core.watchdog.tools.values():
            st = DiagnosticStatus(name=f"spine_nav/tracker_bridge/{h.tool}", hardware_id=h.device,
                                  level=DiagnosticStatus.OK if h.state == 0 else DiagnosticStatus.ERROR,
                                  message=h.state_name + (f": {h.reason}" if h.reason else ""))
            st.values = [KeyValue(key=k, value=str(v)) for k, v in [
                ("rate_hz", round(h.rate_hz, 1)), ("sample_age_ms", round(min(h.sample_age_ms, 1e9), 1)),
                ("samples_received", h.samples_received), ("samples_rejected", h.samples_rejected)]]
            statuses.append(st)
        link = DiagnosticStatus(name="spine_nav/tracker_bridge/link", level=DiagnosticStatus.OK,
                                message=f"{self.params['mode']} {self.params['host']}:{self.params['port']}")
        link.values = [KeyValue(key=f"rejected {k}", value=str(v)) for k, v in self.core.rejected.items()]
        link.values.append(KeyValue(key="stale tool samples", value=str(self.stale_reported)))
        link.values.append(KeyValue(key="tool tips withheld (reference latched)", value=str(self.core.withheld)))
        link.values.append(KeyValue(key="console messages not sent (queue full)", value=str(self.console_dropped)))
        publish_diagnostics(self, self.diag_pub, *statuses, link)

    # ------------------------------------------------------------------ console output
    def _console_send(self, data: bytes) -> None:
        try:
            self._console_q.put_nowait(data)
        except queue.Full:
            self.console_dropped += 1

    def _console_sender(self) -> None:
        while True:
            data = self._console_q.get()
            if not data:  # b"" = stop
                return
            self.console.broadcast(data)

    def _console_connected(self, conn) -> None:
        if self._plan_bytes:
            conn.send(self._plan_bytes)

    def _console_pose(self, out: ComposedPose) -> None:
        now = time.monotonic()
        if now - self._last_console_s < 1.0 / float(self.params["console_rate_hz"]):
            return
        self._last_console_s = now
        self._console_send(codec.encode_transform(f"{out.name.capitalize()}TipToReference", out.matrix,
                                                  out.timestamp_s))

    def _on_plan(self, msg: ScrewPlan) -> None:
        try:
            plan, not_nav = msg_to_plan(msg)
        except ValueError as exc:
            self.get_logger().error(f"plan/registered not forwarded to consoles: {exc}")
            return
        t = stamp_to_seconds(msg.header.stamp)
        names, pts, trajs = [], [], []
        for s in plan.screws:
            names += [f"{s.id}_entry", f"{s.id}_target"]
            pts += [list(s.entry_mm), list(s.target_mm)]
            trajs.append({"name": s.id, "group": "navigable" if s.id not in not_nav else "not navigable",
                          "entry_mm": tuple(s.entry_mm), "target_mm": tuple(s.target_mm),
                          "radius_mm": s.diameter_mm / 2.0,
                          "rgba": (0, 200, 0, 255) if s.id not in not_nav else (200, 0, 0, 255)})
        self._plan_bytes = (codec.encode_point("PlanPoints", names, pts, t, group="Plan") +
                            codec.encode_traj("PlanTrajectories", trajs, t)) if names else b""
        if self._plan_bytes:
            self._console_send(self._plan_bytes)

    def _on_guard(self, msg: GuardStatus) -> None:
        now = time.monotonic()
        changed = msg.state != self._last_guard_state
        if not changed and now - self._last_guard_s < 1.0 / float(self.params["console_rate_hz"]):
            return
        self._last_guard_state, self._last_guard_s = msg.state, now
        text = (f"{msg.state_name} screw={msg.active_screw_id or '-'} lateral_mm={msg.lateral_error_mm:.2f} "
                f"angle_deg={msg.angular_error_deg:.2f} depth_mm={msg.depth_mm:.1f} "
                f"remaining_mm={msg.remaining_mm:.1f}" + (f" ({msg.reason})" if msg.reason else ""))
        self._console_send(codec.encode_string("GuardState", text, stamp_to_seconds(msg.tool_sample_stamp)))

    def destroy_node(self) -> None:
        self.link.close()
        if self.console is not None:
            try:
                self._console_q.put(b"", timeout=1.0)
            except queue.Full:
                pass  # daemon thread; ends with the process
            self.console.close()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(TrackerBridgeNode, argv)
