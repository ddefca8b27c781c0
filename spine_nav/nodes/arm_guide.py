"""Node `arm_guide`: aligns the guide tube to a planned screw and holds it there (1 kHz servo).

Thin wrapper over :class:`spine_nav.arm.controller.ArmGuide` (all math in the core); the servo
runs in its own thread (:class:`spine_nav.arm.servo.ServoLoop`), ROS callbacks only hand data over.

Subscribes: ``plan/registered`` (ScrewPlan, Reference), ``tracking/reference`` (PoseStamped,
T_tracker_reference), ``guard/status`` (GuardStatus: VIOLATION / TRACKING_LOST hold from the next
servo cycle), ``joint_states`` (sensor_msgs/JointState), ``tracking/arm_marker`` (PoseStamped,
T_tracker_armmarker: live check of the robot-to-tracker registration, hold beyond marker_drift_mm),
``supervisor/process_lost`` (diagnostic_msgs/DiagnosticStatus from the process supervisor,
:mod:`spine_nav.demo.processes`: a stack process died -> hold, the cause names it). Liveness: no
guard/status for ``guard_timeout_ms`` while aligning/tracking -> hold "guard silent" (the guard
publishes at least every heartbeat_period_ms, even idle); no ``tracking/health`` (the bridge's
heartbeat, every health_publish_period_ms even without tracker data) for ``bridge_timeout_ms`` ->
"bridge silent"; once a command source (console) announced itself on ``arm/command_source``
(std_msgs/String, :mod:`spine_nav.nodes.command_source`), no heartbeat from it for
``command_source_timeout_ms`` -> "console silent" (core: :mod:`spine_nav.arm.liveness`).
Publishes: the joint command on the ``command_interface``'s topic (:mod:`spine_nav.nodes.arm_params`:
``arm/joint_command`` JointTrajectory one point (default), ``<controller>/joint_trajectory`` for a
ros2_control JointTrajectoryController, or ``<controller>/commands`` Float64MultiArray for a forward
position controller),
``arm/state`` (ArmState), ``arm/guide_pose`` (PoseStamped, T_reference_guidetube in Reference),
``/diagnostics``. Service: ``arm/command`` (ArmCommand: align screw_id / hold / release / resume).

Parameters (units in names): tracker_robotbase_xyz_mm + tracker_robotbase_quat_xyzw
(T_tracker_robotbase from hand-eye calibration: ``spine-nav arm calibrate``), standoff_mm,
servo_rate_hz, command_rate_hz, state_rate_hz, realtime (SCHED_FIFO), reference_timeout_s,
feedback_timeout_s, cycle_watchdog_s, guard_timeout_ms, bridge_timeout_ms, command_source_timeout_ms (<= 0: off), velocity_scale, near_patient_mm,
near_patient_velocity_scale, and the robot / command interface (:mod:`spine_nav.nodes.arm_params`: urdf, base_link, flange_link, tool
mounts, command_interface, controller_name, controller_joints, joint_name_map).

Clocks: the servo runs on time.monotonic; a tracker sample's header stamp (ROS time) is mapped to
monotonic with the current ROS-monotonic offset, so the stale-reference watchdog sees its real age.
"""
from __future__ import annotations

import threading
import time

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from spine_nav_interfaces.msg import ArmState, GuardStatus, ScrewPlan, ToolHealth
from spine_nav_interfaces.srv import ArmCommand
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from spine_nav.arm.controller import ArmGuide, ArmGuideConfig
from spine_nav.arm.kinematics import ArmKinematics
from spine_nav.arm.safety import StopCause
from spine_nav.arm.servo import ServoLoop
from spine_nav.nodes.conversions import (msg_to_plan, pose_cdr_to_quat_mm, quat_mm_to_matrix_mm, stamp_to_seconds,
                                         validated_matrix_mm_to_pose_stamped)
