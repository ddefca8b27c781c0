"""Node `trajectory_guard`: the live check of the tool against the planned screws.

Subscribes (relative names, see README "ROS 2 surface"):
    ``tracking/tool_tip``  geometry_msgs/PoseStamped, frame ``Reference``: T_reference_tooltip (m),
                           header.stamp = the tracker's sample time (SENSOR_QOS).
    ``tracking/health``    spine_nav_interfaces/ToolHealth: STATE_TRACKING_LOST or visible=false
                           -> TRACKING_LOST while ANY tool in ``health_tools`` is lost (a lost
                           reason is kept per tool; one tool's OK never clears another's lost).
    ``plan/registered``    spine_nav_interfaces/ScrewPlan in ``Reference`` (PLAN_QOS); screws with
                           navigable=false report NO_PLAN with their status_reason.
Publishes:
    ``guard/status``  spine_nav_interfaces/GuardStatus, one per tool sample (STATUS_QOS, reliable),
                      plus one per watchdog tick while samples are missing (TRACKING_LOST), and
                      at least every ``heartbeat_period_ms`` even when idle (the last status again
                      with a fresh header.stamp and ``repeat`` true: the arm guide holds when the
                      guard goes silent).
    ``guard/markers`` visualization_msgs/MarkerArray (planned corridors coloured by state, tool axis).
    ``/diagnostics``  diagnostic_msgs/DiagnosticArray.
Services:
    ``guard/select_screw``   SelectScrew (empty id: automatic selection).
    ``guard/set_thresholds`` SetGuardThresholds (validated; rejected with the reason).
Parameters (declared from :data:`spine_nav.nodes.node_params.NODE_PARAMETERS`: descriptions, units, ranges):
    every :class:`spine_nav.guard.GuardConfig` field (same names and units), plus
    ``active_screw_id`` (""=auto), ``health_tools`` (tools whose
    ToolHealth counts, default ["stylus", "reference"]: a lost or bumped reference stops navigation,
    an untracked arm_marker does not; "*" = any tool), topics, ``watchdog_period_ms``,
    ``heartbeat_period_ms`` (a status at least this often, default 20), ``markers_period_s``,
    ``diagnostics_period_s``. Config fields and ``active_screw_id`` can be changed at run time with ``ros2 param set`` (validated the same way).
    ``latency_record_path`` (str, "" = none): when the process is asked to stop and on destroy, write the per-sample latency record
    (:mod:`spine_nav.nodes.latency_record`) there.
    ``tool_in_process`` (bool, default true): when the node is composed in one process with a producer of
    its tool and health topics (``tracker_bridge``; ``spine-nav up``, :func:`spine_nav.nodes.in_process.link_nodes`),
    take the tool samples and the tool health straight from it instead of over DDS (see :meth:`on_tool_sample`;
    a bumped reference's lost health then reaches the guard before any later sample, docs/fault-attribution.md).

Thread safety: one lock around the guard core (:class:`spine_nav.guard.live.LiveGuard`), so samples may
arrive on the bridge's thread while the executor runs health, plan, services and timers.

Per-sample path (`spine-nav bench guard --profile`, docs/performance.md): the tool sample's bytes are decoded
to ints and floats (:func:`spine_nav.nodes.in_process.pose_fields`; in C, ``spine_nav/nodes/_pose_cdr.c``, when
built), the node clock is read as ns (the system clock unless ``use_sim_time`` made ROS time active), the pose
check, tool axis and guard quantities run in C when ``spine_nav/guard/_judge.c`` is built (else their Python
twins, which define the same bits: docs/performance.md "The guard's geometry in C"; the node logs which at
start), and every status goes out as CDR bytes packed from the verdict
(:class:`spine_nav.nodes.cdr.GuardStatusPacker`): no message object is built per sample.

All the judging is in :class:`spine_nav.guard.TrajectoryGuard` and its rules for the node's inputs in
:class:`spine_nav.guard.live.LiveGuard`; this node converts and publishes.
"""
from __future__ import annotations

