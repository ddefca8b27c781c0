"""Node `sim_arm`: the arm simulated in MuJoCo (:class:`spine_nav.sim.arm.MujocoArm`).

Steps physics in real time from a timer (as many 1 ms steps as wall time has passed, capped),
applies the latest joint command on the ``command_interface``'s topic (:mod:`spine_nav.nodes.arm_params`;
it stands in for a ros2_control JointTrajectoryController or forward position controller: same topics,
same message types; a trajectory's first point is applied as a position setpoint, matched by joint name;
a Float64MultiArray in ``controller_joints`` order), publishes ``joint_states`` (sensor_msgs/JointState,
rad, rad/s, controller joint names: what a joint_state_broadcaster sends) and
``tracking/arm_marker`` (PoseStamped, frame ``Tracker``: T_tracker_armmarker as the optical
tracker would see it, with optional position noise) and ``/diagnostics``.

The drive (first-order hold, velocity-limited setpoint, own watchdog: a command older than
``command_timeout_s`` is dropped and the arm holds where it is) is :class:`spine_nav.sim.drive.StreamedPositionDrive`.
``hold_events`` records (time.monotonic(), "watchdog" | "command") for every hold: the watchdog's, and
the first ``hold`` command (frame_id "hold") after moving ones, so in-process callers (the demo) can
measure fault -> hold.

Parameters (:data:`spine_nav.nodes.node_params.NODE_PARAMETERS`): tracker_robotbase_xyz_mm, tracker_robotbase_quat_xyzw (the true robot pose in the
tracker), q0_rad (chain order; for another robot its length must match), publish_rate_hz,
marker_noise_mm, command_timeout_s, max_steps_per_tick, and the robot / command interface
parameters of :mod:`spine_nav.nodes.arm_params`.
"""
from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from spine_nav.nodes.arm_params import arm_interface
from spine_nav.nodes.conversions import validated_matrix_mm_to_pose_stamped
from spine_nav.nodes.diagnostics import OK, diagnostics_publisher, publish_diagnostics, status
from spine_nav.nodes.parameters import declare_node_parameters, pose_from
from spine_nav.nodes.qos import SENSOR_QOS, STATUS_QOS
from spine_nav.sim.arm import MujocoArm
from spine_nav.sim.drive import StreamedPositionDrive


class SimArmNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_arm", **kwargs)
        p = declare_node_parameters(self)
        T_tracker_robotbase = pose_from(p, "tracker_robotbase", self.get_name())
        q0 = list(p["q0_rad"])
        self.noise_mm = p["marker_noise_mm"]
        self.command_timeout_s = p["command_timeout_s"]
        self.iface = arm_interface(p, self.get_name())
        if len(q0) != self.iface.arm.dof:
            raise ValueError(f"sim_arm: parameter q0_rad has {len(q0)} values, the arm has {self.iface.arm.dof} "
                             f"joints {self.iface.arm.joint_names}")
        self.sim = MujocoArm(self.iface.arm, T_tracker_robotbase=T_tracker_robotbase, q0_rad=np.array(q0))
        self.joint_names = self.sim.arm.joint_names
        self.drive = StreamedPositionDrive(self.sim, self.command_timeout_s, p["max_steps_per_tick"], time.monotonic())
        #: (time.monotonic(), "watchdog" | "command"): when the arm started holding, and why
        self.hold_events = self.drive.hold_events
        self.rng = np.random.default_rng()
        self._stale_logged = False
        self.js_pub = self.create_publisher(JointState, "joint_states", SENSOR_QOS)
        self.marker_pub = self.create_publisher(PoseStamped, "tracking/arm_marker", SENSOR_QOS)
        self.diag_pub = diagnostics_publisher(self)
        if self.iface.command_interface == "forward_position":
            self.create_subscription(Float64MultiArray, self.iface.command_topic, self.on_forward, STATUS_QOS)
        else:
            self.create_subscription(JointTrajectory, self.iface.command_topic, self.on_command, STATUS_QOS)
        self.create_timer(1.0 / p["publish_rate_hz"], self.tick)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"sim_arm: MuJoCo {self.sim.dt_s * 1e3:.1f} ms steps, publishing at "
                               f"{p['publish_rate_hz']:.0f} Hz")

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
        self.drive.command(q, holding, time.monotonic())
        self._stale_logged = False

    def tick(self) -> None:
        if self.drive.tick(time.monotonic()) and not self._stale_logged:
            self.get_logger().warn(f"{self.iface.command_topic} older than {self.command_timeout_s} s: holding")
            self._stale_logged = True
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
        publish_diagnostics(self, self.diag_pub, status("spine_nav/sim_arm", OK, f"sim time {self.sim.time_s:.2f} s",
                                                        "mujoco"))


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(SimArmNode, argv)
