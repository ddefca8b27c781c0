"""The trajectory guard without ROS: plan + tool samples in, one verdict per sample out.

Frames and units: everything in the ``Reference`` frame, mm, deg; times in seconds on the
tracker's clock (``sample_time_s``) and the judging clock (``now_s``; the same clock in
the ROS node: both are wall time). State rules, hysteresis and debounce:
:mod:`spine_nav.guard.state`; quantities: :mod:`spine_nav.guard.metrics`; selection:
:mod:`spine_nav.guard.selection`.
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from spine_nav.guard import native
from spine_nav.guard.config import GuardConfig
from spine_nav.guard.metrics import (NAN_METRICS, GuardMetrics, PoseError, ScrewGeometry, compute_metrics_py,
                                     new_named_tuple, tip_and_axis, tip_and_axis_from_quat_py)
from spine_nav.guard.selection import ScrewSelector
from spine_nav.guard.state import Debounce, GuardState, Latch
from spine_nav.plan import Plan


#: Time comparisons allow 1 ns: sample times are float sums, 0.6495 - 0.5995 > 0.05 in floats.
TIME_EPS_S = 1e-9
#: NO_PLAN reason, and the refusal of a selection, before any plan arrived (a client may ask again)
NO_PLAN_YET = "no plan received"
#: the start of the NO_PLAN reason of a guard whose received plan failed validation
PLAN_REJECTED = "plan rejected"
#: NO_PLAN reason's start when the guard has a plan but no screw is active (automatic selection, the tool
#: within the capture radius of none): the guard will judge a screw as soon as the tool comes near it
NO_ACTIVE_SCREW = "no active screw"
#: between a debounced state's name and the pending state's (``"NO_PLAN held: ALIGNED pending debounce (...)"``)
DEBOUNCE_HELD = " held: "


def has_no_plan(state_name: str, reason: str) -> bool:
    """Whether a guard status (state name and reason) says the guard holds no plan at all: NO_PLAN for
    ``NO_PLAN_YET`` or a rejected plan (``PLAN_REJECTED``, :meth:`TrajectoryGuard.clear_plan` via
    :class:`spine_nav.guard.live.LiveGuard`). Narrower than :func:`lacks_plan` (a screw not navigable is
    lacking, but its guard has a plan); ``spine-nav bag check`` uses it to tell when the guard had its plan."""
    return state_name == GuardState.NO_PLAN.name and (reason == NO_PLAN_YET or reason.startswith(PLAN_REJECTED))


def lacks_plan(state_name: str, reason: str) -> bool:
    """Whether a guard status (state name and reason, as GuardStatus carries them) says the guard cannot judge
    its screw for want of a plan: NO_PLAN with no plan at all (``NO_PLAN_YET``, a rejected plan) or with the
    active screw not navigable. False for the two NO_PLAN statuses of a guard that has the plan: no active
    screw (``NO_ACTIVE_SCREW``) and NO_PLAN held by the debounce while a judged state is pending (entering
    NO_PLAN is never debounced, so a held NO_PLAN always leaves it). The arm guide holds on it
    (:meth:`spine_nav.arm.controller.ArmGuide.on_guard_state`): the depth stop is not enforced."""
    return state_name == GuardState.NO_PLAN.name and not reason.startswith(
        (NO_ACTIVE_SCREW, GuardState.NO_PLAN.name + DEBOUNCE_HELD))


class GuardVerdict(NamedTuple):
    """One guard output (what GuardStatus carries). NamedTuple: immutable and cheap to build."""

    state: GuardState
    reason: str
    screw_id: str
    metrics: GuardMetrics
    sample_time_s: float
    sample_age_ms: float


class TrajectoryGuard:
    """Stateful guard. Feed :meth:`set_plan`, then :meth:`evaluate` per tool sample and
    :meth:`watchdog` periodically (it reports TRACKING_LOST when samples stop)."""

    def __init__(self, config: GuardConfig | None = None, selection_method: str = "plain") -> None:
        self.config = config or GuardConfig()
        self.selector = ScrewSelector(self.config.capture_radius_mm, self.config.switch_margin_mm,
                                      selection_method)
        self.plan: Plan | None = None
        self.no_plan_reason = NO_PLAN_YET
        self._debounce = Debounce()
        self._reset_latches()
        self._latched_screw: str | None = None
        self.last_sample_time_s: float | None = None
        self.last_arrival_s: float | None = None
        self._health_lost: dict[str, str] = {}  # tool -> lost reason (only tools that are lost)
        self.last_verdict: GuardVerdict | None = None
        #: (tip mm, unit axis) of the last sample that passed the pose checks (for displays).
        self.last_tip_axis: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None

    # ---- configuration -------------------------------------------------------------------
    def set_config(self, config: GuardConfig) -> None:
        """New (already validated) thresholds; latches keep their state and re-evaluate."""
        self.config = config
        self.selector.capture_radius_mm = config.capture_radius_mm
        self.selector.switch_margin_mm = config.switch_margin_mm
        self.selector.invalidate()

    def set_plan(self, plan: Plan, not_navigable: Mapping[str, str] | None = None) -> None:
        """Plan in the Reference frame; ``not_navigable`` maps screw id -> reason (NO_PLAN)."""
        not_navigable = dict(not_navigable or {})
        self.plan = plan
        self.no_plan_reason = NO_PLAN_YET
        self.selector.set_screws([ScrewGeometry.from_screw(s, s.id not in not_navigable, not_navigable.get(s.id, ""))
                                  for s in plan.screws])

    def set_plan_per_level(self, preop_plan: Plan, T_reference_preop_by_level: Mapping[str, np.ndarray],
                           failed_levels: Mapping[str, str] | None = None) -> None:
        """Map each screw by its own level's registration (:meth:`Plan.transformed_per_level`).

        Screws of levels in ``failed_levels`` (level -> reason) or without a transform stay in
        the plan (unmapped, so selection still finds them near where they were planned) but
        report NO_PLAN with the reason.
        """
        failed = dict(failed_levels or {})
        mapped = preop_plan.transformed_per_level(
            {lv: T for lv, T in T_reference_preop_by_level.items() if lv not in failed}, frame="Reference")
        mapped_ids = set(mapped.ids)
        screws, reasons = [], {}
        for s in preop_plan.screws:
            if s.id in mapped_ids:
                screws.append(mapped.screw(s.id))
            else:
                screws.append(s)
                reasons[s.id] = failed.get(s.level, f"level {s.level}: no registration")
        self.set_plan(mapped.with_screws(screws), reasons)

    def clear_plan(self, reason: str) -> None:
        """Drop the plan (e.g. a received plan failed validation): every verdict is NO_PLAN with ``reason``."""
        self.plan = None
        self.no_plan_reason = reason
        self.selector.set_screws([])

    def select(self, screw_id: str | None) -> None:
        """Explicit screw (``""``/None: automatic). Raises KeyError for an unknown id, naming the reason
        when there is no plan (``NO_PLAN_YET`` before the first one)."""
        if screw_id and self.plan is None:
            raise KeyError(f"no screw {screw_id!r}: {self.no_plan_reason}")
        self.selector.select(screw_id)

    def set_tracking_health(self, lost_reason: str, tool: str = "") -> None:
        """Tracker health of one ``tool``: non-empty ``lost_reason`` = lost, "" = OK. Every verdict is
        TRACKING_LOST while ANY tool is lost (one tool's OK does not clear another's lost)."""
        if lost_reason:
            self._health_lost[tool] = lost_reason
        else:
            self._health_lost.pop(tool, None)

    @property
    def health_lost_reason(self) -> str:
        """Lost reasons of all lost tools joined with "; " ("" = every tool OK)."""
        return "; ".join(self._health_lost.values())

    @property
    def lost_tools(self) -> tuple[str, ...]:
        return tuple(self._health_lost)

    # ---- evaluation ----------------------------------------------------------------------
    def _reset_latches(self) -> None:
        self._lat_warn, self._ang_warn = Latch(), Latch()
        self._lat_viol, self._ang_viol = Latch(), Latch()
        self._depth_stop = Latch()
        self._approach: bool | None = None

    def _verdict(self, raw: GuardState, reason: str, screw_id: str, metrics: GuardMetrics,
                 t_s: float, age_ms: float) -> GuardVerdict:
        state, pending = self._debounce.update(raw, t_s, self.config.debounce_s)
        if pending:
            reason = f"{state.name}{DEBOUNCE_HELD}{raw.name} pending debounce ({reason})"
        v = new_named_tuple(GuardVerdict, (state, reason, screw_id, metrics, t_s, age_ms))  # GuardVerdict(...)
        self.last_verdict = v
        return v

    def evaluate(self, T_reference_tooltip: object, sample_time_s: float, now_s: float) -> GuardVerdict:
        """Verdict for one tool sample (``T_reference_tooltip``: 4x4, mm)."""
        return self._evaluate(tip_and_axis, (T_reference_tooltip,), sample_time_s, now_s)

    def evaluate_quat(self, q_xyzw: Sequence[float], t_mm: Sequence[float], sample_time_s: float,
                      now_s: float) -> GuardVerdict:
        """Verdict for one tool sample given as quaternion (``xyzw``) + tip position (mm), the
        ROS message's own form (no 4x4 built on the 1 kHz path). The pose goes through the C twin when it is built
        (:mod:`spine_nav.guard.native`: same bits; None when it declines, and the Python twin then judges it)."""
        judge = native.judge
        pose = None if judge is None else judge.tip_axis_quat(q_xyzw, t_mm)
        return self._evaluate(tip_and_axis_from_quat_py, (q_xyzw, t_mm), sample_time_s, now_s, pose)

    def _evaluate(self, parse, pose_args: tuple, sample_time_s: float, now_s: float,
                  pose: tuple | None = None) -> GuardVerdict:
        """The verdict; ``pose`` = (tip, axis) already parsed (by the C twin), else ``parse(*pose_args)`` here."""
        cfg = self.config
        age_ms = (now_s - sample_time_s) * 1000.0
        if not math.isfinite(sample_time_s):
            return self._verdict(GuardState.TRACKING_LOST, f"input: sample time is not finite ({sample_time_s})",
                                 self.selector.active_id or "", NAN_METRICS, now_s, age_ms)
        self.last_arrival_s = now_s
        last = self.last_sample_time_s
        if last is not None and sample_time_s < last:
            return self._verdict(GuardState.TRACKING_LOST,
                                 f"input: time went backwards ({(last - sample_time_s) * 1000:.3f} ms before "
                                 f"the previous sample)", self.selector.active_id or "", NAN_METRICS, last, age_ms)
        self.last_sample_time_s = sample_time_s
        t = sample_time_s
        if pose is None:
            try:
                pose = parse(*pose_args)
            except PoseError as exc:
                return self._verdict(GuardState.TRACKING_LOST, f"input: {exc}", self.selector.active_id or "",
                                     NAN_METRICS, t, age_ms)
        tip, axis = pose
        self.last_tip_axis = (tip, axis)
        if age_ms > (cfg.stale_after_s + TIME_EPS_S) * 1000.0:
            return self._verdict(GuardState.TRACKING_LOST,
                                 f"input: stale sample, age {age_ms:.1f} ms > {cfg.stale_after_s * 1000:g} ms",
                                 self.selector.active_id or "", NAN_METRICS, t, age_ms)
        if self._health_lost:  # (not health_lost_reason: no join per sample; reasons are never "")
            return self._verdict(GuardState.TRACKING_LOST, f"tracker: {self.health_lost_reason}",
                                 self.selector.active_id or "", NAN_METRICS, t, age_ms)
        if self.plan is None:
            return self._verdict(GuardState.NO_PLAN, self.no_plan_reason, "", NAN_METRICS, t, age_ms)
        hold = self._approach is False and self._latched_screw == self.selector.active_id
        g = self.selector.update(tip, hold=hold)
        if g is None:
            self._latched_screw = None
            return self._verdict(GuardState.NO_PLAN, f"{NO_ACTIVE_SCREW}: {self.selector.last_reason}",
                                 "", NAN_METRICS, t, age_ms)
        if g.screw_id != self._latched_screw:
            self._reset_latches()
            self._latched_screw = g.screw_id
        if not g.navigable:
            return self._verdict(GuardState.NO_PLAN, f"{g.screw_id} not navigable: {g.status_reason}",
                                 g.screw_id, NAN_METRICS, t, age_ms)
        judge = native.judge  # metrics.compute_metrics inlined (one Python call less per sample)
        m = None if judge is None else judge.metrics(g.packed, tip, axis)
        if m is None:
            m = compute_metrics_py(g, tip, axis)
        return self._verdict(*self._classify(g, m), g.screw_id, m, t, age_ms)

    def _classify(self, g: ScrewGeometry, m: GuardMetrics) -> tuple[GuardState, str]:
        cfg = self.config
        h_mm, h_deg = cfg.hysteresis_mm, cfg.hysteresis_deg
        stop = g.depth_mm + cfg.depth_margin_mm
        far = cfg.approach_distance_mm
        if self._approach:
            self._approach = not (m.tip_to_entry_mm < far - h_mm or m.depth_mm >= 0.0)
        else:
            self._approach = m.tip_to_entry_mm > far and m.depth_mm < 0.0
        depth_stop = self._depth_stop.update(m.depth_mm, stop, stop - h_mm)
        lat_v = self._lat_viol.update(m.lateral_error_mm, cfg.violation_lateral_mm, cfg.violation_lateral_mm - h_mm)
        ang_v = self._ang_viol.update(m.angular_error_deg, cfg.violation_angle_deg, cfg.violation_angle_deg - h_deg)
        lat_w = self._lat_warn.update(m.lateral_error_mm, cfg.warn_lateral_mm, cfg.warn_lateral_mm - h_mm)
        ang_w = self._ang_warn.update(m.angular_error_deg, cfg.warn_angle_deg, cfg.warn_angle_deg - h_deg)
        if depth_stop:
            return GuardState.VIOLATION, f"depth_mm {m.depth_mm:.2f} > depth stop {stop:.2f}"
        if self._approach:
            return GuardState.APPROACH, f"tip {m.tip_to_entry_mm:.1f} mm from entry (> {far:g} mm), before entry"
        if lat_v or ang_v:
            return GuardState.VIOLATION, self._why(m, lat_v, ang_v, cfg.violation_lateral_mm, cfg.violation_angle_deg,
                                                 h_mm, h_deg)
        if lat_w or ang_w:
            return GuardState.WARN, self._why(m, lat_w, ang_w, cfg.warn_lateral_mm, cfg.warn_angle_deg, h_mm, h_deg)
        return GuardState.ALIGNED, "inside corridor"

    @staticmethod
    def _why(m: GuardMetrics, lat: bool, ang: bool, lat_thr: float, ang_thr: float, h_mm: float,
             h_deg: float) -> str:
        parts = []
        for on, name, value, thr, h in ((lat, "lateral_error_mm", m.lateral_error_mm, lat_thr, h_mm),
                                         (ang, "angular_error_deg", m.angular_error_deg, ang_thr, h_deg)):
            if on:
                parts.append(f"{name} {value:.2f} > {thr:g}" if value > thr else
                             f"{name} {value:.2f} latched (hysteresis: clears below {thr - h:g})")
        return ", ".join(parts)

    def reject_sample(self, reason: str, sample_time_s: float, now_s: float) -> GuardVerdict:
        """A sample that could not even be turned into a pose (bad quaternion, wrong frame):
        TRACKING_LOST with ``reason``; it still counts as an arrival for the watchdog."""
        self.last_arrival_s = now_s
        t = sample_time_s if math.isfinite(sample_time_s) else now_s
        return self._verdict(GuardState.TRACKING_LOST, f"input: {reason}", self.selector.active_id or "",
                             NAN_METRICS, t, (now_s - t) * 1000.0)

    def report_lost(self, reason: str, now_s: float) -> GuardVerdict:
        """TRACKING_LOST now, without a sample (watchdog, tracker health)."""
        t = self.last_sample_time_s if self.last_sample_time_s is not None else now_s
        return self._verdict(GuardState.TRACKING_LOST, reason, self.selector.active_id or "", NAN_METRICS,
                             max(t, now_s), (now_s - t) * 1000.0)

    def watchdog(self, now_s: float) -> GuardVerdict | None:
        """TRACKING_LOST when no sample arrived for ``stale_after_s`` (None while samples flow). While the
        tracker reports a tool lost, the reason leads with the tracker's (the samples stopped BECAUSE of it,
        e.g. the bridge withholds tool tips after a bumped reference)."""
        if self.last_arrival_s is not None and now_s - self.last_arrival_s <= self.config.stale_after_s + TIME_EPS_S:
            return None
        since = "no tool sample received yet" if self.last_arrival_s is None else \
            f"no tool sample for {(now_s - self.last_arrival_s) * 1000:.0f} ms > {self.config.stale_after_s * 1000:g} ms"
        tracker = f"tracker: {self.health_lost_reason}; " if self.health_lost_reason else ""
        return self.report_lost(f"{tracker}watchdog: {since}", now_s)
