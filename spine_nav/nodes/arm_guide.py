"""Node `arm_guide`: aligns the guide tube to a planned screw and holds it there (1 kHz servo).

Thin wrapper over :class:`spine_nav.arm.controller.ArmGuide` (all math in the core); the servo
runs in its own thread (:class:`spine_nav.arm.servo.ServoLoop`), ROS callbacks only hand data over.

Subscribes: ``plan/registered`` (ScrewPlan, Reference), ``tracking/reference`` (PoseStamped,
T_tracker_reference), ``guard/status`` (GuardStatus: VIOLATION / TRACKING_LOST hold from the next
servo cycle, and so does NO_PLAN for want of a plan on the screw the arm guides on: "guard NO_PLAN"), ``joint_states`` (sensor_msgs/JointState), ``tracking/arm_marker`` (PoseStamped,
T_tracker_armmarker: live check of the robot-to-tracker registration, hold beyond marker_drift_mm),
``supervisor/process_lost`` (diagnostic_msgs/DiagnosticStatus from the process supervisor,
:mod:`spine_nav.demo.processes`: a stack process died -> hold, the cause names it). Liveness: no
guard/status for ``guard_timeout_ms`` while aligning/tracking -> hold "guard silent" (the guard
publishes at least every heartbeat_period_ms, even idle); no ``tracking/health`` (the bridge's
heartbeat) for ``bridge_timeout_ms`` -> "bridge silent"; once a command source (console) announced
itself on ``arm/command_source`` (:mod:`spine_nav.nodes.command_source`), no heartbeat from it for
``command_source_timeout_ms`` -> "console silent" (core: :mod:`spine_nav.arm.liveness`).
Publishes: the joint command on the ``command_interface``'s topic (:mod:`spine_nav.nodes.arm_params`:
``arm/joint_command`` JointTrajectory one point (default), ``<controller>/joint_trajectory`` for a
ros2_control JointTrajectoryController, or ``<controller>/commands`` Float64MultiArray for a forward
position controller),
``arm/state`` (ArmState), ``arm/guide_pose`` (PoseStamped, T_reference_guidetube in Reference),
``/diagnostics``. Service: ``arm/command`` (ArmCommand: align screw_id / hold / release / resume).

Parameters (units in names; declared from :data:`spine_nav.nodes.node_params.NODE_PARAMETERS` with
descriptions and ranges, the controller's from :class:`spine_nav.arm.controller.ArmGuideConfig`): tracker_robotbase_xyz_mm + tracker_robotbase_quat_xyzw
(T_tracker_robotbase from hand-eye calibration: ``spine-nav arm calibrate``), standoff_mm,
servo_rate_hz, command_rate_hz, state_rate_hz, realtime (SCHED_FIFO), reference_timeout_s,
feedback_timeout_s, cycle_watchdog_s, guard_timeout_ms (<= 0: off), velocity_scale, near_patient_mm,
near_patient_velocity_scale, and the robot / command interface (:mod:`spine_nav.nodes.arm_params`: urdf, base_link, flange_link, tool
mounts, command_interface, controller_name, controller_joints, joint_name_map).

Clocks: the servo runs on time.monotonic; a tracker sample's header stamp (ROS time) is mapped to
monotonic with the current ROS-monotonic offset, so the stale-reference watchdog sees its real age.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import JointState
from spine_nav_interfaces.msg import ArmState, GuardStatus, ScrewPlan, ToolHealth
from spine_nav_interfaces.srv import ArmCommand
from std_msgs.msg import String

from spine_nav.arm.controller import ArmGuideConfig
from spine_nav.arm.host import GuideHost
from spine_nav.arm.kinematics import ArmKinematics
from spine_nav.arm.safety import StopCause
from spine_nav.arm.servo import ServoLoop
from spine_nav.guard.core import lacks_plan
from spine_nav.nodes.arm_params import arm_interface
from spine_nav.nodes.command_source import COMMAND_SOURCE_TOPIC
from spine_nav.nodes.conversions import (arm_state_to_msg, guard_state_name, msg_to_plan, quat_mm_to_matrix_mm,
                                         validated_matrix_mm_to_pose_stamped)
from spine_nav.nodes.diagnostics import arm_status, diagnostics_publisher, publish_diagnostics
from spine_nav.nodes.in_process import pose_samples
from spine_nav.nodes.latency_record import LatencyRecord
from spine_nav.nodes.lifecycle import ManagedNode
from spine_nav.nodes.parameters import config_from, pose_from
from spine_nav.nodes.qos import DISPLAY_QOS, PLAN_QOS, SENSOR_QOS, STATUS_QOS
from spine_nav.nodes.runner import InnerNode
from spine_nav.plan import PlanError

class ArmGuideNode(ManagedNode):
    """Lifecycle (:mod:`spine_nav.nodes.lifecycle`): configure reads the robot (URDF), builds the guide's host,
    publishers, subscriptions, the ``arm/command`` service (on its inner node) and timers; activate starts the
    1 kHz servo thread; deactivate holds the arm (one hold command) and stops the servo; cleanup (through
    ``at_cleanup``) destroys the inner node and writes the latency record. ``arm/command`` is refused while the node is not active."""

    def __init__(self, **kwargs) -> None:
        super().__init__("arm_guide", **kwargs)
        self.servo = self.host = None

    def configure(self) -> None:
        p = self.params
        T_tracker_robotbase = pose_from(p, "tracker_robotbase", self.get_name())  # hand-eye calibration
        self.servo_rate_hz = p["servo_rate_hz"]
        self._cfg = config_from(ArmGuideConfig, p, "arm_guide", control_period_s=1.0 / self.servo_rate_hz)
        #: per reference sample answered: its tracker stamp -> the answering command's publish() returned
        self.latency = LatencyRecord("arm_guide", "reference sample stamp -> arm command publish() returned",
                                     path=p["latency_record_path"])  # flushed on stop (`up`) and on cleanup
        self.iface = arm_interface(p, self.get_name())  # ValueError (one line) naming the parameter / file
        self.kin = ArmKinematics(self.iface.arm)
        self._command_period_s = 1.0 / p["command_rate_hz"]
        self.host = GuideHost(self.kin, T_tracker_robotbase, self._cfg)  # the guide, from the first joint state
        self.at_cleanup(self.latency.flush)
        self.cmd_pub = self.create_publisher(self.iface.message_type, self.iface.command_topic, STATUS_QOS)
        self.state_pub = self.create_publisher(ArmState, "arm/state", STATUS_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, "arm/guide_pose", DISPLAY_QOS)
        self.diag_pub = diagnostics_publisher(self)
        self.create_subscription(ScrewPlan, "plan/registered", self.on_plan, PLAN_QOS)
        # 1 kHz poses arrive as serialized bytes (spine_nav.nodes.cdr): no Python message built per sample
        for topic, on_pose in (("tracking/reference", self.on_reference), ("tracking/arm_marker", self.on_arm_marker)):
            self.create_subscription(PoseStamped, topic, pose_samples(self, topic, on_pose), SENSOR_QOS, raw=True)
        self.create_subscription(GuardStatus, "guard/status", self.on_guard, STATUS_QOS)
        self.create_subscription(JointState, "joint_states", self.on_joint_state, SENSOR_QOS)
        self.create_subscription(DiagnosticStatus, "supervisor/process_lost", self.on_process_lost, STATUS_QOS)
        # heartbeats (spine_nav.arm.liveness): the bridge's health stream (raw: only its arrival counts
        # here) and the registered command source's (docs/safety.md)
        self.create_subscription(ToolHealth, "tracking/health", self.on_bridge_heartbeat, STATUS_QOS, raw=True)
        self.create_subscription(String, COMMAND_SOURCE_TOPIC, self.on_command_source, STATUS_QOS)
        # The alignment IK (several seeds, up to ~150 ms) runs in the service callback: the service lives
        # on an inner node with its own executor thread so joint feedback and tracker samples keep
        # flowing meanwhile (otherwise the servo's feedback watchdog trips during every align).
        command_node = InnerNode("arm_guide_command", self.context)
        self.at_cleanup(command_node.destroy)
        command_node.node.create_service(ArmCommand, "arm/command", self.on_command)
        self.create_timer(self._command_period_s, self.publish_command)
        self.create_timer(1.0 / p["state_rate_hz"], self.publish_state)
        self.create_timer(1.0, self.publish_diagnostics)

    def activate(self) -> None:
        p = self.params
        self.servo = ServoLoop(self.servo_cycle, 1.0 / self.servo_rate_hz, realtime=p["realtime"], record=False).start()
        self.get_logger().info(f"arm_guide: servo {self.servo_rate_hz:.0f} Hz (realtime={p['realtime']}), standoff "
                               f"{self._cfg.standoff_mm} mm; {self.kin.arm.dof} axes from {self.kin.arm.source}, "
                               f"commands: {self.iface.command_interface} on {self.iface.command_topic}")

    def deactivate(self) -> None:
        if self.servo is not None:
            self.servo.stop()
        if self.host.guide is not None:  # the arm holds where it is (the servo no longer answers)
            self.host.guide.hold(time.monotonic(), StopCause.OPERATOR, "arm_guide deactivated")
            self.publish_command()

    def _ros_to_mono(self, stamp_s: float) -> float:
        """A tracker stamp (ROS time, s) on the servo's clock (time.monotonic), with the current offset."""
        return stamp_s - (self.get_clock().now().nanoseconds * 1e-9 - time.monotonic())

    # ---------------------------------------------------------------- inputs
    def on_plan(self, msg: ScrewPlan) -> None:
        try:
            plan, not_nav = msg_to_plan(msg)
            if plan.frame != "Reference":
                raise PlanError(f"frame {plan.frame!r}, expected 'Reference'")
        except PlanError as exc:
            self.get_logger().error(f"plan/registered rejected: {exc}")
            return
        self.host.plan, self.host.not_navigable = plan, not_nav
        self.get_logger().info(f"plan: {len(plan)} screws ({len(not_nav)} not navigable)")

    def on_reference(self, stamp, stamp_s: float, _frame: str, q, t_mm) -> None:
        """A reference pose (:func:`spine_nav.nodes.in_process.pose_samples`: undecodable ones logged and skipped)."""
        self.host.on_reference(quat_mm_to_matrix_mm(q, t_mm), self._ros_to_mono(stamp_s), stamp)

    def on_arm_marker(self, _stamp, stamp_s: float, _frame: str, q, t_mm) -> None:
        if self.host.guide is not None:
            self.host.guide.on_arm_marker(quat_mm_to_matrix_mm(q, t_mm), self._ros_to_mono(stamp_s))

    def on_guard(self, msg: GuardStatus) -> None:
        """Every status, repeats too (the guard's heartbeat); a NO_PLAN for want of a plan holds a guiding arm."""
        if self.host.guide is not None:
            name = guard_state_name(msg)
            self.host.guide.on_guard_state(name, time.monotonic(), msg.reason, msg.active_screw_id,
                                           lacks_plan(name, msg.reason))

    def on_bridge_heartbeat(self, _data: bytes) -> None:
        if self.host.guide is not None:
            self.host.guide.on_heartbeat("bridge", time.monotonic())

    def on_command_source(self, msg: String) -> None:
        """Heartbeat of the command source: a name registers it (watched from now on), "" withdraws it."""
        was = None if self.host.guide is None else self.host.guide.on_heartbeat("command_source", time.monotonic(), msg.data)
        if was is not None:
            self.get_logger().info(f"command source: {msg.data!r} (was {was!r})")

    def on_process_lost(self, msg: DiagnosticStatus) -> None:
        """The supervisor saw a stack process die: hold now (latched; resume once the stack is healthy)."""
        self.get_logger().error(f"supervisor: {msg.name}: {msg.message}")
        if self.host.guide is not None:
            self.host.guide.hold(time.monotonic(), StopCause.PROCESS_LOST, msg.message or msg.name)

    def on_joint_state(self, msg: JointState) -> None:
        try:  # joint_state_broadcaster names (joint_name_map), any order, other joints ignored
            self.host.on_joint_state(*self.iface.joint_state(msg.name, msg.position, msg.velocity), time.monotonic())
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)

    def on_command(self, req: ArmCommand.Request, res: ArmCommand.Response) -> ArmCommand.Response:
        cmd = req.command.strip().lower()
        res.success, res.message = (self.host.command(req.command, req.screw_id, time.monotonic()) if self.active
                                    else (False, f"arm_guide is {self.state_label}, not active"))
        if res.success:
            self.get_logger().info(f"arm/command {cmd}: {res.message}")
        else:  # rclpy: one severity per logging call site
            self.get_logger().warn(f"arm/command {cmd} refused: {res.message}")
        return res

    # ---------------------------------------------------------------- servo thread
    def servo_cycle(self, t_s: float) -> None:
        hold_began, answered = self.host.cycle(t_s)
        if hold_began:
            self.publish_command()  # the hold reaches the arm now, not at the next keep-alive
        if answered is not None:
            # The cycle that consumed a new tracker sample sends its command at once, stamped with that
            # sample's tracker time (frame_id "sample"): sample -> arm command latency is measurable
            # end to end, and the arm reacts to patient motion within one servo cycle.
            self.publish_command(sample_stamp=answered)

    # ---------------------------------------------------------------- outputs (executor thread)
    def publish_command(self, sample_stamp=None) -> None:
        """Position command (:meth:`ArmInterface.command_message`); keep-alive commands (timer) are stamped now."""
        if self.host.guide is None:
            return
        if self.servo is not None and self.servo.error is not None:
            self.host.guide.hold(time.monotonic(), StopCause.CYCLE_WATCHDOG, f"servo thread died: {self.servo.error}")
        q, holding = self.host.guide.command  # not .state: that also composes the guide pose (~0.1-0.3 ms here)
        stamp = sample_stamp if sample_stamp is not None else self.get_clock().now().to_msg()
        self.cmd_pub.publish(self.iface.command_message(q, holding, stamp, sample_stamp is not None,
                                                        self._command_period_s))
        if sample_stamp is not None:
            self.latency.add(sample_stamp)

    def publish_state(self) -> None:
        if self.host.guide is None:
            return
        st, now = self.host.guide.state, self.get_clock().now()
        self.state_pub.publish(arm_state_to_msg(st, "Reference", now.to_msg()))
        if st.T_reference_guidetube is not None:
            # rigid by construction (checked inverse @ forward kinematics): the plain-float conversion,
            # not the scipy one (~0.1 ms of the interpreter the servo thread shares, at 20 Hz)
            self.pose_pub.publish(validated_matrix_mm_to_pose_stamped(st.T_reference_guidetube, "Reference",
                                                                      now.nanoseconds * 1e-9))

    def publish_diagnostics(self) -> None:
        publish_diagnostics(self, self.diag_pub, arm_status(self.host.guide, self.servo.stats))


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(ArmGuideNode, argv)
