"""Alpha-beta filter of the patient reference pose (tracker frame, mm, s).

Hand-written (15 lines) because it must run per tracker sample with no allocation-heavy
library call: it smooths tracker noise on the translation and estimates its velocity, so the
servo can predict the reference at its own cycle time (compensates sample latency and the
filter's lag on breathing motion).

The rotation is smoothed too (exponential, ``rotation_alpha`` of the way toward each new sample on the
geodesic): an optical tracker re-fits the array pose from noisy marker positions every frame, so its
rotation jitters (0.15 mm per marker on the simulator's ~50 mm arrays: ~0.05-0.1 deg), and the screw
sits 100-200 mm from the array origin, so unfiltered the guide followed 0.3-0.7 mm of that jitter in
the demo (measured: 0.02-0.06 mm with the tracker noise off, 0.25-0.7 mm with it on). Breathing is a
translation; a real rotation change is slow (repositioning) or a bump, which the bridge's jump
detector turns into TRACKING_LOST anyway.
"""
from __future__ import annotations

import math

import numpy as np

from spine_nav.geometry import rigid_rows, rotation_rows_to_quat_xyzw, unit_quat_xyzw_to_rows


class ReferenceFilter:
    max_horizon_s = 0.05  # never extrapolate further than this past the last sample

    def __init__(self, alpha: float = 0.35, beta: float = 0.05, rotation_alpha: float = 0.1) -> None:
        if not (0 < alpha <= 1 and 0 <= beta < 2 and 0 < rotation_alpha <= 1):
            raise ValueError(f"alpha/beta/rotation_alpha: need 0 < alpha <= 1, 0 <= beta < 2, 0 < rotation_alpha <= 1, "
                             f"got {alpha}, {beta}, {rotation_alpha}")
        self.alpha, self.beta, self.rotation_alpha = alpha, beta, rotation_alpha
        self.T: np.ndarray | None = None
        self.v_mm_s = np.zeros(3)
        self.stamp_s: float | None = None
        self._q: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)  # filtered rotation, xyzw

    def update(self, T_tracker_reference: np.ndarray, stamp_s: float) -> None:
        """One tracker sample (4x4 mm, tracker time s); runs under the controller's lock, once per sample.

        Plain floats where numpy/scipy would dominate: the full validation + two scipy Rotations took
        ~360 us here, holding the servo's lock; the rigid check on the 12 floats + quaternion
        normalised lerp (the same as slerp for the tiny steps between samples) take ~30 us."""
        T = np.asarray(T_tracker_reference, dtype=float)
        rows = rigid_rows(T, "T_tracker_reference")
        if self.T is None or self.stamp_s is None or stamp_s <= self.stamp_s:
            if self.T is None or stamp_s > (self.stamp_s or -np.inf) + 1.0:
                self.T, self.v_mm_s, self.stamp_s = T.copy(), np.zeros(3), stamp_s
                self._q = rotation_rows_to_quat_xyzw(rows)
            return
        dt = stamp_s - self.stamp_s
        pred = self.T[:3, 3] + self.v_mm_s * dt
        r = T[:3, 3] - pred
        new = T.copy()
        new[:3, 3] = pred + self.alpha * r
        if self.rotation_alpha < 1.0:
            q0, q1, a = self._q, rotation_rows_to_quat_xyzw(rows), self.rotation_alpha
            if q0[0] * q1[0] + q0[1] * q1[1] + q0[2] * q1[2] + q0[3] * q1[3] < 0.0:
                q1 = (-q1[0], -q1[1], -q1[2], -q1[3])
            q = [(1.0 - a) * u + a * w for u, w in zip(q0, q1)]
            n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
            self._q = (q[0] / n, q[1] / n, q[2] / n, q[3] / n)
            new[:3, :3] = unit_quat_xyzw_to_rows(*self._q)
        self.v_mm_s = self.v_mm_s + (self.beta / dt) * r
        self.T, self.stamp_s = new, stamp_s

    def predict(self, t_s: float, max_horizon_s: float | None = None) -> np.ndarray:
        """Filtered ``T_tracker_reference`` extrapolated to ``t_s`` (at most ``max_horizon_s`` ahead)."""
        if self.T is None:
            raise ValueError("reference filter: no sample yet")
        T = self.T.copy()
        h = self.max_horizon_s if max_horizon_s is None else max_horizon_s
        T[:3, 3] += self.v_mm_s * float(np.clip(t_s - self.stamp_s, 0.0, h))
        return T
