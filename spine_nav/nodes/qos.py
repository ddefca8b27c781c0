"""QoS profiles used across spine_nav topics (one definition, every node imports it)."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
VOLATILE, TRANSIENT_LOCAL = DurabilityPolicy.VOLATILE, DurabilityPolicy.TRANSIENT_LOCAL


def keep_last(depth: int, reliability: ReliabilityPolicy, durability: DurabilityPolicy) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


#: Tracker poses: best effort, keep last 5 (REP-2003 sensor data).
SENSOR_QOS: QoSProfile = qos_profile_sensor_data

#: Plans and registration results: reliable, transient-local, so a late joiner gets the last plan.
PLAN_QOS = keep_last(1, RELIABLE, TRANSIENT_LOCAL)

#: Per-level registration results: reliable + transient-local, deep enough for a whole spine.
LEVELS_QOS = keep_last(32, RELIABLE, TRANSIENT_LOCAL)

#: Guard status and arm commands: reliable, deep enough that a 1 kHz stream survives a short stall.
STATUS_QOS = keep_last(1000, RELIABLE, VOLATILE)

#: Tool samples at the guard: SENSOR_QOS (best effort, so it matches the tracker bridge's publisher) but a
#: deeper reader history: with depth 5 a burst of >5 samples during a scheduling hiccup is dropped
#: silently, and the guard must judge every sample (measured in `spine-nav bench guard`).
TOOL_SUB_QOS = keep_last(200, SENSOR_QOS.reliability, SENSOR_QOS.durability)

#: Low-rate state for displays (console): best effort + volatile, matches reliable and best-effort publishers.
STATE_QOS = keep_last(10, BEST_EFFORT, VOLATILE)

#: RViz markers and /diagnostics: rclpy's default (reliable, keep last 10).
DISPLAY_QOS = 10
