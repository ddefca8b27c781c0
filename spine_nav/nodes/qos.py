"""QoS profiles used across spine_nav topics (one definition, every node imports it)."""
from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

#: Tracker poses: best effort, keep last 5 (REP-2003 sensor data).
SENSOR_QOS: QoSProfile = qos_profile_sensor_data

#: Plans and registration results: reliable, transient-local, so a late joiner gets the last plan.
PLAN_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

#: Per-level registration results: reliable + transient-local, deep enough for a whole spine.
LEVELS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=32,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)

#: Guard status and arm commands: reliable, deep enough that a 1 kHz stream survives a short stall.
STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1000,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

#: Tool samples at the guard: SENSOR_QOS (best effort, so it matches the tracker bridge's publisher) but a
#: deeper reader history: with depth 5 a burst of >5 samples during a scheduling hiccup is dropped
#: silently, and the guard must judge every sample (measured in `spine-nav bench guard`).
TOOL_SUB_QOS = QoSProfile(
    history=SENSOR_QOS.history,
    depth=200,
    reliability=SENSOR_QOS.reliability,
    durability=SENSOR_QOS.durability,
)

#: Low-rate state for displays (console): best effort + volatile, matches reliable and best-effort publishers.
STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.BEST_EFFORT,
    durability=DurabilityPolicy.VOLATILE,
)

#: RViz markers and /diagnostics: rclpy's default (reliable, keep last 10).
DISPLAY_QOS = 10
