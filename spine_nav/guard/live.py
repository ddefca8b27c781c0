"""The guard as a running node uses it: thread-safe, with the node's inputs' rules (no ROS).

:class:`LiveGuard` wraps :class:`spine_nav.guard.core.TrajectoryGuard` with one re-entrant lock, so tool
samples may arrive on one thread (the tracker bridge's socket thread when composed in one process) while
health, plan, selection, parameters and timers come from another. Callers that publish a verdict hold
``lock`` around judging and publishing, so statuses leave in the order they were judged.

Rules it owns (formerly in the node): a sample in another frame than ``frame`` is rejected (TRACKING_LOST
with the reason); tool health counts only for ``health_tools`` ("*" = any) and a tool's OK never clears
another's lost; a newly lost tool yields a verdict at once; a requested screw is selected again when a new
plan arrives (automatic selection, with a warning, when the plan lacks it).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable

from spine_nav.guard.config import GuardConfig
from spine_nav.guard.core import PLAN_REJECTED, GuardVerdict, TrajectoryGuard
from spine_nav.guard.state import GuardState
from spine_nav.plan import Plan, PlanError


@dataclass(frozen=True)
class GuardSnapshot:
    """What displays need, taken under the lock: ``segments`` (the selector's), the state of the last
    verdict (NO_PLAN before any), the active screw, the corridor half-width (violation_lateral_mm), the
    last tool (tip, axis) in mm, the last verdict and the number of samples judged."""

    segments: object
    state: GuardState
    active_id: str | None
    violation_lateral_mm: float
    tip_axis: tuple | None
    verdict: GuardVerdict | None
    samples: int


class LiveGuard:
    def __init__(self, config: GuardConfig, frame: str = "Reference",
                 health_tools: Iterable[str] = ("stylus", "reference"), requested_screw: str = "") -> None:
        self.lock = threading.RLock()
        self.guard = TrajectoryGuard()
        self.guard.set_config(config)  # GuardConfigError propagates: the caller decides (defaults, refuse)
        self.frame = frame
        self.health_tools = frozenset(str(t) for t in health_tools if str(t))
        self.requested_screw = requested_screw
        self.samples = 0

    def sample(self, frame_id: str, quat_xyzw, t_mm, stamp_s: float, now_s: float) -> GuardVerdict:
        """Judge one tool sample T_<frame_id>_tooltip (quaternion xyzw + mm; the core validates it)."""
        with self.lock:
            return self.sample_held(frame_id, quat_xyzw, t_mm, stamp_s, now_s)

    def sample_held(self, frame_id: str, quat_xyzw, t_mm, stamp_s: float, now_s: float) -> GuardVerdict:
        """:meth:`sample` for a caller that already holds :attr:`lock` (the node, which publishes under it):
        the lock is not taken a second time on the 1 kHz path."""
        self.samples += 1
        if frame_id != self.frame:
            return self.guard.reject_sample(f"tool pose in frame {frame_id!r}, expected {self.frame!r}",
                                            stamp_s, now_s)
        return self.guard.evaluate_quat(quat_xyzw, t_mm, stamp_s, now_s)

    def health(self, tool: str, lost: bool, reason: str, now_s: float) -> GuardVerdict | None:
        """A tool's health; returns the TRACKING_LOST verdict to publish when ``tool`` has just been lost."""
        if "*" not in self.health_tools and tool not in self.health_tools:
            return None
        with self.lock:
            was_lost = tool in self.guard.lost_tools
            self.guard.set_tracking_health(f"{tool or 'tool'}: {reason}" if lost else "", tool=tool)
            if lost and not was_lost:
                return self.guard.report_lost(f"tracker: {self.guard.health_lost_reason}", now_s)
            return None

    def set_plan(self, plan: Plan, not_navigable: dict[str, str], frame: str | None = None) -> str:
        """Guard ``plan`` (PlanError if it, or the message's ``frame`` when given, is not in ``frame``: the guard
        then has no plan, with the reason); returns a warning ("" if none) when the requested screw is not in it."""
        frame = plan.frame if frame is None else frame
        with self.lock:
            if frame != self.frame:
                reason = f"plan in frame {frame!r}, expected {self.frame!r}"
                self.reject_plan(reason)
                raise PlanError(reason)
            self.guard.set_plan(plan, not_navigable)
            if self.requested_screw:
                try:
                    self.guard.select(self.requested_screw)
                except KeyError as exc:
                    return f"active_screw_id: {exc.args[0]}; automatic selection"
            return ""

    def reject_plan(self, reason: str) -> None:
        with self.lock:
            self.guard.clear_plan(f"{PLAN_REJECTED}: {reason}")

    def select(self, screw_id: str) -> str:
        """Select ``screw_id`` ("" = automatic); KeyError naming it when unknown. Returns what happened."""
        with self.lock:
            self.guard.select(screw_id)
            self.requested_screw = screw_id
        return f"active screw: {screw_id}" if screw_id else "automatic selection"

    def apply(self, changes: dict[str, float], screw_id: str | None = None) -> GuardConfig:
        """Threshold ``changes`` and/or a screw selection, all or nothing (GuardConfigError naming the field,
        KeyError naming the screw). Returns the configuration in force."""
        with self.lock:
            cfg = self.guard.config.updated(**changes) if changes else self.guard.config
            if screw_id is not None:
                self.select(screw_id)
            self.guard.set_config(cfg)
            return cfg

    def watchdog(self, now_s: float) -> GuardVerdict | None:
        with self.lock:
            return self.guard.watchdog(now_s)

    def snapshot(self) -> GuardSnapshot:
        with self.lock:
            g, v = self.guard, self.guard.last_verdict
            return GuardSnapshot(g.selector.segments, v.state if v is not None else GuardState.NO_PLAN,
                                 g.selector.active_id, g.config.violation_lateral_mm, g.last_tip_axis, v, self.samples)
