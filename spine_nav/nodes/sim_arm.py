"""Node `sim_arm`: the arm simulated in MuJoCo (:class:`spine_nav.sim.arm.MujocoArm`).

Steps physics in real time from a timer (as many 1 ms steps as wall time has passed, capped),
applies the latest joint command on the ``command_interface``'s topic (:mod:`spine_nav.nodes.arm_params`;
it stands in for a ros2_control JointTrajectoryController or forward position controller: same topics,
same message types; a trajectory's first point is applied as a position setpoint, matched by joint name;
a Float64MultiArray in ``controller_joints`` order), publishes ``joint_states`` (sensor_msgs/JointState,
rad, rad/s, controller joint names: what a joint_state_broadcaster sends) and
``tracking/arm_marker`` (PoseStamped, frame ``Tracker``: T_tracker_armmarker as the optical
tracker would see it, with optional position noise) and ``/diagnostics``.

Own watchdog: a command older than ``command_timeout_s`` is dropped and the arm holds where it is
(config/nodes.yaml 0.08 s: when the arm guide's process dies, this holds the arm). ``hold_events``
records (time.monotonic(), "watchdog" | "command") for every hold: the watchdog's, and the first
``hold`` command (frame_id "hold") after moving ones, so in-process callers (the demo) can measure
fault -> hold.

Parameters: tracker_robotbase_xyz_mm, tracker_robotbase_quat_xyzw (the true robot pose in the
tracker), q0_rad (chain order; for another robot its length must match), publish_rate_hz,
marker_noise_mm, command_timeout_s, max_steps_per_tick, and the robot / command interface
parameters of :mod:`spine_nav.nodes.arm_params`.
"""
from __future__ import annotations

import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from spine_nav.nodes.arm_params import declare_arm_parameters
from spine_nav.nodes.conversions import validated_matrix_mm_to_pose_stamped
from spine_nav.nodes.diagnostics import publish_diagnostics
from spine_nav.nodes.parameters import declare_pose_parameter
from spine_nav.nodes.qos import SENSOR_QOS, STATUS_QOS
from spine_nav.sim.arm import MujocoArm


class SimArmNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_arm", **kwargs)
        p = self.declare_parameter
        T_tracker_robotbase = declare_pose_parameter(self, "tracker_robotbase")
        q0 = list(p("q0_rad", [0.0, 0.4, 0.0, -1.3, 0.0, 1.0, 0.0]).value)
        rate = float(p("publish_rate_hz", 250.0).value)
        self.noise_mm = float(p("marker_noise_mm", 0.0).value)
        self.command_timeout_s = float(p("command_timeout_s", 0.1).value)
        self.max_steps = int(p("max_steps_per_tick", 20).value)
        self.iface = declare_arm_parameters(self)
        if len(q0) != self.iface.arm.dof:
            raise ValueError(f"sim_arm: parameter q0_rad has {len(q0)} values, the arm has {self.iface.arm.dof} "
                             f"joints {self.iface.arm.joint_names}")
        self.sim = MujocoArm(self.iface.arm, T_tracker_robotbase=T_tracker_robotbase, q0_rad=np.array(q0))
        self.joint_names = self.sim.arm.joint_names
        self._max_step_rad = 0.9 * self.sim.arm.velocity_limit_rad_s * self.sim.dt_s
        self.rng = np.random.default_rng()
        self._last_cmd_mono: float | None = None
        self._cmd_period_s = 0.004
        self._q_from: np.ndarray | None = None
        self._q_to: np.ndarray | None = None
        self._stale_logged = False
        self._cmd_holding = False
        #: (time.monotonic(), "watchdog" | "command"): when the arm started holding, and why
        self.hold_events: list[tuple[float, str]] = []
        self._t0 = time.monotonic()
        self._steps = 0
        self.js_pub = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.marker_pub = self.create_publisher(PoseStamped, "tracking/arm_marker", SENSOR_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.iface.command_interface == "forward_position":
            self.create_subscription(Float64MultiArray, self.iface.command_topic, self.on_forward, STATUS_QOS)
        else:
            self.create_subscription(JointTrajectory, self.iface.command_topic, self.on_command, STATUS_QOS)
        self.create_timer(1.0 / rate, self.tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"sim_arm: MuJoCo {self.sim.dt_s * 1e3:.1f} ms steps, publishing at {rate:.0f} Hz")

    def on_command(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        try:
            q = self.iface.from_names(msg.joint_names, msg.points[0].positions, self.iface.command_topic)
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        self._apply(q, holding=msg.header.frame_id == "hold")

    def on_forward(self, msg: Float64MultiArray) -> None:
        try:
            q = self.iface.from_controller_order(msg.data, self.iface.command_topic)
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        self._apply(q, holding=False)  # a forward position controller's message carries no hold flag

    def _apply(self, q: np.ndarray, holding: bool) -> None:
        """Stream ``q`` (controller joints as ours); ``holding``: the sender marked it a hold (recorded)."""
        if not np.all(np.isfinite(q)):
            self.get_logger().error(f"{self.iface.command_topic}: non-finite position; ignored", throttle_duration_sec=5.0)
            return
        now = time.monotonic()
        if holding and not self._cmd_holding:
            self.hold_events.append((now, "command"))
        self._cmd_holding = holding
        if self._last_cmd_mono is not None:
            self._cmd_period_s = min(0.05, max(1e-3, now - self._last_cmd_mono))
        self._q_from = self._current_ctrl()
        self._q_to = q
        self._last_cmd_mono = now
        self._stale_logged = False

    def _current_ctrl(self) -> np.ndarray:
        """The interpolated command now (first-order hold between streamed positions, like a driver)."""
        if self._q_to is None:
            return self.sim.state()[1]
        a = min(1.0, (time.monotonic() - self._last_cmd_mono) / self._cmd_period_s) if self._last_cmd_mono else 1.0
        return self._q_from + a * (self._q_to - self._q_from)

    def tick(self) -> None:
        now = time.monotonic()
        if self._last_cmd_mono is not None and now - self._last_cmd_mono > self.command_timeout_s:
            _, q, _ = self.sim.state()
            self._q_from = self._q_to = q  # watchdog: hold where the arm is
            self._last_cmd_mono = None
            self.hold_events.append((now, "watchdog"))
            if not self._stale_logged:
                self.get_logger().warn(f"{self.iface.command_topic} older than {self.command_timeout_s} s: holding")
                self._stale_logged = True
        due = int((now - self._t0) / self.sim.dt_s) - self._steps
        n = max(0, min(due, self.max_steps))
        if due > self.max_steps:  # fell behind (CPU): do not try to catch up in a burst
            self._t0 += (due - n) * self.sim.dt_s
        if n:
            q_ctrl = self._current_ctrl()
            ctrl = self.sim.data.ctrl.copy()
            for _ in range(n):
                # like a drive: the position setpoint moves at most 90 % of the joint velocity limit
                # (a late, bursty command stream must not become a velocity spike)
                ctrl += np.clip(q_ctrl - ctrl, -self._max_step_rad, self._max_step_rad)
                self.sim.command(ctrl)
                self.sim.step()
            self._steps += n
        _, q, qd = self.sim.state()
        stamp = self.get_clock().now()
        js = JointState(name=list(self.iface.controller_joints), position=self.iface.to_controller(q),
                        velocity=self.iface.to_controller(qd))
        js.header.stamp = stamp.to_msg()
        self.js_pub.publish(js)
        # MuJoCo poses are rigid by construction: the validated hot-path conversion is safe (0.5 ms saved/tick)
        T = self.sim.marker_in_tracker(self.rng, self.noise_mm)
        self.marker_pub.publish(validated_matrix_mm_to_pose_stamped(T, "Tracker", stamp.nanoseconds * 1e-9))

    def publish_diagnostics(self) -> None:
        st = DiagnosticStatus(name="spine_nav/sim_arm", hardware_id="mujoco",
                              level=DiagnosticStatus.OK, message=f"sim time {self.sim.time_s:.2f} s")
        publish_diagnostics(self, self.diag_pub, st)


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(SimArmNode, argv)
