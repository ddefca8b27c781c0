"""Node `console_bridge`: the ROS side of the browser console (issue #9).

Subscribes to the stack's topics, turns each message into the console's JSON-ready dict
(mm / deg; metres become mm only through :mod:`spine_nav.nodes.conversions`) and hands it to a
sink — normally :meth:`spine_nav.console.ConsoleServer.publish`, which pushes it to every page.
Page requests (next/previous screw) become calls of the guard's ``guard/select_screw`` service.

Topics (relative names, see README "ROS 2 surface"):
    plan/registered (ScrewPlan, PLAN_QOS), tracking/tool_tip (PoseStamped, SENSOR_QOS),
    guard/status (GuardStatus, STATUS_QOS), arm/state (ArmState), tracking/health (ToolHealth),
    registration/levels (LevelRegistration), /diagnostics (DiagnosticArray).

Parameters (only used when the node runs by itself, ``console_bridge`` console script, and so
owns the web server): ``port`` (8080), ``host`` (127.0.0.1), ``case_dir`` ("").
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from spine_nav_interfaces.msg import ArmState, GuardStatus, LevelRegistration, ScrewPlan, ToolHealth
from spine_nav_interfaces.srv import SelectScrew

from spine_nav.nodes.conversions import msg_to_plan, pose_to_row_major_mm, stamp_to_seconds
from spine_nav.nodes.lifecycle import ManagedNode, reserve_port
from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATE_QOS, STATUS_QOS
from spine_nav.plan import PlanError

Sink = Callable[[dict[str, Any]], None]

SELECT_TIMEOUT_S = 2.0


def guard_to_dict(m: GuardStatus) -> dict[str, Any]:
    return {"t": "guard", "state": int(m.state), "state_name": m.state_name, "reason": m.reason,
            "active_screw_id": m.active_screw_id, "tool_sample_stamp_s": stamp_to_seconds(m.tool_sample_stamp),
            "lateral_error_mm": m.lateral_error_mm, "entry_offset_mm": m.entry_offset_mm,
            "angular_error_deg": m.angular_error_deg, "depth_mm": m.depth_mm, "remaining_mm": m.remaining_mm,
            "predicted_tip_error_mm": m.predicted_tip_error_mm, "sample_age_ms": m.sample_age_ms}


def plan_to_dict(m: ScrewPlan) -> dict[str, Any]:
    """Raises PlanError (naming the screw) on invalid content."""
    plan, not_navigable = msg_to_plan(m)
    return {"t": "plan", "frame": plan.frame, "case_id": plan.case_id, "screws": [
        {**s.to_dict(), "navigable": s.id not in not_navigable, "status_reason": not_navigable.get(s.id, "")}
        for s in plan.screws]}


def tool_to_dict(m: PoseStamped) -> dict[str, Any]:
    """Raises ValueError on a non-finite pose or a bad quaternion (runs per tracker sample, up to 1 kHz:
    the plain-float :func:`spine_nav.nodes.conversions.pose_to_row_major_mm`)."""
    return {"t": "tool", "stamp_s": stamp_to_seconds(m.header.stamp), "frame": m.header.frame_id,
            "T_mm": pose_to_row_major_mm(m.pose, "tool pose")}


def arm_to_dict(m: ArmState) -> dict[str, Any]:
    return {"t": "arm", "mode": m.mode, "active_screw_id": m.active_screw_id, "stop_cause": m.stop_cause,
            "alignment_error_mm": m.alignment_error_mm, "alignment_error_deg": m.alignment_error_deg,
            "holding": bool(m.holding)}


def health_to_dict(m: ToolHealth) -> dict[str, Any]:
    return {"t": "health", "tool": m.tool, "device": m.device,
            "state_name": "OK" if m.state == ToolHealth.STATE_OK else "TRACKING_LOST", "reason": m.reason,
            "visible": bool(m.visible), "sample_age_ms": m.sample_age_ms, "rate_hz": m.rate_hz,
            "samples_received": int(m.samples_received), "samples_rejected": int(m.samples_rejected)}


def level_to_dict(m: LevelRegistration) -> dict[str, Any]:
    return {"t": "levels", "level": m.level, "accepted": bool(m.accepted), "reason": m.reason,
            "fitness": m.fitness, "inlier_rmse_mm": m.inlier_rmse_mm, "condition_number": m.condition_number}


class ConsoleBridgeNode(ManagedNode):
    """Forwards the stack's topics to ``sink``; serves the page's screw selection.

    Lifecycle (:mod:`spine_nav.nodes.lifecycle`): configure creates the subscriptions and the
    ``guard/select_screw`` client and, stand-alone, reserves the web port (a port in use fails here); activate
    starts the web server (stand-alone) and forwarding; deactivate stops both (updates are dropped while
    inactive); cleanup releases the port.

    Args:
        sink: receives every update dict (thread: the executor's). None: the node starts its own
            :class:`spine_nav.console.ConsoleServer` from its parameters (stand-alone use).
    """

    def __init__(self, sink: Sink | None = None, **kwargs) -> None:
        super().__init__("console_bridge", **kwargs)
        self._sink = sink
        self.server = self._reserved = None
        self.rejected = 0

    def configure(self) -> None:
        if self._sink is None:
            self._reserved = reserve_port(self.params["host"], self.params["port"], "the console web server")
        self.create_subscription(ScrewPlan, "plan/registered", self._on_plan, PLAN_QOS)
        self.create_subscription(PoseStamped, "tracking/tool_tip", self._on_tool, SENSOR_QOS)
        self.create_subscription(GuardStatus, "guard/status", lambda m: self.sink(guard_to_dict(m)), STATUS_QOS)
        self.create_subscription(ArmState, "arm/state", lambda m: self.sink(arm_to_dict(m)), STATE_QOS)
        self.create_subscription(ToolHealth, "tracking/health", lambda m: self.sink(health_to_dict(m)), STATE_QOS)
        self.create_subscription(LevelRegistration, "registration/levels",
                                 lambda m: self.sink(level_to_dict(m)), STATE_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, STATE_QOS)
        self.select_client = self.create_client(SelectScrew, "guard/select_screw")

    def activate(self) -> None:
        if self._reserved is not None:
            from spine_nav.console import CaseData, ConsoleServer

            port = self._reserved.getsockname()[1]
            self._reserved.close()  # hands the port over to the web server
            self._reserved = None
            self.server = ConsoleServer(CaseData(self.params["case_dir"] or None), host=self.params["host"],
                                        port=port).start()
            self.server.request_handler = self.handle_request
            self.get_logger().info(f"console at {self.server.url}")

    def deactivate(self) -> None:
        if self.server is not None:
            port = self.server.port
            self.server.stop()
            self.server = None
            self._reserved = reserve_port(self.params["host"], port, "the console web server")

    def cleanup(self) -> None:
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    def sink(self, update: dict[str, Any]) -> None:
        """Hand ``update`` to the page(s): the given sink, or the node's own web server; dropped while inactive."""
        if self.active:
            (self._sink or self.server.publish)(update)

    def _on_plan(self, m: ScrewPlan) -> None:
        try:
            self.sink(plan_to_dict(m))
        except PlanError as exc:
            self.rejected += 1
            self.get_logger().error(f"plan/registered rejected: {exc}")

    def _on_tool(self, m: PoseStamped) -> None:
        try:
            self.sink(tool_to_dict(m))
        except ValueError as exc:
            self.rejected += 1
            self.get_logger().warning(f"tracking/tool_tip sample rejected: {exc}", throttle_duration_sec=1.0)

    def _on_diag(self, m: DiagnosticArray) -> None:
        for s in m.status:
            level = s.level if isinstance(s.level, int) else int.from_bytes(s.level, "little")
            self.sink({"t": "diag", "name": s.name, "level": level, "message": s.message,
                       "hardware_id": s.hardware_id})

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        """Page request (called from the web server's worker thread): ``select_screw``."""
        sid = str(req.get("screw_id", ""))
        if not self.select_client.service_is_ready():
            return {"ok": False, "message": "guard/select_screw not available"}
        done = threading.Event()
        future = self.select_client.call_async(SelectScrew.Request(screw_id=sid))
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(SELECT_TIMEOUT_S):
            return {"ok": False, "message": f"guard/select_screw: no answer within {SELECT_TIMEOUT_S} s"}
        res = future.result()
        return {"ok": bool(res.success), "message": res.message}


def serve_console(server, ros_args: Sequence[str], keep_going: Callable[[], bool],
                  on_ready: Callable[[], None] | None = None) -> None:
    """Feed a web console from the stack until ``keep_going()`` is false or the context shuts down.

    A :class:`ConsoleBridgeNode` whose sink is ``server.publish`` and which answers the page's requests
    (``server.request_handler``), in a context and executor of its own (a spin_once loop,
    :func:`spine_nav.nodes.runner.spin_until`); ``ros_args`` as after ``--ros-args`` (e.g. ``-r __ns:=/x``).
    ``on_ready`` is called once the node is active. Used by `spine-nav console` and `spine-nav train`'s page.
    """
    import rclpy
    from rclpy.context import Context

    from spine_nav.nodes.lifecycle import bring_up
    from spine_nav.nodes.runner import make_executor, spin_until

    ctx = Context()
    rclpy.init(args=["spine_nav_console", *(["--ros-args", *ros_args] if ros_args else [])], context=ctx)
    node = ConsoleBridgeNode(sink=server.publish, context=ctx)
    executor = None
    try:
        bring_up(node)  # configure -> activate (with an outside sink nothing can fail: no port of its own)
        server.request_handler = node.handle_request
        executor = make_executor("events", context=ctx)
        executor.add_node(node)
        if on_ready is not None:
            on_ready()
        spin_until(executor, lambda: ctx.ok() and keep_going(), period_s=0.1)
    finally:
        server.request_handler = None
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)


def main(argv=None) -> int:
    from spine_nav.nodes.runner import run_node_main

    return run_node_main(ConsoleBridgeNode, argv)
