"""/diagnostics publishing shared by every node (one DiagnosticArray per call, stamped now)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.publisher import Publisher

from spine_nav.guard import GuardState

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def diagnostics_publisher(node: Node) -> Publisher:
    """The node's ``/diagnostics`` publisher (depth 10, as diagnostic_aggregator expects)."""
    return node.create_publisher(DiagnosticArray, "/diagnostics", 10)


def status(name: str, level, message: str, hardware_id: str = "", values: dict | None = None) -> DiagnosticStatus:
    """One DiagnosticStatus; ``values`` (key -> anything) become KeyValue strings in their order."""
    st = DiagnosticStatus(name=name, level=level, message=message, hardware_id=hardware_id)
    st.values = [KeyValue(key=str(k), value=str(v)) for k, v in (values or {}).items()]
    return st


def publish_diagnostics(node: Node, publisher: Publisher, *statuses: DiagnosticStatus) -> None:
    """Publish ``statuses`` as one diagnostic_msgs/DiagnosticArray stamped with the node's clock."""
    arr = DiagnosticArray()
    arr.header.stamp = node.get_clock().now().to_msg()
    arr.status.extend(statuses)
    publisher.publish(arr)


#: the guard's verdict -> diagnostic level
GUARD_LEVEL = {GuardState.ALIGNED: OK, GuardState.APPROACH: OK, GuardState.WARN: WARN, GuardState.NO_PLAN: WARN,
               GuardState.VIOLATION: ERROR, GuardState.TRACKING_LOST: ERROR}


def guard_status(s, config_error: str, p99_ms: str) -> DiagnosticStatus:
    """The trajectory guard's status from a :class:`spine_nav.guard.live.GuardSnapshot`: ERROR while its
    parameters were rejected, WARN before the first verdict, else the verdict's level and reason."""
    v = s.verdict
    level, message = ((ERROR, config_error) if config_error else (WARN, "no verdict yet") if v is None else
                      (GUARD_LEVEL[v.state], f"{v.state.name}: {v.reason}"))
    return status("spine_nav/trajectory_guard", level, message, "trajectory_guard",
                  {"samples": s.samples, "active_screw_id": s.active_id or "", "screws": len(s.segments),
                   "sample_age_ms": f"{v.sample_age_ms:.3f}" if v else "", "sample_to_status_p99_ms": p99_ms})


def arm_status(guide, servo_stats) -> DiagnosticStatus:
    """The arm guide's status: WARN before joint feedback or while holding (with the cause), else OK + mode;
    servo cycles, overruns, realtime, the arm-marker drift and the heartbeat gaps heard while guiding
    (:class:`spine_nav.arm.liveness.GapStats`, one value per watched input) as values."""
    st = guide.state if guide is not None else None
    level, message = ((WARN, "waiting for joint_states") if st is None else
                      (WARN, f"HOLD: {st.stop_cause}") if st.holding else (OK, st.mode))
    return status("spine_nav/arm_guide", level, message, "spine_arm",
                  {"servo_cycles": servo_stats.cycles, "servo_overruns": servo_stats.overruns,
                   "realtime": servo_stats.realtime,
                   "marker_drift_mm": f"{guide.marker_drift_mm:.2f}" if guide is not None else "nan",
                   **({f"heartbeat_gaps_ms_{k}": v for k, v in guide.heartbeat_gap_summary().items()}
                      if guide is not None else {})})