import functools
import time

from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from spine_nav_interfaces.msg import GuardStatus, ScrewPlan, ToolHealth
from spine_nav_interfaces.srv import SelectScrew, SetGuardThresholds
from visualization_msgs.msg import MarkerArray

from spine_nav.guard import GuardConfig, GuardConfigError, GuardVerdict
from spine_nav.guard.live import LiveGuard
from spine_nav.nodes.cdr import GuardStatusPacker
from spine_nav.nodes.conversions import (describe_guard_arithmetic, msg_to_plan, seconds_to_sec_nanosec,
                                         verdict_to_status_cdr)
from spine_nav.nodes.diagnostics import diagnostics_publisher, guard_status, publish_diagnostics
from spine_nav.nodes.in_process import InProcessInput, drops, pose_fields
from spine_nav.nodes.latency_record import LatencyRecord
from spine_nav.nodes.markers import GuardMarkers
from spine_nav.nodes.param_spec import param_specs
from spine_nav.nodes.parameters import config_from, declare_node_parameters
from spine_nav.nodes.qos import DISPLAY_QOS, PLAN_QOS, SENSOR_QOS, STATUS_QOS, TOOL_SUB_QOS
from spine_nav.nodes.services import answers
from spine_nav.plan import PlanError

FRAME = "Reference"
CONFIG_FIELDS = tuple(s.name for s in param_specs(GuardConfig))
THRESHOLD_FIELDS = ("warn_lateral_mm", "warn_angle_deg", "violation_lateral_mm", "violation_angle_deg", "depth_margin_mm")


class TrajectoryGuardNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("trajectory_guard", **kwargs)
        p = declare_node_parameters(self)
        self.tool_in_process = bool(p["tool_in_process"])
        self.config_error = ""
        try:
            config = config_from(GuardConfig, p, "trajectory_guard")
        except GuardConfigError as exc:
            config, self.config_error = GuardConfig(), f"parameters rejected, using defaults: {exc}"
            self.get_logger().error(self.config_error)
        self.live = LiveGuard(config, FRAME, p["health_tools"], p["active_screw_id"])
        self.guard, self._lock = self.live.guard, self.live.lock  # the core and its lock (tests, bench)
        self.last_stamp = None  # (sec, nanosec) of the last tool sample's stamp (echoed exactly)
        #: per tool sample (latency.samples): (sample stamp ns, age ns), age = status publish() returned
        #: (system clock) - the sample's header.stamp. The sample->status latency when the tracker stamps
        #: with this machine's clock (simulator, PLUS on the same host); what `spine-nav bench guard` reports
        #: as node latency and the demo as sample -> guard status. (rmw's received_timestamp would isolate
        #: the node, but rclpy 7.1's EventsExecutor fails on message-info callbacks: "SystemError: null
        #: argument to internal routine".)
        self.latency = LatencyRecord("trajectory_guard", "tool sample stamp -> guard status publish() returned",
                                     path=p["latency_record_path"])  # flushed on stop (`up`) and on destroy
        self.status_pub = self.create_publisher(GuardStatus, p["status_topic"], STATUS_QOS)
        self.status_packer = GuardStatusPacker(FRAME)  # statuses published as CDR bytes
        self._ros_time = self.get_clock().ros_time_is_active  # refreshed when use_sim_time changes
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.marker_pub = self.create_publisher(MarkerArray, p["markers_topic"], DISPLAY_QOS)
        self.markers = GuardMarkers(FRAME)
        self.diag_pub = diagnostics_publisher(self)
        # serialized bytes (spine_nav.nodes.cdr): no Python message built per 1 kHz sample
        self.on_tool = pose_fields(self, p["tool_topic"], self._judge)  # a tool sample over DDS
        self.tool_sub = self.create_subscription(PoseStamped, p["tool_topic"], self.on_tool, TOOL_SUB_QOS, raw=True)
        self.tool_topic = self.tool_sub.topic_name
        self.health_sub = self.create_subscription(ToolHealth, p["health_topic"], self.on_health, SENSOR_QOS)
        self.health_topic = self.health_sub.topic_name
        self.create_subscription(ScrewPlan, p["plan_topic"], self.on_plan, PLAN_QOS)
        self.create_service(SelectScrew, "guard/select_screw", self.on_select)
        self.create_service(SetGuardThresholds, "guard/set_thresholds", self.on_set_thresholds)
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self._heartbeat_s = p["heartbeat_period_ms"] / 1000.0
        self._last_status: tuple | None = None  # (verdict, sample (sec, nanosec), monotonic time published)
        # watchdog and heartbeat on one timer (one executor wake-up, not two: every wake-up takes the interpreter
        # from the 1 kHz tool samples; docs/performance.md "The guard node's timers"), at the watchdog period or at
        # half the heartbeat period if shorter: a repeat goes out once half a period passed without a status, so no
        # gap exceeds one period (plus scheduling delay)
        self.create_timer(min(p["watchdog_period_ms"] / 1000.0, self._heartbeat_s / 2.0), self.on_tick)
        self.create_timer(p["markers_period_s"], self.publish_markers)
        self.create_timer(p["diagnostics_period_s"], self.publish_diagnostics)
        self.get_logger().info(f"trajectory_guard: {describe_guard_arithmetic()}")

    samples = property(lambda self: self.live.samples, doc="tool samples judged (LiveGuard.samples)")

    def now_ns(self) -> int:
        """The node clock, ns: ``time.time_ns()`` (what the ROS clock reads then) unless ROS time is active."""
        return self.get_clock().now().nanoseconds if self._ros_time else time.time_ns()

    def _on_parameters_set(self, params) -> None:
        self._ros_time = self.get_clock().ros_time_is_active  # use_sim_time may have changed

    # ---- inputs -----------------------------------------------------------------------------
    def in_process_inputs(self) -> dict:
        """Topics this node takes from a producer in the same process (:mod:`spine_nav.nodes.in_process`); once
        linked, the DDS subscription goes: no sample is judged twice, and a late DDS copy of an older health
        message can never overwrite a newer one taken in process (e.g. an OK after the bump's lost)."""
        if not self.tool_in_process:
            return {}
        return {self.tool_topic: InProcessInput(functools.partial(self.on_tool_sample, None), drops(self, "tool_sub")),
                self.health_topic: InProcessInput(self.on_health, drops(self, "health_sub"))}

    def on_tool_sample(self, stamp, stamp_s: float, frame_id: str, quat_xyzw, t_mm) -> None:
        """Judge one tool sample: ``stamp`` (builtin_interfaces/Time, echoed in the status; None = from
        ``stamp_s``), tracker time ``stamp_s``, pose T_<frame_id>_tooltip as quaternion ``xyzw`` +
        translation mm (NOT validated: the guard core checks it). Any thread (the DDS callback, or the
        tracker bridge's socket thread when composed in one process: the sample is then judged and its
        status published without the DDS hop and the executor's wake-up, ~0.3 ms median / ~1 ms p99 in
        the demo)."""
        sec, nanosec = seconds_to_sec_nanosec(stamp_s) if stamp is None else (stamp.sec, stamp.nanosec)
        self._judge(sec, nanosec, stamp_s, frame_id, quat_xyzw, t_mm)

    def _judge(self, sec: int, nanosec: int, stamp_s: float, frame_id: str, quat_xyzw, t_mm) -> None:
        with self._lock:
            now_ns = self.now_ns()
            self.last_stamp = (sec, nanosec)
            v = self.live.sample_held(frame_id, quat_xyzw, t_mm, stamp_s, now_ns * 1e-9)  # lock held
            self.publish_status(v, self.last_stamp, now_ns)
            self.latency.add_ns(sec, nanosec)

    def on_health(self, msg: ToolHealth) -> None:
        lost = msg.state == ToolHealth.STATE_TRACKING_LOST or not msg.visible
        reason = (msg.reason or ("tool not visible" if not msg.visible else "tracking lost")) if lost else ""
        with self._lock:
            v = self.live.health(msg.tool, lost, reason, self.now_ns() * 1e-9)
            if v is not None:
                self.publish_status(v, self.last_stamp)

    def on_plan(self, msg: ScrewPlan) -> None:
        try:
            plan, not_navigable = msg_to_plan(msg)
            warning = self.live.set_plan(plan, not_navigable, msg.header.frame_id)
        except PlanError as exc:
            self.live.reject_plan(str(exc))
            self.get_logger().error(f"plan/registered rejected: {exc}")
            return
        if warning:
            self.get_logger().error(warning)
        self.get_logger().info(f"plan {msg.case_id or '(no case id)'}: {len(plan)} screws"
                               + (f", not navigable: {', '.join(not_navigable)}" if not_navigable else ""))

    def on_tick(self) -> None:
        """Watchdog (TRACKING_LOST once tool samples stopped, :meth:`LiveGuard.watchdog`), then liveness: repeat the
        last status with a fresh stamp when none went out for half a heartbeat period."""
        with self._lock:
            v = self.live.watchdog(self.now_ns() * 1e-9)
            if v is not None:
                self.publish_status(v, self.last_stamp)
            last = self._last_status
            if last is not None and time.monotonic() - last[2] >= self._heartbeat_s / 2.0:
                # repeat: consumers counting verdicts skip it; the arm guide counts it as a sign of life
                self.status_pub.publish(verdict_to_status_cdr(last[0], self.status_packer, self.now_ns(), last[1],
                                                              repeat=True))
                self._last_status = (last[0], last[1], time.monotonic())

    # ---- services / parameters --------------------------------------------------------------
    @answers()
    def on_select(self, req: SelectScrew.Request) -> str:
        return self.live.select(req.screw_id)

    @answers((GuardConfigError,), prefix="rejected: ")
    def on_set_thresholds(self, req: SetGuardThresholds.Request) -> str:
        cfg = self.live.apply({name: getattr(req, name) for name in THRESHOLD_FIELDS})
        self.get_logger().info(f"thresholds changed: {cfg.to_dict()}")
        return "thresholds updated"

    def on_set_parameters(self, params) -> SetParametersResult:
        screw = [p.value for p in params if p.name == "active_screw_id"]
        try:
            self.live.apply({p.name: p.value for p in params if p.name in CONFIG_FIELDS}, screw[-1] if screw else None)
        except (GuardConfigError, KeyError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    # ---- outputs ----------------------------------------------------------------------------
    def publish_status(self, v: GuardVerdict, sample_stamp: tuple[int, int] | None, now_ns: int | None = None) -> None:
        """``v`` as GuardStatus bytes: header.stamp ``now_ns`` (default now), tool_sample_stamp (sec, nanosec)."""
        self.status_pub.publish(verdict_to_status_cdr(v, self.status_packer, self.now_ns() if now_ns is None else now_ns,
                                                      sample_stamp))
        self._last_status = (v, sample_stamp, time.monotonic())

    def publish_markers(self) -> None:
        """Planned corridors and the tool axis (:class:`spine_nav.nodes.markers.GuardMarkers`), from a
        snapshot: building and publishing the markers must not hold up a tool sample. Only while someone subscribes
        (RViz, a console): a tick costs ~0.16 ms of the executor thread that the 1 kHz samples wait for."""
        if not self.marker_pub.get_subscription_count():
            return
        s = self.live.snapshot()
        arr = self.markers.build(s.segments, s.state, s.active_id, 2.0 * s.violation_lateral_mm / 1000.0, s.tip_axis,
                                 self.get_clock().now().to_msg())  # corridor width in metres
        if arr.markers:
            self.marker_pub.publish(arr)

    def publish_diagnostics(self) -> None:
        publish_diagnostics(self, self.diag_pub, guard_status(self.live.snapshot(), self.config_error,
                                                              self.latency.recent_p99_ms()))

    def destroy_node(self) -> None:
        self.latency.flush()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(TrajectoryGuardNode, argv)
