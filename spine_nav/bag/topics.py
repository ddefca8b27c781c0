"""The stack's topics a case bag records by default (relative names as the nodes use them; the
recorder resolves them in its own namespace), with their types and the QoS the recorder subscribes with.

``qos``: ``sensor`` (best effort: matches both best-effort and reliable publishers), ``reliable``
(guard status, arm command/state: STATUS_QOS, deep), ``latched`` (plan, registration: reliable +
transient local, so a recorder started after the publisher still gets the last message).
``guard/markers`` (visualisation derived from guard/status and the plan) is left out by default.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    topic: str
    type_name: str
    qos: str = "sensor"


DEFAULT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("tracking/tool_tip", "geometry_msgs/msg/PoseStamped", "sensor"),
    TopicSpec("tracking/reference", "geometry_msgs/msg/PoseStamped", "sensor"),
    TopicSpec("tracking/arm_marker", "geometry_msgs/msg/PoseStamped", "sensor"),
    TopicSpec("tracking/health", "spine_nav_interfaces/msg/ToolHealth", "reliable"),
    TopicSpec("guard/status", "spine_nav_interfaces/msg/GuardStatus", "reliable"),
    TopicSpec("arm/joint_command", "trajectory_msgs/msg/JointTrajectory", "reliable"),
    TopicSpec("arm/state", "spine_nav_interfaces/msg/ArmState", "reliable"),
    TopicSpec("arm/guide_pose", "geometry_msgs/msg/PoseStamped", "sensor"),
    TopicSpec("joint_states", "sensor_msgs/msg/JointState", "sensor"),
    TopicSpec("plan/registered", "spine_nav_interfaces/msg/ScrewPlan", "latched"),
    TopicSpec("registration/levels", "spine_nav_interfaces/msg/LevelRegistration", "latched"),
    TopicSpec("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "reliable"),
    TopicSpec("sim/tool_tip_truth", "geometry_msgs/msg/PoseStamped", "sensor"),
)

#: what `spine-nav bag play --tracker-only` publishes (the tracker's outputs; the stack downstream runs live)
TRACKER_TOPICS = ("tracking/tool_tip", "tracking/reference", "tracking/arm_marker", "tracking/health")


def select_topics(names: list[str] | None) -> tuple[TopicSpec, ...]:
    """The default topics, or those named (with or without a leading '/'); ValueError for an unknown name."""
    if not names:
        return DEFAULT_TOPICS
    by_name = {t.topic.lstrip("/"): t for t in DEFAULT_TOPICS}
    out = []
    for n in names:
        spec = by_name.get(n.lstrip("/"))
        if spec is None:
            raise ValueError(f"--topics: unknown topic {n!r} (known: {', '.join(sorted(by_name))})")
        out.append(spec)
    return tuple(out)
