"""The arm guide controller: alignment to a planned screw, motion compensation, safe hold.

Pure core, clock injected: :meth:`ArmGuide.step` is called once per control cycle (1 kHz by
:class:`spine_nav.arm.servo.ServoLoop`, or stepped by tests/benchmarks in simulated time) with
the cycle's time and the joint feedback, and returns the joint position/velocity command.

Frames and units (mm, s, rad)::

    T_robotbase_reference = inv(T_tracker_robotbase) @ T_tracker_reference    (latest, filtered)
    screw (Reference):  entry_mm, direction (entry -> target, into the bone)
    target (RobotBase): tube opening at entry - standoff_mm * direction, guide +z = direction

Each cycle in ALIGNING/TRACKING: the target is recomputed from the latest reference sample (so
the tube follows breathing), one warm-started IK step updates the goal joints, and ruckig
(jerk-limited online trajectory generation) moves the command toward it; velocity limits are
scaled down when the tube is within ``near_patient_mm`` of its target.

Safety (checked first in every cycle, latched): guard VIOLATION / TRACKING_LOST, a guard without a
plan for the arm's screw (NO_PLAN: its depth stop is not enforced), a silent guard
(no verdict for ``guard_timeout_ms``), a silent bridge or registered command source
(:mod:`spine_nav.arm.liveness`), stale reference sample, stale joint feedback, control-cycle overrun, joint position outside the
limits, joint velocity above limit -> HOLD: commanded velocity zero and the command frozen from
this cycle on; only :meth:`resume` (explicit) leaves HOLD. Requests made from other threads
(``on_guard_state``, ``hold``) take effect at the next cycle.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from ruckig import InputParameter, OutputParameter, Result, Ruckig, RuckigError, Synchronization

from spine_nav.arm.kinematics import AlignmentTarget, ArmKinematics, UnreachableTarget
from spine_nav.arm.liveness import GapStats, Liveness
from spine_nav.arm.reference_filter import ReferenceFilter
from spine_nav.arm.safety import GUARD_STOP_STATES, StopCause, StopEvent, log_stop
from spine_nav.geometry import invert, rigid_rows, transform_directions, transform_points, validate_transform
from spine_nav.plan import Screw

MODES = ("IDLE", "ALIGNING", "TRACKING", "HOLD")


@dataclass
class ArmGuideConfig:
    """Controller parameters (units in the names)."""

    # metadata: the arm_guide parameter a field is (spine_nav.nodes.param_spec: description, unit, range)
    standoff_mm: float = field(default=25.0, metadata={
        "unit": "mm", "range": (0.0, 500.0), "description": "tube opening above the entry point on the planned line"})
    control_period_s: float = 0.001
    reference_timeout_s: float = field(default=0.1, metadata={
        "unit": "s", "range": (1e-3, 60.0), "description": "stale tracking/reference -> hold"})
    #: 0.05 s: joint_states come at 250 Hz (sim_arm, a joint_state_broadcaster), so ~12 periods; the node
    #: always ran with 0.05 (config/nodes.yaml), the core default was 0.02 until both came from here
    feedback_timeout_s: float = field(default=0.05, metadata={
        "unit": "s", "range": (1e-3, 60.0), "description": "stale joint_states -> hold"})
    cycle_watchdog_s: float = field(default=0.02, metadata={
        "unit": "s", "range": (1e-4, 60.0), "description": "servo cycle gap -> hold"})
    #: no guard verdict (on_guard_state) for this long while ALIGNING/TRACKING -> hold (GUARD_SILENT).
    #: None = not checked (pure-core users without a guard); the node's default is 50 ms (the guard
    #: publishes at least every heartbeat_period_ms = 20 ms, so two heartbeats may be lost); ROS 0 = off.
    guard_timeout_ms: float | None = field(default=None, metadata={
        "unit": "ms", "range": (0.0, 60_000.0), "ros_default": 50.0, "none_value": 0.0,
        "description": "no guard/status for this long while aligning/tracking -> hold 'guard silent' (0 = off)"})
    bridge_timeout_ms: float | None = field(default=None, metadata={
        "unit": "ms", "range": (0.0, 60_000.0), "ros_default": 50.0, "none_value": 0.0,
        "description": "no tracking/health (the bridge's heartbeat) for this long while aligning/tracking -> "
                       "hold 'bridge silent' (0 = off)"})
    command_source_timeout_ms: float | None = field(default=None, metadata={
        "unit": "ms", "range": (0.0, 60_000.0), "ros_default": 50.0, "none_value": 0.0,
        "description": "registered command source (console) heartbeat missing this long while aligning/tracking "
                       "-> hold 'console silent' (0 = off)"})
    velocity_scale: float = field(default=0.5, metadata={
        "range": (1e-3, 1.0), "description": "fraction of the URDF joint velocity limits"})
    near_patient_mm: float = field(default=80.0, metadata={
        "unit": "mm", "range": (0.0, 1000.0), "description": "within this of the target pose, slower (below)"})
    near_patient_velocity_scale: float = field(default=0.25, metadata={
        "range": (1e-3, 1.0), "description": "velocity scale near the patient"})
    max_acceleration_rad_s2: float = 3.0
    max_jerk_rad_s3: float = 30.0
    velocity_violation_factor: float = 1.1
    joint_limit_tolerance_rad: float = 1e-3
    settled_mm: float = 0.2                 # ALIGNING -> TRACKING once the guide is this close to the line ...
    settled_deg: float = 0.2
    settled_goal_rad: float = 2e-3          # ... and the commanded joints this close to the IK goal
    compensate_motion: bool = True          # False: keep the reference at align() time (baseline)
    filter_alpha: float = 0.35
    filter_beta: float = 0.05
    filter_rotation_alpha: float = 0.1      # reference rotation smoothing (see arm/reference_filter.py)
    marker_drift_mm: float = field(default=3.0, metadata={
        "unit": "mm", "range": (0.0, 1000.0), "description": "tracking/arm_marker vs registration + FK beyond this -> hold"})
    marker_check_max_rad_s: float = 0.01    # compare only while the arm is still (not ALIGNING) ...
    marker_drift_samples: int = 3           # ... and hold after this many consecutive samples beyond
    monitor_every: int = 5                  # cycles between alignment-error updates once TRACKING
    ik_every: int = 2                       # cycles between warm IK steps (ruckig runs every cycle)


@dataclass(frozen=True)
class ServoCommand:
    q_rad: np.ndarray
    qd_rad_s: np.ndarray
    holding: bool


@dataclass
class ArmGuideState:
    """Snapshot for publishing (ArmState message) and logs."""

    mode: str = "IDLE"
    active_screw_id: str = ""
    stop_cause: str = ""
    alignment_error_mm: float = float("nan")
    alignment_error_deg: float = float("nan")
    holding: bool = False
    T_reference_guidetube: np.ndarray | None = None
    stops: list = field(default_factory=list)


class ArmGuide:
    """In-process API: ``align(screw)``, ``hold(cause)``, ``resume()``, ``release()``, ``state``."""

    def __init__(self, kin: ArmKinematics, T_tracker_robotbase: np.ndarray, config: ArmGuideConfig | None = None,
                 q0_rad: np.ndarray | None = None) -> None:
        self.kin = kin  # used by the servo cycle (under self._lock)
        self._planner = ArmKinematics(kin.arm)  # own Pinocchio data for align() outside the lock
        self.cfg = config or ArmGuideConfig()
        self.T_tracker_robotbase = validate_transform(T_tracker_robotbase, "T_tracker_robotbase")
        self.T_robotbase_tracker = invert(self.T_tracker_robotbase)
        n = kin.arm.dof
        self.vmax = kin.arm.velocity_limit_rad_s
        self._q_lo = kin.lower - self.cfg.joint_limit_tolerance_rad
        self._q_hi = kin.upper + self.cfg.joint_limit_tolerance_rad
        self._qd_max = self.cfg.velocity_violation_factor * self.vmax
        self._lock = threading.Lock()
        self._filter = ReferenceFilter(self.cfg.filter_alpha, self.cfg.filter_beta, self.cfg.filter_rotation_alpha)
        self._ref_stamp_s: float | None = None
        self._frozen_reference: np.ndarray | None = None
        self._guard_state = ""
        self._guard_heard_s: float | None = None  # controller time of the last on_guard_state
        self._guard_lacks_plan: tuple[str, str] | None = None  # (screw id, reason) of the last status lacking a plan
        self.liveness = Liveness()  # heartbeats of the other safety-relevant inputs (arm/liveness.py)
        self.liveness.watch("bridge", "tracking/health", StopCause.BRIDGE_SILENT, self.cfg.bridge_timeout_ms)
        self.liveness.watch("command_source", "command source heartbeat", StopCause.COMMAND_SOURCE_SILENT,
                            self.cfg.command_source_timeout_ms, registered_only=True)
        #: gaps between heartbeats heard while guiding, per input ("guard", "bridge", "command_source")
        self.heartbeat_gaps = {key: GapStats() for key in ("guard", *self.liveness.inputs)}
        self._heard_guiding: dict[str, bool] = {}  # input -> the arm was guiding at its last heartbeat
        self._pending_stop: StopEvent | None = None
        self._screw: Screw | None = None
        self._target_ref: tuple[np.ndarray, np.ndarray] | None = None  # (tube point, axis) in Reference
        self._q_goal: np.ndarray | None = None
        self._mode = "IDLE"
        self._holding = False
        self._stop_cause = ""
        self.stops: list[StopEvent] = []
        self._last_step_s: float | None = None
        self._q_meas_last: np.ndarray | None = None
        self._qd_meas_last: np.ndarray | None = None
        self.marker_drift_mm = float("nan")
        self._drift_count = 0
        self._T_b_r_sample = np.eye(4)
        self._v_b_mm_s = np.zeros(3)
        self._filter_stamp_s = 0.0
        self._cycle = 0
        self._since_monitor = 0
        self._ik_ran = False
        self._err = (float("nan"), float("nan"))
        self._distance_to_target_mm = float("inf")
        self._cycle_target: tuple[np.ndarray, np.ndarray] | None = None
        self._T_b_tube: tuple[np.ndarray, np.ndarray] | None = None
        self.hold_request_mono_ns: int | None = None  # set when a stop request arrives (for latency measurement)
        self.hold_effective_mono_ns: int | None = None
        self._otg = Ruckig(n, self.cfg.control_period_s)
        self._inp = InputParameter(n)
        self._out = OutputParameter(n)
        q0 = np.zeros(n) if q0_rad is None else np.asarray(q0_rad, dtype=float)
        self._q_cmd = q0.copy()
        self._qd_cmd = np.zeros(n)
        self._reset_otg(q0)

    # ------------------------------------------------------------------ inputs (any thread)
    def on_reference(self, T_tracker_reference: np.ndarray, stamp_s: float) -> None:
        """Latest tracker sample of the patient reference (``T_tracker_reference``, mm; tracker time s)."""
        with self._lock:
            self._filter.update(T_tracker_reference, stamp_s)
            self._ref_stamp_s = stamp_s
            # per sample (not per cycle): the filtered reference and its velocity in RobotBase
            self._T_b_r_sample = self.T_robotbase_tracker @ self._filter.T
            self._v_b_mm_s = self.T_robotbase_tracker[:3, :3] @ self._filter.v_mm_s
            self._filter_stamp_s = self._filter.stamp_s

    def on_arm_marker(self, T_tracker_armmarker: np.ndarray, t_s: float) -> float | None:
        """Tracker sample of the arm's marker: checks the robot-to-tracker registration live.

        Compares it with ``T_tracker_robotbase @ FK(q, ArmMarker)`` while the arm is nearly still
        and not ALIGNING (sample/encoder timing would otherwise show as drift); a disagreement above
        ``marker_drift_mm`` in ``marker_drift_samples`` consecutive samples (the base or the camera
        moved, or the marker slipped) holds the arm at the next cycle. Returns the drift in mm (None
        when not checked)."""
        import time

        T = np.asarray(T_tracker_armmarker, dtype=float)
        rigid_rows(T, "T_tracker_armmarker")  # plain-float check: ~10x cheaper than validate_transform here
        with self._lock:
            if self._q_meas_last is None or self._mode == "ALIGNING" \
                    or float(np.max(np.abs(self._qd_meas_last))) > self.cfg.marker_check_max_rad_s:
                self._drift_count = 0
                return None
            pred = self.T_tracker_robotbase @ self.kin.fk(self._q_meas_last, "ArmMarker")
            drift = float(np.linalg.norm(pred[:3, 3] - T[:3, 3]))
            self.marker_drift_mm = drift
            self._drift_count = self._drift_count + 1 if drift > self.cfg.marker_drift_mm else 0
            if self._drift_count >= self.cfg.marker_drift_samples and not self._holding and self._pending_stop is None:
                self._pending_stop = StopEvent(t_s, StopCause.REGISTRATION_DRIFT,
                                               f"{drift:.1f} mm > {self.cfg.marker_drift_mm} mm")
                self.hold_request_mono_ns = time.monotonic_ns()
            return drift

    def on_guard_state(self, state_name: str, t_s: float, detail: str = "", screw_id: str = "",
                       lacks_plan: bool = False) -> None:
        """Guard verdict (GuardStatus.state_name, reason ``detail``, active screw ``screw_id``; repeats count
        too). VIOLATION / TRACKING_LOST stop at the next cycle. ``lacks_plan`` (:func:`spine_nav.guard.core.lacks_plan`:
        NO_PLAN because the guard has no plan, or its screw is not navigable) stops the arm while it guides
        on a screw the status concerns (``screw_id`` that screw, or none): e.g. a guard restarted while the
        registration node is down. A guard that has the plan but no active screw (automatic selection, the
        tool near none) or that is leaving NO_PLAN through its debounce does not stop it."""
        import time

        with self._lock:
            self._gap("guard", self._guard_heard_s, t_s)
            self._guard_state = state_name
            self._guard_heard_s = t_s
            self._guard_lacks_plan = (screw_id, detail) if lacks_plan else None
            cause = GUARD_STOP_STATES.get(state_name)
            if cause is not None and not self._holding and self._pending_stop is None:
                self._pending_stop = StopEvent(t_s, cause, detail)
                self.hold_request_mono_ns = time.monotonic_ns()

    def on_heartbeat(self, key: str, t_s: float, source: str | None = None) -> str | None:
        """A heartbeat of a watched input (``"bridge"``, ``"command_source"``; see :class:`Liveness`).
        Returns the previously registered source when ``source`` changes it (for the log), else None."""
        with self._lock:
            before = self.liveness.registered(key)
            hb = self.liveness.inputs.get(key)
            self._gap(key, hb.heard_s if hb is not None else None, t_s)
            self.liveness.heard(key, t_s, source)
        return before if source is not None and source != before else None

    def _gap(self, key: str, previous_s: float | None, t_s: float) -> None:
        """Count the gap since the previous heartbeat of ``key`` when the arm was guiding at that heartbeat
        (a gap that ends in a hold counts too; under the lock)."""
        if previous_s is not None and self._heard_guiding.get(key, False) and key in self.heartbeat_gaps:
            self.heartbeat_gaps[key].add((t_s - previous_s) * 1e3)
        self._heard_guiding[key] = self._mode in ("ALIGNING", "TRACKING")

    def heartbeat_gap_summary(self) -> dict[str, str]:
        """Input -> :meth:`GapStats.summary` of its heartbeat gaps while guiding."""
        with self._lock:
            return {key: g.summary() for key, g in self.heartbeat_gaps.items()}

    def hold(self, t_s: float, cause: StopCause = StopCause.OPERATOR, detail: str = "") -> None:
        """Request a hold (takes effect at the next control cycle)."""
        import time

        with self._lock:
            if self._pending_stop is None:
                self._pending_stop = StopEvent(t_s, cause, detail)
                self.hold_request_mono_ns = time.monotonic_ns()

    def reference_in_robotbase(self, t_s: float) -> np.ndarray:
        """``T_robotbase_reference`` from the latest (filtered, predicted to ``t_s``) reference sample."""
        if not self.cfg.compensate_motion and self._frozen_reference is not None:
            return self.T_robotbase_tracker @ self._frozen_reference
        T = self._T_b_r_sample.copy()
        dt = t_s - self._filter_stamp_s
        T[:3, 3] += self._v_b_mm_s * (0.0 if dt < 0.0 else min(dt, self._filter.max_horizon_s))
        return T

    # ------------------------------------------------------------------ commands
    def align(self, screw: Screw, t_s: float) -> tuple[bool, str]:
        """Start aligning the guide to ``screw`` (Reference frame). Returns (accepted, message).

        Refused while holding (resume first), without a reference sample, or when the IK says
        the target is unreachable (the message says why)."""
        with self._lock:
            if self._holding:
                return False, f"holding ({self._stop_cause}); send resume first"
            if self._filter.T is None:
                return False, "no tracker sample of the patient reference yet (tracking/reference)"
            silent = self._guard_refusal(t_s, screw.id)
            if silent:
                return False, silent
            entry, d = np.asarray(screw.entry_mm, float), screw.direction
            point_ref = entry - self.cfg.standoff_mm * d
            T_b_r = self.reference_in_robotbase(t_s)
            q_seed = self._q_cmd.copy()
            frozen = self._filter.predict(t_s)
        # The full IK (several seeds, up to ~100 ms) runs outside the lock on the planner's own
        # Pinocchio data, so the servo keeps cycling (and its watchdog stays quiet) meanwhile.
        target = AlignmentTarget(transform_points(T_b_r, point_ref), transform_directions(T_b_r, d))
        try:
            ik = self._planner.align(target, q_seed)
        except UnreachableTarget as exc:
            return False, f"screw {screw.id}: {exc}"
        with self._lock:
            if self._holding:
                return False, f"holding ({self._stop_cause}) since the request; send resume first"
            self._frozen_reference = frozen
            self._screw = screw
            self._target_ref = (point_ref, d)
            self._q_goal = ik.q_rad
            self._mode = "ALIGNING"
            self._reset_otg(self._q_cmd, self._qd_cmd)
            return True, f"aligning to {screw.id} (IK {ik.iterations} it, margin {self.kin.limit_margin(ik.q_rad):.2f})"

    def resume(self, t_s: float) -> tuple[bool, str]:
        """Leave HOLD (the only way out). Refused while the stop condition persists."""
        with self._lock:
            if not self._holding:
                return False, "not holding"
            if self._guard_state in GUARD_STOP_STATES:
                return False, f"guard still reports {self._guard_state}"
            silent = self._guard_refusal(t_s, self._screw.id) if self._target_ref is not None else ""
            if silent:
                return False, silent
            if self._target_ref is not None and (self._ref_stamp_s is None
                                                 or t_s - self._ref_stamp_s > self.cfg.reference_timeout_s):
                return False, "tracker reference still stale"
            self._holding = False
            self._pending_stop = None
            self._last_step_s = None
            self._mode = "ALIGNING" if self._target_ref is not None else "IDLE"
            self._reset_otg(self._q_cmd)
            return True, f"resumed ({self._mode})"

    def release(self) -> tuple[bool, str]:
        """Drop the target: IDLE, holding the current position (no latch)."""
        with self._lock:
            if self._holding:
                return False, f"holding ({self._stop_cause}); send resume first"
            self._screw, self._target_ref, self._q_goal = None, None, None
            self._mode = "IDLE"
            self._qd_cmd = np.zeros_like(self._qd_cmd)
            self._reset_otg(self._q_cmd)
            return True, "released"

    # ------------------------------------------------------------------ the control cycle
    def step(self, t_s: float, q_meas: np.ndarray, qd_meas: np.ndarray, feedback_stamp_s: float | None = None) -> ServoCommand:
        """One control cycle at time ``t_s`` with joint feedback (rad, rad/s, sampled at ``feedback_stamp_s``)."""
        with self._lock:
            self._q_meas_last, self._qd_meas_last = q_meas, qd_meas
            stop = self._check_safety(t_s, q_meas, qd_meas, feedback_stamp_s)
            self._last_step_s = t_s
            if stop is not None and not self._holding:
                self._enter_hold(stop)
            if self._holding or self._mode == "IDLE":
                self._qd_cmd = np.zeros_like(self._qd_cmd)
            else:
                try:
                    self._track(t_s)
                except (RuckigError, RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
                    # never leave a cycle without a safe command: hold where the command is
                    self._enter_hold(StopEvent(t_s, StopCause.MOTION_ERROR, str(exc).splitlines()[0][:200]))
            self._cycle += 1
            self._since_monitor += 1
            # monitoring (FK + error) preferably on a cycle without an IK step, to keep cycles short
            due = self._since_monitor >= self.cfg.monitor_every
            if self._mode == "ALIGNING" or (due and (not self._ik_ran or self._since_monitor >= 2 * self.cfg.monitor_every)):
                self._update_error(t_s, q_meas)
                self._since_monitor = 0
            else:
                self._cycle_target = None
            return ServoCommand(self._q_cmd.copy(), self._qd_cmd.copy(), self._holding)

    def _check_safety(self, t_s, q, qd, fb_stamp) -> StopEvent | None:
        if self._pending_stop is not None:
            return self._pending_stop
        if self._holding:
            return None
        c = self.cfg
        if self._last_step_s is not None and t_s - self._last_step_s > c.cycle_watchdog_s:
            return StopEvent(t_s, StopCause.CYCLE_WATCHDOG, f"{(t_s - self._last_step_s) * 1e3:.1f} ms since last cycle")
        if fb_stamp is not None and t_s - fb_stamp > c.feedback_timeout_s:
            return StopEvent(t_s, StopCause.FEEDBACK_STALE, f"joint state {(t_s - fb_stamp) * 1e3:.1f} ms old")
        if self._mode in ("ALIGNING", "TRACKING") and c.compensate_motion:
            age = float("inf") if self._ref_stamp_s is None else t_s - self._ref_stamp_s
            if age > c.reference_timeout_s:
                return StopEvent(t_s, StopCause.REFERENCE_STALE, f"reference sample {age * 1e3:.0f} ms old")
        if self._mode in ("ALIGNING", "TRACKING"):
            silent = self._guard_silence(t_s)
            if silent:
                return StopEvent(t_s, StopCause.GUARD_SILENT, silent)
            missing = self._guard_plan_missing(self._screw.id) if self._screw is not None else ""
            if missing:
                return StopEvent(t_s, StopCause.GUARD_NO_PLAN, missing)
            lost = self.liveness.check(t_s)
            if lost is not None:
                return lost
        out = (q < self._q_lo) | (q > self._q_hi)
        if out.any():
            j = int(np.flatnonzero(out)[0])
            return StopEvent(t_s, StopCause.JOINT_LIMIT, f"{self.kin.arm.joint_names[j]} at {q[j]:.3f} rad")
        fast = np.abs(qd) > self._qd_max
        if fast.any():
            j = int(np.flatnonzero(fast)[0])
            return StopEvent(t_s, StopCause.JOINT_VELOCITY, f"{self.kin.arm.joint_names[j]} at {qd[j]:.2f} rad/s")
        return None

    def _guard_silence(self, t_s: float) -> str:
        """Why the guard counts as silent at ``t_s`` ("" when heard recently or the check is off)."""
        timeout_ms = self.cfg.guard_timeout_ms
        if timeout_ms is None:
            return ""
        if self._guard_heard_s is None:
            return "no guard/status received yet"
        age_ms = (t_s - self._guard_heard_s) * 1e3
        return f"no guard/status for {age_ms:.0f} ms > {timeout_ms:g} ms" if age_ms > timeout_ms else ""

    def _guard_plan_missing(self, screw_id: str) -> str:
        """Why the guard cannot enforce the depth stop on ``screw_id`` ("" when nothing says so): its last
        status lacked a plan for that screw or for any screw (no active screw named)."""
        lacking = self._guard_lacks_plan
        if lacking is None or lacking[0] not in ("", screw_id):
            return ""
        return f"no depth stop on {screw_id}: {lacking[1] or 'no reason given'}"

    def _guard_refusal(self, t_s: float, screw_id: str) -> str:
        """Why ``align``/``resume`` on ``screw_id`` is refused for the guard or a watched input ("" = not)."""
        missing = self._guard_plan_missing(screw_id)
        return (self._guard_silence(t_s) or self._liveness_silence(t_s)
                or (str(StopEvent(t_s, StopCause.GUARD_NO_PLAN, missing)) if missing else ""))

    def _liveness_silence(self, t_s: float) -> str:
        ev = self.liveness.check(t_s)
        return "" if ev is None else str(ev)

    def _enter_hold(self, event: StopEvent) -> None:
        import time

        self._holding = True
        self._mode = "HOLD"
        self._pending_stop = None
        self._stop_cause = str(event)
        self._qd_cmd = np.zeros_like(self._qd_cmd)
        self.stops.append(event)
        self.hold_effective_mono_ns = time.monotonic_ns()
        log_stop(event)

    def _target_in_robotbase(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(tube point mm, axis) in RobotBase for this cycle. Plain matrix products (inputs were
        validated on arrival; geometry's validating helpers cost ~100 us per call at 1 kHz)."""
        T_b_r = self.reference_in_robotbase(t_s)
        point_ref, d = self._target_ref
        R = T_b_r[:3, :3]
        return R @ point_ref + T_b_r[:3, 3], R @ d

    def _track(self, t_s: float) -> None:
        self._ik_ran = self._cycle % self.cfg.ik_every == 0
        if self._ik_ran:
            # the goal moves at breathing speed (~3 mm/s): a 2 ms IK period costs < 0.01 mm of lag
            point_b, axis_b = self._cycle_target = self._target_in_robotbase(t_s)
            self._q_goal, _, _ = self.kin.ik_step_raw(self._q_goal, point_b, axis_b)
        near = self._distance_to_target_mm < self.cfg.near_patient_mm
        scale = self.cfg.velocity_scale * (self.cfg.near_patient_velocity_scale if near else 1.0)
        inp = self._inp
        inp.max_velocity = (self.vmax * scale).tolist()
        inp.target_position = self._q_goal.tolist()
        try:
            res = self._otg.update(inp, self._out)
        except RuckigError:
            # ruckig's time synchronisation can fail numerically on tiny moves (seen at ~1e-4 rad):
            # per-joint time-optimal profiles (no synchronisation) are always solvable.
            inp.synchronization = Synchronization.No
            res = self._otg.update(inp, self._out)
            inp.synchronization = Synchronization.Time
        if res not in (Result.Working, Result.Finished):
            raise RuntimeError(f"ruckig failed: {res}")
        self._q_cmd = np.asarray(self._out.new_position)
        self._qd_cmd = np.asarray(self._out.new_velocity)
        self._out.pass_to_input(inp)

    def _update_error(self, t_s: float, q_meas: np.ndarray) -> None:
        if self._target_ref is None:
            self._err = (float("nan"), float("nan"))
            self._T_b_tube = None
            return
        R, p = self.kin.tube_pose_raw(q_meas)
        if self._cycle_target is None:
            self._cycle_target = self._target_in_robotbase(t_s)
        point_b, axis_b = self._cycle_target
        self._cycle_target = None
        self._T_b_tube = (R.copy(), p.copy())
        self._err = line_error(p, R[:, 2], point_b, axis_b)
        dp = p - point_b
        self._distance_to_target_mm = float(np.sqrt(dp @ dp))
        # Settled = on the line AND the motion generator has caught up with the (moving) goal. Not "joint
        # velocity ~ 0": under breathing the goal moves ~3 mm/s, so the joints never stop and a velocity
        # criterion would keep the arm in ALIGNING forever (seen in the end-to-end demo).
        if self._mode == "ALIGNING" and self._err[0] <= self.cfg.settled_mm and self._err[1] <= self.cfg.settled_deg \
                and float(np.max(np.abs(self._q_goal - self._q_cmd))) < self.cfg.settled_goal_rad:
            self._mode = "TRACKING"

    def _reset_otg(self, q: np.ndarray, qd: np.ndarray | None = None) -> None:
        n = len(q)
        inp = self._inp
        inp.current_position = list(map(float, q))
        inp.current_velocity = list(map(float, qd)) if qd is not None else [0.0] * n
        inp.current_acceleration = [0.0] * n
        inp.target_position = list(map(float, q))
        inp.target_velocity = [0.0] * n
        inp.target_acceleration = [0.0] * n
        inp.max_velocity = (self.vmax * self.cfg.velocity_scale).tolist()
        inp.max_acceleration = [self.cfg.max_acceleration_rad_s2] * n
        inp.max_jerk = [self.cfg.max_jerk_rad_s3] * n
        self._q_cmd = np.asarray(q, dtype=float).copy()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> ArmGuideState:
        with self._lock:  # a snapshot only: the servo step waits on this lock
            T_b_r, T_b_tube = None, None
            if self._T_b_tube is not None and self._filter.T is not None:
                T_b_tube = np.eye(4)
                T_b_tube[:3, :3], T_b_tube[:3, 3] = self._T_b_tube
                T_b_r = self.reference_in_robotbase(self._last_step_s or 0.0)
            state = ArmGuideState(
                mode=self._mode, active_screw_id=self._screw.id if self._screw else "", stop_cause=self._stop_cause,
                alignment_error_mm=self._err[0], alignment_error_deg=self._err[1], holding=self._holding,
                T_reference_guidetube=None, stops=list(self.stops))
        if T_b_r is not None:  # the checked inverse (~0.1 ms) outside the lock
            state.T_reference_guidetube = invert(T_b_r) @ T_b_tube
        return state

    @property
    def q_command(self) -> np.ndarray:
        with self._lock:
            return self._q_cmd.copy()

    @property
    def command(self) -> tuple[np.ndarray, bool]:
        """(joint position command rad, holding?) in one consistent read: what a command message needs."""
        with self._lock:
            return self._q_cmd.copy(), self._holding


