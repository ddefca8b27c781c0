"""Parameter helpers shared by the nodes (declare + validate, one message format for bad values)."""
from __future__ import annotations

import numpy as np
from rclpy.node import Node

from spine_nav.geometry import transform_from_quat, transform_to_quat


def declare_pose_parameter(node: Node, prefix: str, default_T_mm: np.ndarray | None = None) -> np.ndarray:
    """Declare ``<prefix>_xyz_mm`` (float[3]) + ``<prefix>_quat_xyzw`` (float[4]) and return the 4x4 (mm).

    ``prefix`` names the transform in the T_a_b convention, e.g. ``tracker_robotbase`` for
    T_tracker_robotbase. Raises ValueError naming both parameters when the values are not a rigid pose
    (wrong length, NaN, zero quaternion).
    """
    q0, t0 = transform_to_quat(np.eye(4) if default_T_mm is None else default_T_mm, order="xyzw")
    xyz_name, quat_name = f"{prefix}_xyz_mm", f"{prefix}_quat_xyzw"
    xyz = list(node.declare_parameter(xyz_name, [float(x) for x in t0]).value)
    quat = list(node.declare_parameter(quat_name, [float(x) for x in q0]).value)
    try:
        return transform_from_quat(quat, xyz, order="xyzw")
    except ValueError as exc:
        raise ValueError(f"{node.get_name()}: parameters {xyz_name}={xyz} / {quat_name}={quat}: {exc}") from None
