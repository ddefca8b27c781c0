"""Pivot calibration: the tool tip offset from poses of a tool pivoting about its fixed tip.

Method: the standard algebraic least-squares pivot calibration (as in PLUS
``vtkPlusPivotCalibrationAlgo`` and scikit-surgery ``pivot_calibration``; compared in Yaniv,
"Which pivot calibration?", SPIE 2015). For every pose ``T_tracker_tool = [R_i | p_i]`` the tip is
the same tracker point::

    R_i @ tip_tool + p_i = pivot_tracker   ->   [R_i  -I] [tip_tool; pivot_tracker] = -p_i

stacked over all poses and solved with ``numpy.linalg.lstsq`` (3N x 6). Residual per pose:
``|R_i tip + p_i - pivot|`` (mm); RMS reported. Rejected (``PivotError``) with a clear message:
too few poses, a rotation span below ``min_span_deg`` (a static or barely moving tool leaves the
problem ill-conditioned), or a rank-deficient system.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from spine_nav.geometry import validate_transform


class PivotError(ValueError):
    pass


@dataclass(frozen=True)
class PivotResult:
    tip_offset_mm: np.ndarray       # tip in the Tool frame (mm)
    pivot_point_mm: np.ndarray      # pivot in the poses' base frame (Tracker, or Reference for T_reference_tool), mm
    rms_residual_mm: float
    max_residual_mm: float
    rotation_span_deg: float        # largest angle of any pose from the mean orientation, x2
    n_poses: int

    def to_dict(self) -> dict:
        return {"tip_offset_mm": [round(float(x), 4) for x in self.tip_offset_mm],
                "pivot_point_mm": [round(float(x), 4) for x in self.pivot_point_mm],
                "rms_residual_mm": round(self.rms_residual_mm, 4), "max_residual_mm": round(self.max_residual_mm, 4),
                "rotation_span_deg": round(self.rotation_span_deg, 2), "n_poses": self.n_poses}


def rotation_span_deg(rotations: np.ndarray) -> float:
    """Twice the largest angle between any pose's rotation and the mean rotation (deg)."""
    rot = Rotation.from_matrix(rotations)
    mean = rot.mean()
    return float(2.0 * np.degrees(np.max((mean.inv() * rot).magnitude())))


def pivot_calibration(T_tracker_tool: np.ndarray | list, min_poses: int = 10,
                      min_span_deg: float = 20.0) -> PivotResult:
    """Tip offset (Tool frame) and pivot (base frame) from N poses ``T_base_tool`` (mm; base = Tracker or Reference)."""
    mats = [validate_transform(T, f"pose[{i}]") for i, T in enumerate(T_tracker_tool)]
    n = len(mats)
    if n < min_poses:
        raise PivotError(f"pivot calibration needs at least {min_poses} poses, got {n}")
    R = np.stack([m[:3, :3] for m in mats])
    p = np.stack([m[:3, 3] for m in mats])
    span = rotation_span_deg(R)
    if span < min_span_deg:
        raise PivotError(f"pivot motion too small: the tool rotated over {span:.1f} deg, need >= {min_span_deg:g} deg "
                         "(pivot the tool about its tip in a cone of at least +/-15 deg)")
    A = np.zeros((3 * n, 6))
    A[:, :3] = R.reshape(3 * n, 3)
    A[:, 3:] = np.tile(-np.eye(3), (n, 1))
    x, _, rank, _ = np.linalg.lstsq(A, -p.reshape(-1), rcond=None)
    if rank < 6:
        raise PivotError(f"pivot calibration is ill-conditioned (rank {rank} < 6): rotate about more than one axis")
    tip, pivot = x[:3], x[3:]
    res = np.linalg.norm(np.einsum("nij,j->ni", R, tip) + p - pivot, axis=1)
    return PivotResult(tip, pivot, float(np.sqrt(np.mean(res ** 2))), float(res.max()), span, n)


def synthetic_pivot_poses(rng: np.random.Generator, tip_offset_mm, pivot_mm, n: int = 200, cone_deg: float = 30.0,
                          noise_mm: float = 0.0) -> list[np.ndarray]:
    """Poses ``T_tracker_tool`` of a tool pivoting about ``pivot_mm`` within a cone (tests, demo)."""
    out = []
    tip = np.asarray(tip_offset_mm, dtype=float)
    for _ in range(n):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        Rm = Rotation.from_rotvec(axis * np.radians(rng.uniform(0, cone_deg))).as_matrix()
        T = np.eye(4)
        T[:3, :3] = Rm
        T[:3, 3] = np.asarray(pivot_mm, dtype=float) - Rm @ tip + rng.normal(scale=noise_mm, size=3)
        out.append(T)
    return out
