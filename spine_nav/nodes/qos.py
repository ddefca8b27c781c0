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

#: Guard status and arm commands: reliable, deep enough that a 1 kHz stream survives a short stall.
STATUS_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1000,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
