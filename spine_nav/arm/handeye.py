"""Robot-to-tracker registration by hand-eye calibration (OpenCV ``calibrateRobotWorldHandEye``).

OpenCV solves ``cTw * wTb = cTg * gTb`` for ``wTb`` and ``cTg``. spine_nav's mapping:

    world = Tracker, camera ("c") = ArmMarker, base = RobotBase, gripper = Flange
    inputs : cTw = T_armmarker_tracker = inv(tracker sample of the arm marker)
             gTb = T_flange_robotbase   = inv(FK of the flange at the encoder reading)
    outputs: wTb = T_tracker_robotbase, cTg = T_armmarker_flange

Units: mm (translations), as given. The residual is the RMS distance between each measured marker
position and the one predicted from the calibration and the joint reading.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from spine_nav.geometry import compose, invert, validate_transform


@dataclass(frozen=True)
class HandEyeResult:
    T_tracker_robotbase: np.ndarray
    T_flange_armmarker: np.ndarray
    residual_rms_mm: float
    residual_max_mm: float
    n_poses: int


def calibrate_robot_tracker(T_tracker_armmarker: Sequence[np.ndarray],
                            T_robotbase_flange: Sequence[np.ndarray]) -> HandEyeResult:
    """Hand-eye from paired samples (marker in the tracker, flange by FK), mm. Needs >= 3 poses with
    rotations about non-parallel axes; raises ValueError naming the problem."""
    if len(T_tracker_armmarker) != len(T_robotbase_flange):
        raise ValueError(f"hand-eye: {len(T_tracker_armmarker)} marker samples but {len(T_robotbase_flange)} flange poses")
    if len(T_tracker_armmarker) < 3:
        raise ValueError(f"hand-eye: need at least 3 poses, got {len(T_tracker_armmarker)}")
    R_w2c, t_w2c, R_b2g, t_b2g = [], [], [], []
    for i, (Tm, Tf) in enumerate(zip(T_tracker_armmarker, T_robotbase_flange)):
        c_T_w = invert(validate_transform(Tm, f"T_tracker_armmarker[{i}]"))
        g_T_b = invert(validate_transform(Tf, f"T_robotbase_flange[{i}]"))
        R_w2c.append(c_T_w[:3, :3]); t_w2c.append(c_T_w[:3, 3].reshape(3, 1))
        R_b2g.append(g_T_b[:3, :3]); t_b2g.append(g_T_b[:3, 3].reshape(3, 1))
    R_b2w, t_b2w, R_g2c, t_g2c = cv2.calibrateRobotWorldHandEye(
        R_w2c, t_w2c, R_b2g, t_b2g, method=cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH)
    T_tracker_robotbase = np.eye(4)
    T_tracker_robotbase[:3, :3], T_tracker_robotbase[:3, 3] = _orthonormal(R_b2w), t_b2w.ravel()
    T_marker_flange = np.eye(4)
    T_marker_flange[:3, :3], T_marker_flange[:3, 3] = _orthonormal(R_g2c), t_g2c.ravel()
    T_flange_marker = invert(T_marker_flange)
    res = np.array([np.linalg.norm(compose(T_tracker_robotbase, Tf, T_flange_marker)[:3, 3] - np.asarray(Tm)[:3, 3])
                    for Tm, Tf in zip(T_tracker_armmarker, T_robotbase_flange)])
    return HandEyeResult(T_tracker_robotbase, T_flange_marker, float(np.sqrt(np.mean(res**2))),
                         float(res.max()), len(res))


def _orthonormal(R: np.ndarray) -> np.ndarray:
    """Nearest rotation (SVD) to OpenCV's float result."""
    U, _, Vt = np.linalg.svd(np.asarray(R, dtype=float))
    D = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(U @ Vt)))])
    return U @ D @ Vt


def calibration_poses(q_center_rad: np.ndarray, n: int = 12, amplitude_rad: float = 0.35,
                      seed: int = 0) -> list[np.ndarray]:
    """Joint configurations for a calibration motion: ``q_center`` plus varied wrist/elbow
    rotations (so the rotation axes are not parallel, which hand-eye needs)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        dq = rng.uniform(-amplitude_rad, amplitude_rad, len(q_center_rad))
        out.append(np.asarray(q_center_rad, float) + dq)
    return out