def guide_error(T_reference_guidetube: np.ndarray, point_mm: np.ndarray, direction: np.ndarray) -> tuple[float, float]:
    """Guide-to-trajectory error in Reference: (distance of the tube opening from the planned line
    [mm], angle between the guide axis +z and the planned direction [deg])."""
    T = validate_transform(T_reference_guidetube, "T_reference_guidetube")
    return line_error(T[:3, 3], T[:3, 2], np.asarray(point_mm, float), np.asarray(direction, float))


def line_error(p_mm: np.ndarray, z: np.ndarray, point_mm: np.ndarray, d: np.ndarray) -> tuple[float, float]:
    """(distance of ``p_mm`` from the line ``point_mm + s d`` [mm], angle between ``z`` and ``d`` [deg]);
    all in one frame, ``d`` and ``z`` unit."""
    v = p_mm - point_mm
    w = v - (v @ d) * d
    lateral = float(np.sqrt(w @ w))
    ang = float(np.degrees(np.arccos(min(1.0, max(-1.0, float(z @ d))))))
    return lateral, ang


def tube_target_in_reference(screw: Screw, standoff_mm: float) -> np.ndarray:
    """Desired ``T_reference_guidetube``'s origin: ``entry - standoff * direction`` (mm)."""
    return np.asarray(screw.entry_mm, float) - standoff_mm * screw.direction


