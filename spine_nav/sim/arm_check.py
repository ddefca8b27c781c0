"""`spine-nav arm check`: can this arm guide these screws? (simulation: MuJoCo in simulated time, no ROS).

For an arm (ours, or any description: :mod:`spine_nav.arm.description`) and a plan:

1. base placement: :func:`spine_nav.arm.layout.search_layout` (one base pose for every screw);
2. per reachable screw, in MuJoCo with the controller in lock-step (:func:`spine_nav.sim.scenario.lockstep_run`,
   1 ms cycles), starting from the layout's joint solution for that screw moved by ``start_offset_rad``
   on every joint (so the arm really travels; ``settle_s`` 8 s: the approach runs at the controller's
   near-patient velocity scale and the warm IK's last tenth of a millimetre can take a few seconds near a
   poorly conditioned pose: seen on xArm7 L1_right of a phantom case, 0.22 mm at 5 s, 0.03 mm at 7 s,
   0.008 mm at 8 s; a UR5 needed 3.5 s):
   * static: no breathing, no tracker noise: mean lateral / angular error over the last ``measure_s``
     after ``settle_s`` -> ``static_error_mm`` / ``static_error_deg``;
   * breathing 2 mm at 0.25 Hz + 0.1 mm tracker noise at 100 Hz (the ``bench arm`` conditions):
     RMS lateral error after ``settle_s`` over ``breathing_s`` -> ``breathing_error_rms_mm``.
   The controller gets the true robot pose in the tracker (hand-eye is ``bench arm``'s and
   ``arm calibrate``'s business); errors are ground truth (MuJoCo pose vs the true planned line).

The plan is used as if in Reference (the layout's Table frame needs only its LPS axes: a preoperative
CT plan is). Frames and units: mm, deg, s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from spine_nav.arm.kinematics import ArmKinematics
from spine_nav.arm.layout import BasePose, search_layout, table_from_reference
from spine_nav.geometry import compose
from spine_nav.plan import Plan


@dataclass
class ScrewCheck:
    screw_id: str
    reachable: bool
    reason: str = ""
    static_error_mm: float = float("nan")
    static_error_deg: float = float("nan")
    breathing_error_rms_mm: float = float("nan")
    breathing_error_max_mm: float = float("nan")


@dataclass
class CheckResult:
    robot: str
    dof: int
    base_pose: BasePose
    screws: list[ScrewCheck] = field(default_factory=list)

    def _vals(self, name: str) -> list[float]:
        return [getattr(s, name) for s in self.screws if s.reachable and math.isfinite(getattr(s, name))]

    def to_dict(self) -> dict:
        """The JSON ``arm check --json`` prints: maxima over the reachable screws."""
        mx = lambda n: max(self._vals(n), default=float("nan"))  # noqa: E731
        p = self.base_pose
        return {"robot": self.robot, "dof": self.dof,
                "screws_reachable": sum(s.reachable for s in self.screws), "screws_total": len(self.screws),
                "static_error_mm_max": mx("static_error_mm"), "static_error_deg_max": mx("static_error_deg"),
                "breathing_error_rms_mm": mx("breathing_error_rms_mm"),
                "base_pose": {"frame": "Table (origin mean entry, x patient right, y cranial, z up)",
                              "family": p.family, "x_mm": p.x_mm, "y_mm": p.y_mm, "z_mm": p.z_mm,
                              "yaw_deg": math.degrees(p.yaw)},
                "screws": [s.__dict__ for s in self.screws]}


def place_base(kin: ArmKinematics, plan_ref: Plan, standoff_mm: float = 25.0, log=None):
    """(best LayoutScore, T_tracker_robotbase, T_tracker_reference) for one plan in Reference: the base from
    :func:`search_layout`, the tracker where the default scene has it (any fixed camera pose will do:
    every error here is measured between the guide and the planned line, frame-free)."""
    from spine_nav.sim.arm import default_scene

    say = log or (lambda _m: None)
    best = search_layout(kin, [plan_ref], standoff_mm=standoff_mm, log=say).best
    say(f"base: {best.summary().splitlines()[0]}")
    T_tracker_table = default_scene().T_tracker_robotbase
    return (best, compose(T_tracker_table, best.pose.T_table_robotbase),
            compose(T_tracker_table, table_from_reference(plan_ref)))


def start_near(kin: ArmKinematics, q_rad: np.ndarray, offset_rad: float) -> np.ndarray:
    """A start configuration ``offset_rad`` away from ``q_rad`` on every joint (alternating signs), clipped."""
    signs = np.where(np.arange(kin.arm.dof) % 2 == 0, 1.0, -1.0)
    return np.clip(q_rad + offset_rad * signs, kin.lower, kin.upper)


def check_arm(kin: ArmKinematics, plan: Plan, standoff_mm: float = 25.0, settle_s: float = 8.0,
              measure_s: float = 0.5, breathing_s: float = 4.0, start_offset_rad: float = 0.1,
              seed: int = 0, robot: str = "", log=None) -> CheckResult:
    """Base placement + static and breathing alignment per screw (see the module docstring)."""
    from spine_nav.sim.scenario import lockstep_run
    from spine_nav.sim.arm import ArmScene

    say = log or (lambda _m: None)
    plan_ref = plan if plan.frame == "Reference" else Plan(frame="Reference", screws=list(plan.screws),
                                                               case_id=plan.case_id)
    best, T_tracker_robotbase, T_tracker_reference = place_base(kin, plan_ref, standoff_mm, say)
    out = CheckResult(robot or str(kin.arm.source), kin.arm.dof, best.pose)
    by_id = {s.screw_id.split(":", 1)[1]: s for s in best.screws}
    for screw in plan_ref.screws:
        reach = by_id[screw.id]
        if not reach.reached:
            out.screws.append(ScrewCheck(screw.id, False, reach.reason))
            say(f"{screw.id}: not reachable: {reach.reason}")
            continue
        scene = ArmScene(T_tracker_robotbase, T_tracker_reference, start_near(kin, reach.q_rad, start_offset_rad))
        st = lockstep_run(kin, scene, T_tracker_robotbase, screw, settle_s + measure_s, seed=seed)
        m = st.t_s > settle_s
        br = lockstep_run(kin, scene, T_tracker_robotbase, screw, settle_s + breathing_s, breathing_mm=2.0,
                          breathing_hz=0.25, tracker_noise_mm=0.1, tracker_rate_hz=100.0, seed=seed)
        mb = br.t_s > settle_s
        sc = ScrewCheck(screw.id, True, "", float(np.mean(st.lateral_mm[m])), float(np.mean(st.angle_deg[m])),
                        float(np.sqrt(np.mean(br.lateral_mm[mb] ** 2))), float(np.max(br.lateral_mm[mb])))
        out.screws.append(sc)
        say(f"{screw.id}: static {sc.static_error_mm:.3f} mm / {sc.static_error_deg:.3f} deg, "
            f"breathing RMS {sc.breathing_error_rms_mm:.3f} mm (max {sc.breathing_error_max_mm:.3f})")
    return out