from spine_nav.nodes.arm_params import declare_arm_parameters
from spine_nav.nodes.command_source import COMMAND_SOURCE_TOPIC
from spine_nav.nodes.latency_record import LatencyRecord
from spine_nav.nodes.diagnostics import publish_diagnostics
from spine_nav.nodes.parameters import declare_pose_parameter
from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS
from spine_nav.nodes.runner import InnerNode
from spine_nav.plan import PlanError


#: GuardStatus.state -> name, for senders that leave state_name empty.
_GUARD_STATE_NAMES = {GuardStatus.STATE_TRACKING_LOST: "TRACKING_LOST", GuardStatus.STATE_VIOLATION: "VIOLATION"}


class ArmGuideNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("arm_guide", **kwargs)
        p = self.declare_parameter
        T_tracker_robotbase = declare_pose_parameter(self, "tracker_robotbase")
        self.servo_rate_hz = float(p("servo_rate_hz", 1000.0).value)
        cfg = ArmGuideConfig(
            standoff_mm=float(p("standoff_mm", 25.0).value),
            control_period_s=1.0 / self.servo_rate_hz,
            reference_timeout_s=float(p("reference_timeout_s", 0.1).value),
            feedback_timeout_s=float(p("feedback_timeout_s", 0.05).value),
            cycle_watchdog_s=float(p("cycle_watchdog_s", 0.02).value),
            guard_timeout_ms=float(p("guard_timeout_ms", 50.0).value) or None,
            bridge_timeout_ms=float(p("bridge_timeout_ms", 50.0).value) or None,
            command_source_timeout_ms=float(p("command_source_timeout_ms", 50.0).value) or None,
            velocity_scale=float(p("velocity_scale", 0.5).value),
            near_patient_mm=float(p("near_patient_mm", 80.0).value),
            near_patient_velocity_scale=float(p("near_patient_velocity_scale", 0.25).value),
            marker_drift_mm=float(p("marker_drift_mm", 3.0).value),
        )
        command_rate_hz = float(p("command_rate_hz", 250.0).value)
        state_rate_hz = float(p("state_rate_hz", 20.0).value)
        realtime = bool(p("realtime", True).value)
        self.latency_record_path = str(p("latency_record_path", "").value)
        #: per reference sample answered: its tracker stamp -> the answering command's publish() returned
        self.latency = LatencyRecord("arm_guide", "reference sample stamp -> arm command publish() returned")

        self.iface = declare_arm_parameters(self)  # ValueError (one line): the node does not start
        self.kin = ArmKinematics(self.iface.arm)
        self.joint_names = self.kin.arm.joint_names
        self._command_period_s = 1.0 / command_rate_hz
        self._lock = threading.Lock()
        self._feedback: tuple[np.ndarray, np.ndarray, float] | None = None
        self.plan = None
        self.not_navigable: dict[str, str] = {}
        self.guide: ArmGuide | None = None  # created at the first joint state (starts where the arm is)
        self._cfg, self._T_tracker_robotbase = cfg, T_tracker_robotbase
        self._pending_reference: list = []
        self._new_reference_stamp = None  # tracker stamp of a reference sample the servo has not answered yet
        self._was_holding = False  # servo thread only: a hold is sent to the arm in the cycle it takes effect

        msg_type = Float64MultiArray if self.iface.command_interface == "forward_position" else JointTrajectory
        self.cmd_pub = self.create_publisher(msg_type, self.iface.command_topic, STATUS_QOS)
        self.state_pub = self.create_publisher(ArmState, "arm/state", STATUS_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, "arm/guide_pose", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ScrewPlan, "plan/registered", self.on_plan, PLAN_QOS)
        # 1 kHz poses arrive as serialized bytes (spine_nav.nodes.cdr): no Python message built per sample
        self.create_subscription(PoseStamped, "tracking/reference", self.on_reference, SENSOR_QOS, raw=True)
        self.create_subscription(GuardStatus, "guard/status", self.on_guard, STATUS_QOS)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, SENSOR_QOS)
        self.create_subscription(PoseStamped, "tracking/arm_marker", self.on_arm_marker, SENSOR_QOS, raw=True)
        self.create_subscription(DiagnosticStatus, "supervisor/process_lost", self.on_process_lost, STATUS_QOS)
        # heartbeats (spine_nav.arm.liveness): the bridge's health stream (raw: its content is the guard's
        # business, only its arrival counts here) and the registered command source's
        self.create_subscription(ToolHealth, "tracking/health", self.on_bridge_heartbeat, STATUS_QOS, raw=True)
        self.create_subscription(String, COMMAND_SOURCE_TOPIC, self.on_command_source, STATUS_QOS)
        # The alignment IK (several seeds, up to ~150 ms) runs in the service callback: the service lives
        # on an inner node with its own executor thread so joint feedback and tracker samples keep
        # flowing meanwhile (otherwise the servo's feedback watchdog trips during every align).
        self._command_node = InnerNode("arm_guide_command", self.context)
        self._command_node.node.create_service(ArmCommand, "arm/command", self.on_command)
        self.create_timer(1.0 / command_rate_hz, self.publish_command)
        self.create_timer(1.0 / state_rate_hz, self.publish_state)
        self.create_timer(1.0, self.publish_diagnostics)
        self.servo = ServoLoop(self.servo_cycle, period_s=1.0 / self.servo_rate_hz, realtime=realtime, record=False)
        self.servo.start()
        self.get_logger().info(f"arm_guide: servo {self.servo_rate_hz:.0f} Hz (realtime={realtime}), "
                               f"standoff {cfg.standoff_mm} mm; {self.kin.arm.dof} axes from {self.kin.arm.source}, "
                               f"commands: {self.iface.command_interface} on {self.iface.command_topic}")

    # ---------------------------------------------------------------- clocks
    def _ros_to_mono(self, stamp) -> float:
        offset = self.get_clock().now().nanoseconds * 1e-9 - time.monotonic()
        return stamp_to_seconds(stamp) - offset

    # ---------------------------------------------------------------- inputs
    def on_plan(self, msg: ScrewPlan) -> None:
        try:
            plan, not_nav = msg_to_plan(msg)
        except PlanError as exc:
            self.get_logger().error(f"plan/registered rejected: {exc}")
            return
        if plan.frame != "Reference":
            self.get_logger().error(f"plan/registered: frame {plan.frame!r}, expected 'Reference'; ignored")
            return
        self.plan, self.not_navigable = plan, not_nav
        self.get_logger().info(f"plan: {len(plan)} screws ({len(not_nav)} not navigable)")

    def _pose(self, data: bytes, topic: str):
        """Serialized PoseStamped -> (header.stamp, 4x4 mm), or None (logged, throttled) when unusable."""
        try:
            stamp, _frame, q, t_mm = pose_cdr_to_quat_mm(data)
            return stamp, quat_mm_to_matrix_mm(q, t_mm)
        except ValueError as exc:
            self.get_logger().warn(f"{topic}: bad pose ({exc})", throttle_duration_sec=1.0)
            return None

    def on_reference(self, data: bytes) -> None:
        pose = self._pose(data, "tracking/reference")
        if pose is None:
            return
        stamp, T = pose
        t = self._ros_to_mono(stamp)
        if self.guide is None:
            self._pending_reference = [(T, t)]
        else:
            self.guide.on_reference(T, t)
            with self._lock:
                self._new_reference_stamp = stamp

    def on_arm_marker(self, data: bytes) -> None:
        if self.guide is None:
            return
        pose = self._pose(data, "tracking/arm_marker")
        if pose is not None:
            self.guide.on_arm_marker(pose[1], self._ros_to_mono(pose[0]))

    def on_guard(self, msg: GuardStatus) -> None:
        if self.guide is not None:
            name = msg.state_name or _GUARD_STATE_NAMES.get(msg.state, "")
            self.guide.on_guard_state(name, time.monotonic(), msg.reason)

    def on_bridge_heartbeat(self, _data: bytes) -> None:
        if self.guide is not None:
            self.guide.on_heartbeat("bridge", time.monotonic())

    def on_command_source(self, msg: String) -> None:
        """Heartbeat of the command source: a name registers it (watched from now on), "" withdraws it."""
        if self.guide is not None:
            before = self.guide.liveness.registered("command_source")
            self.guide.on_heartbeat("command_source", time.monotonic(), msg.data)
            if msg.data != before:
                self.get_logger().info(f"command source: {msg.data!r} (was {before!r})")

    def on_process_lost(self, msg: DiagnosticStatus) -> None:
        """The supervisor saw a stack process die: hold now (latched; resume once the stack is healthy)."""
        self.get_logger().error(f"supervisor: {msg.name}: {msg.message}")
        if self.guide is not None:
            self.guide.hold(time.monotonic(), StopCause.PROCESS_LOST, msg.message or msg.name)

    def on_joint_state(self, msg: JointState) -> None:
        try:  # joint_state_broadcaster names (joint_name_map), any order, other joints ignored
            q = self.iface.from_names(msg.name, msg.position, "joint_states")
            qd = (self.iface.from_names(msg.name, msg.velocity, "joint_states")
                  if len(msg.velocity) == len(msg.name) else np.zeros(self.kin.arm.dof))
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        with self._lock:
            self._feedback = (q, qd, time.monotonic())
        if self.guide is None:
            self.guide = ArmGuide(self.kin, self._T_tracker_robotbase, self._cfg, q0_rad=q)
            for T, t in self._pending_reference:
                self.guide.on_reference(T, t)

    def on_command(self, req: ArmCommand.Request, res: ArmCommand.Response) -> ArmCommand.Response:
        now = time.monotonic()
        if self.guide is None:
            res.success, res.message = False, "no joint_states from the arm yet"
            return res
        cmd = req.command.strip().lower()
        if cmd == "align":
            if self.plan is None:
                res.success, res.message = False, "no plan on plan/registered yet"
                return res
            if req.screw_id in self.not_navigable:
                res.success, res.message = False, f"screw {req.screw_id}: not navigable ({self.not_navigable[req.screw_id]})"
                return res
            try:
                screw = self.plan.screw(req.screw_id)
            except KeyError as exc:
                res.success, res.message = False, str(exc.args[0])
                return res
            res.success, res.message = self.guide.align(screw, now)
        elif cmd == "hold":
            self.guide.hold(now, StopCause.OPERATOR, "arm/command hold")
            res.success, res.message = True, "hold requested"
        elif cmd == "resume":
            res.success, res.message = self.guide.resume(now)
        elif cmd == "release":
            res.success, res.message = self.guide.release()
        else:
            res.success, res.message = False, f"command: unknown {req.command!r} (align, hold, release, resume)"
        if res.success:
            self.get_logger().info(f"arm/command {cmd}: {res.message}")
        else:  # rclpy: one severity per logging call site
            self.get_logger().warn(f"arm/command {cmd} refused: {res.message}")
        return res

    # ---------------------------------------------------------------- servo thread
    def servo_cycle(self, t_s: float) -> None:
        with self._lock:
            fb = self._feedback
            answered, self._new_reference_stamp = self._new_reference_stamp, None
        if self.guide is None or fb is None:
            return
        holding = self.guide.step(t_s, fb[0], fb[1], fb[2]).holding
        if holding and not self._was_holding and answered is None:
            self.publish_command()  # the hold reaches the arm now, not at the next keep-alive
        self._was_holding = holding
        if answered is not None:
            # The cycle that consumed a new tracker sample sends its command at once, stamped with that
            # sample's tracker time (frame_id "sample"): sample -> arm command latency is measurable
            # end to end, and the arm reacts to patient motion within one servo cycle.
            self.publish_command(sample_stamp=answered)

    # ---------------------------------------------------------------- outputs (executor thread)
    def publish_command(self, sample_stamp=None) -> None:
        """Position command. Keep-alive commands (timer) are stamped now; see servo_cycle for "sample"."""
        if self.guide is None:
            return
        if self.servo.error is not None:
            self.guide.hold(time.monotonic(), StopCause.CYCLE_WATCHDOG, f"servo thread died: {self.servo.error}")
        q, holding = self.guide.command  # not .state: that also composes the guide pose (~0.1-0.3 ms here)
        if self.iface.command_interface == "forward_position":
            # a forward position controller takes the positions as they come (its joint order, no stamp)
            self.cmd_pub.publish(Float64MultiArray(data=self.iface.to_controller(q)))
            if sample_stamp is not None:
                self.latency.add(sample_stamp)
            return
        if self.iface.command_interface == "joint_trajectory":
            # a JointTrajectoryController: one point, reached one command period from now (stamp 0 = "start
            # now" for the controller); holding = the frozen position keeps being sent
            msg = JointTrajectory(joint_names=list(self.iface.controller_joints))
            pt = JointTrajectoryPoint(positions=self.iface.to_controller(q))
            ns = int(self._command_period_s * 1e9)
            pt.time_from_start = Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            msg.points.append(pt)
            self.cmd_pub.publish(msg)
            if sample_stamp is not None:
                self.latency.add(sample_stamp)
            return
        msg = JointTrajectory()
        msg.header.stamp = sample_stamp if sample_stamp is not None else self.get_clock().now().to_msg()
        msg.header.frame_id = "sample" if sample_stamp is not None else ""
        msg.joint_names = self.joint_names
        pt = JointTrajectoryPoint(positions=q.tolist())  # position streaming; the servo limits velocity
        pt.time_from_start = Duration(sec=0, nanosec=0)
        msg.points.append(pt)
        if holding:
            msg.header.frame_id = "hold"
        self.cmd_pub.publish(msg)
        if sample_stamp is not None:
            self.latency.add(sample_stamp)

    def publish_state(self) -> None:
        if self.guide is None:
            return
        st = self.guide.state
        now = self.get_clock().now()
        msg = ArmState(mode=st.mode, active_screw_id=st.active_screw_id, stop_cause=st.stop_cause,
                       alignment_error_mm=float(st.alignment_error_mm), alignment_error_deg=float(st.alignment_error_deg),
                       holding=st.holding)
        msg.header.stamp = now.to_msg()
        msg.header.frame_id = "Reference"
        self.state_pub.publish(msg)
        if st.T_reference_guidetube is not None:
            # rigid by construction (checked inverse @ forward kinematics): the plain-float conversion,
            # not the scipy one (~0.1 ms of the interpreter the servo thread shares, at 20 Hz)
            self.pose_pub.publish(validated_matrix_mm_to_pose_stamped(st.T_reference_guidetube, "Reference",
                                                                      now.nanoseconds * 1e-9))

    def publish_diagnostics(self) -> None:
        st = self.guide.state if self.guide is not None else None
        status = DiagnosticStatus(name="spine_nav/arm_guide", hardware_id="spine_arm")
        if st is None:
            status.level, status.message = DiagnosticStatus.WARN, "waiting for joint_states"
        elif st.holding:
            status.level, status.message = DiagnosticStatus.WARN, f"HOLD: {st.stop_cause}"
        else:
            status.level, status.message = DiagnosticStatus.OK, st.mode
        status.values = [KeyValue(key="servo_cycles", value=str(self.servo.stats.cycles)),
                         KeyValue(key="servo_overruns", value=str(self.servo.stats.overruns)),
                         KeyValue(key="realtime", value=str(self.servo.stats.realtime)),
                         KeyValue(key="marker_drift_mm", value=f"{self.guide.marker_drift_mm:.2f}" if self.guide else "nan")]
        publish_diagnostics(self, self.diag_pub, status)

    def destroy_node(self) -> None:
        self.servo.stop()
        if self.latency_record_path:
            self.latency.write(self.latency_record_path)
        self._command_node.destroy()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(ArmGuideNode, argv)
