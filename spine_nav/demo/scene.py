"""The simulated operating room of the demo (pure; mm, frames as in spine_nav.geometry).

The patient lies prone in front of the robot: the phantom's Reference frame (CBCT LPS) is
placed so that posterior (+y in LPS) points up (+z of RobotBase) and the spine runs along
RobotBase +y, with the centre of the planned entry points ``entry_centre_robot_mm`` in front of
the base. The tracker sees robot and patient through the arm's true ``T_tracker_robotbase``::

    T_tracker_reference = T_tracker_robotbase @ T_robotbase_reference
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spine_nav.geometry import compose, make_transform, transform_to_quat
from spine_nav.plan import Plan

#: Reference (LPS) axes expressed in RobotBase: x (patient left) -> -x, y (posterior) -> +z
#: (up, patient prone), z (superior) -> +y. Columns are the images of the Reference axes.
R_ROBOTBASE_REFERENCE = np.array([[-1.0, 0.0, 0.0],
                                  [0.0, 0.0, 1.0],
                                  [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class OrScene:
    T_tracker_robotbase: np.ndarray
    T_robotbase_reference: np.ndarray

    @property
    def T_tracker_reference(self) -> np.ndarray:
        return compose(self.T_tracker_robotbase, self.T_robotbase_reference)


def layout_for_plan(plan_reference: Plan, T_tracker_robotbase: np.ndarray,
                    entry_centre_robot_mm=(530.0, 40.0, 120.0)) -> OrScene:
    """Place the patient so that the mean planned entry (Reference) lands at ``entry_centre_robot_mm``."""
    entries = np.array([s.entry_mm for s in plan_reference.screws])
    centre_ref = entries.mean(axis=0)
    t = np.asarray(entry_centre_robot_mm, float) - R_ROBOTBASE_REFERENCE @ centre_ref
    return OrScene(T_tracker_robotbase=np.asarray(T_tracker_robotbase, float),
                   T_robotbase_reference=make_transform(R_ROBOTBASE_REFERENCE, t))


def pose_params(T: np.ndarray, prefix: str) -> dict[str, list[float]]:
    """ROS parameters ``<prefix>_xyz_mm`` and ``<prefix>_quat_xyzw`` for a 4x4 transform."""
    q, t = transform_to_quat(T, order="xyzw")
    return {f"{prefix}_xyz_mm": [float(v) for v in t], f"{prefix}_quat_xyzw": [float(v) for v in q]}
