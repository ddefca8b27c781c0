"""Node `slicer_output`: the navigation state for 3D Slicer (OpenIGTLinkIF) and other OpenIGTLink consoles.

An OpenIGTLink server (:class:`spine_nav.tracking.slicer_output.SlicerOutput`) on ``port`` (config/nodes.yaml
18945): the tool tip as TRANSFORM ``tool_tip_name`` (T_reference_tooltip, mm, at most ``rate_hz``), the
registered plan as POINT ``PlanPoints`` + TRAJ ``PlanTrajectories`` (sent again to each console that
connects), the guard state as STRING ``GuardState`` (a change at once, else at most ``rate_hz``).

Subscribes ``tracking/tool_tip`` (PoseStamped, SENSOR_QOS; composed with tracker_bridge and
``tool_in_process`` true: taken in process instead, :mod:`spine_nav.nodes.in_process`), ``plan/registered``
(ScrewPlan, PLAN_QOS), ``guard/status`` (GuardStatus, STATUS_QOS); publishes ``/diagnostics`` (1 Hz).
Parameters: :class:`spine_nav.nodes.node_params.SlicerOutputParams`. Until 2026-12 this output was part of
tracker_bridge (its ``console_port``, ``console_rate_hz``).
"""
from __future__ import annotations

import functools

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from spine_nav_interfaces.msg import GuardStatus, ScrewPlan

from spine_nav.nodes.conversions import msg_to_plan, quat_mm_to_matrix_mm, stamp_to_seconds
from spine_nav.nodes.diagnostics import OK, diagnostics_publisher, publish_diagnostics, status
from spine_nav.nodes.in_process import InProcessInput, drops, pose_samples
from spine_nav.nodes.parameters import declare_node_parameters
from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS
from spine_nav.tracking.slicer_output import SlicerOutput


def guard_text(msg: GuardStatus) -> str:
    """One line for Slicer: state, screw, errors (mm, deg), reason."""
    return (f"{msg.state_name} screw={msg.active_screw_id or '-'} lateral_mm={msg.lateral_error_mm:.2f} "
            f"angle_deg={msg.angular_error_deg:.2f} depth_mm={msg.depth_mm:.1f} "
            f"remaining_mm={msg.remaining_mm:.1f}" + (f" ({msg.reason})" if msg.reason else ""))


class SlicerOutputNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("slicer_output", **kwargs)
        p = declare_node_parameters(self)
        self.tool_in_process = bool(p["tool_in_process"])
        self.output = SlicerOutput(p["port"], host=p["host"], allowed_peers=p["allowed_peers"], rate_hz=p["rate_hz"],
                                   tool_tip_name=p["tool_tip_name"]).start()
        on_tool = pose_samples(self, "tracking/tool_tip", self.on_tool_sample)
        self.tool_sub = self.create_subscription(PoseStamped, "tracking/tool_tip", on_tool, SENSOR_QOS, raw=True)
        self.create_subscription(ScrewPlan, "plan/registered", self.on_plan, PLAN_QOS)
        self.create_subscription(GuardStatus, "guard/status", self.on_guard, STATUS_QOS)
        self.diag_pub = diagnostics_publisher(self)
        self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f"slicer_output: OpenIGTLink server on {p['host']}:{self.output.port}")

    def in_process_inputs(self) -> dict:
        if not self.tool_in_process:
            return {}
        return {self.tool_sub.topic_name: InProcessInput(functools.partial(self.on_tool_sample, None),
                                                         drops(self, "tool_sub"))}

    def on_tool_sample(self, _stamp, stamp_s: float, _frame_id: str, quat_xyzw, t_mm) -> None:
        """T_reference_tooltip as quaternion + mm (any thread: the tracker bridge's when in process)."""
        if not self.output.tool_tip_due():
            return
        try:
            self.output.tool_tip(quat_mm_to_matrix_mm(quat_xyzw, t_mm), stamp_s)
        except ValueError as exc:
            self.get_logger().error(f"tracking/tool_tip not forwarded: {exc}", throttle_duration_sec=1.0)

    def on_plan(self, msg: ScrewPlan) -> None:
        try:
            plan, not_nav = msg_to_plan(msg)
        except ValueError as exc:  # PlanError, a bad stamp
            self.get_logger().error(f"plan/registered not forwarded to consoles: {exc}")
            return
        self.output.plan(plan, not_nav, stamp_to_seconds(msg.header.stamp))

    def on_guard(self, msg: GuardStatus) -> None:
        self.output.guard_state(msg.state, guard_text(msg), stamp_to_seconds(msg.tool_sample_stamp))

    def publish_diagnostics(self) -> None:
        publish_diagnostics(self, self.diag_pub, status(
            "spine_nav/slicer_output", OK, f"port {self.output.port}",
            values={"console messages not sent (queue full)": self.output.dropped}))

    def destroy_node(self) -> None:
        self.output.close()
        super().destroy_node()


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(SlicerOutputNode, argv)
