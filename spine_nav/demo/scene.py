"""The simulated operating room of the demo (pure; mm, frames as in spine_nav.geometry).

The patient lies prone on the table; the phantom's Reference frame (CBCT LPS) sits in the Table
frame of :mod:`spine_nav.arm.layout` (origin at the mean planned entry, x patient right, y cranial,
z up: posterior). The robot base stands at :data:`DEMO_BASE_POSE` in that frame, a pose chosen by
:func:`spine_nav.arm.layout.search_layout` so that the arm reaches both sides of every level. The
tracker sees robot and patient through the arm's true ``T_tracker_robotbase``::

    T_robotbase_reference = inv(T_table_robotbase) @ T_table_reference
    T_tracker_reference   = T_tracker_robotbase @ T_robotbase_reference
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spine_nav.arm.layout import BasePose, LayoutScore, evaluate_layout, robotbase_from_reference, search_layout
from spine_nav.geometry import compose, transform_to_quat
from spine_nav.plan import Plan

#: The demo's robot base in the Table frame of the plan: at the cranial end on the midline, 325 mm
#: cranial of the mean planned entry (~250 mm beyond the L1 entries), on an elevated cart column with
#: its mounting plane 200 mm above the mean entry (~145 mm above the patient's back, ~390 mm above
#: the table top), yaw facing the spine, so the arm sees left and right screws symmetrically.
#: Chosen with ``search_layout`` (standoff 25 mm, align()'s own seeds only, plans of ``generate_case``
#: mapped to Reference through the ground truth, L1-L5): seeds 0-4: 50/50 screws reached, worst
#: joint-limit margin 0.035 of range; seeds 0-9: 100/100 (margin 0.032); unseen seeds 10-19: 100/100
#: (0.031). Beside the table the best pose (patient's right, x +400, y +137.5, z +100 mm) had the larger
#: margin on seeds 0-4 (0.046) but misses a far-side L5 screw on 2-3 of every 10 other anatomies
#: (98/100 at best on seeds 0-9, 97/100 on 10-19); the left side was worse (91/100).
DEMO_BASE_POSE = BasePose("cranial", 0.0, 325.0, 200.0)


@dataclass(frozen=True)
class OrScene:
    T_tracker_robotbase: np.ndarray
    T_robotbase_reference: np.ndarray
    layout: LayoutScore | None = None  # how the base pose scored for this plan (None: not evaluated)

    @property
    def T_tracker_reference(self) -> np.ndarray:
        return compose(self.T_tracker_robotbase, self.T_robotbase_reference)


def layout_for_plan(plan_reference: Plan, T_tracker_robotbase: np.ndarray, kin=None, standoff_mm: float = 25.0,
                    pose: BasePose = DEMO_BASE_POSE, search: bool = True, log=None) -> OrScene:
    """Place the robot base at ``pose`` (Table frame of ``plan_reference``, a plan in Reference).

    The pose is checked with the arm's alignment IK for every screw (``kin``: an
    :class:`~spine_nav.arm.kinematics.ArmKinematics`, built from the URDF when None); if it does
    not reach them all and ``search`` is set, :func:`search_layout` looks for a better one for this
    plan (seconds) and the better of the two is used. ``OrScene.layout`` keeps the score."""
    if kin is None:
        from spine_nav.arm.kinematics import ArmKinematics
        from spine_nav.arm.model import load_arm_model

        kin = ArmKinematics(load_arm_model())
    score = evaluate_layout(kin, plan_reference, pose, None, standoff_mm)
    if not score.all_reached and search:
        if log is not None:
            log(f"layout: {score.summary()}\nlayout: searching a base pose for this plan")
        found = search_layout(kin, [plan_reference], None, standoff_mm, log=log).best
        if found.key > score.key:
            score = found
    return OrScene(T_tracker_robotbase=np.asarray(T_tracker_robotbase, float),
                   T_robotbase_reference=robotbase_from_reference(plan_reference, score.pose), layout=score)


def pose_params(T: np.ndarray, prefix: str) -> dict[str, list[float]]:
    """ROS parameters ``<prefix>_xyz_mm`` and ``<prefix>_quat_xyzw`` for a 4x4 transform."""
    q, t = transform_to_quat(T, order="xyzw")
    return {f"{prefix}_xyz_mm": [float(v) for v in t], f"{prefix}_quat_xyzw": [float(v) for v in q]}
