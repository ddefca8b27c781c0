"""Stop causes and the stop log of the arm guide (pure core).

A stop latches: the controller commands zero velocity from the next control cycle and holds
position until an explicit ``resume``. Every stop is logged (python logging, WARNING) with its cause.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

LOG = logging.getLogger("spine_nav.arm")


class StopCause(str, Enum):
    GUARD_VIOLATION = "guard VIOLATION"
    TRACKING_LOST = "guard TRACKING_LOST"
    REFERENCE_STALE = "stale command: tracker reference sample too old"
    FEEDBACK_STALE = "watchdog: joint feedback too old"
    CYCLE_WATCHDOG = "watchdog: control cycle overran"
    JOINT_LIMIT = "joint limit violation"
    JOINT_VELOCITY = "joint velocity violation"
    MOTION_ERROR = "motion generation error"
    REGISTRATION_DRIFT = "arm marker disagrees with the robot-to-tracker registration"
    OPERATOR = "operator hold"
    GUARD_SILENT = "guard silent"            # no guard/status for guard_timeout_ms (guard dead, hung, link down)
    PROCESS_LOST = "process lost"            # the supervisor saw a stack process die (detail names it)
    BRIDGE_SILENT = "bridge silent"          # no tracking/health for bridge_timeout_ms (bridge dead, hung, link down)
    COMMAND_SOURCE_SILENT = "console silent"  # the registered command source (console) sent no heartbeat
    GUARD_NO_PLAN = "guard NO_PLAN"          # the guard has no plan for the screw the arm guides on: no depth stop


#: Guard states (GuardStatus.state_name) that stop the arm.
GUARD_STOP_STATES = {"VIOLATION": StopCause.GUARD_VIOLATION, "TRACKING_LOST": StopCause.TRACKING_LOST}


@dataclass(frozen=True)
class StopEvent:
    """One stop: controller time (s), cause and a detail (which joint, how old, ...)."""

    time_s: float
    cause: StopCause
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.cause.value}" + (f" ({self.detail})" if self.detail else "")


def log_stop(event: StopEvent) -> None:
    LOG.warning("arm HOLD at t=%.4f s: %s", event.time_s, event)
