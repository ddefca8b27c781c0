"""The rod's target contour: a smooth 3D curve through the seats, extended straight past the ends.

Model: a natural cubic spline through the seats, parameterised by chord length (each coordinate is
the cubic spline that minimises the integral of its second derivative squared, i.e. the linearised
bending energy of an elastic rod pinned at the seats, with zero moment at the end seats). Beyond
the end seats the rod continues along the end tangents for ``overhang_mm`` (zero curvature, so the
curve stays C2 where the spline's natural ends meet the straight overhangs). Two seats give a
straight rod.

The curve is exposed by arc length ``s`` (mm) from the cranial rod end: ``point(s)``, ``tangent(s)``,
``curvature(s)`` (1/mm), with the seats at ``seat_s``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

#: Default straight rod length (mm) beyond each end seat; an assumption (typical 5-10 mm past the head).
OVERHANG_MM = 8.0
_SAMPLES_PER_MM = 4


@dataclass
class Contour:
    """Arc-length view of the seat spline with straight overhangs (plan frame, mm)."""

    seats_mm: np.ndarray
    overhang_mm: float

    def __post_init__(self) -> None:
        pts = np.asarray(self.seats_mm, float)
        chords = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        u = np.concatenate([[0.0], np.cumsum(chords)])
        self._spline = CubicSpline(u, pts, bc_type="natural") if len(pts) > 2 else None
        self._u_end = float(u[-1])
        n = max(int(self._u_end * _SAMPLES_PER_MM), 200)
        self._u = np.linspace(0.0, self._u_end, n + 1)
        p = self._eval(self._u, 0)
        self._s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        self.spline_length_mm = float(self._s[-1])
        self.length_mm = self.spline_length_mm + 2.0 * self.overhang_mm
        self.seat_s = self.overhang_mm + np.interp(u, self._u, self._s)
        self._t0 = self.tangent(self.overhang_mm)
        self._t1 = self.tangent(self.overhang_mm + self.spline_length_mm)

    def _eval(self, u: np.ndarray, nu: int) -> np.ndarray:
        if self._spline is not None:
            return self._spline(u, nu)
        a, b = np.asarray(self.seats_mm, float)
        if nu == 0:
            return a + np.outer(u / self._u_end, b - a)
        if nu == 1:
            return np.tile((b - a) / self._u_end, (len(np.atleast_1d(u)), 1))
        return np.zeros((len(np.atleast_1d(u)), 3))

    def _u_of(self, s: np.ndarray) -> np.ndarray:
        return np.interp(s - self.overhang_mm, self._s, self._u)

    def point(self, s) -> np.ndarray:
        """Points (N, 3) at arc lengths ``s`` (mm from the cranial end)."""
        s = np.atleast_1d(np.asarray(s, float))
        out = self._eval(self._u_of(s), 0)
        lo, hi = s < self.overhang_mm, s > self.overhang_mm + self.spline_length_mm
        if lo.any():
            out[lo] = self.seats_mm[0] + np.outer(s[lo] - self.overhang_mm, self._t0[0])
        if hi.any():
            out[hi] = self.seats_mm[-1] + np.outer(s[hi] - self.overhang_mm - self.spline_length_mm, self._t1[0])
        return out

    def tangent(self, s) -> np.ndarray:
        """Unit tangents (N, 3) at ``s`` (inside the spline range; constant on the overhangs)."""
        s = np.clip(np.atleast_1d(np.asarray(s, float)), self.overhang_mm, self.overhang_mm + self.spline_length_mm)
        d = self._eval(self._u_of(s), 1)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def curvature(self, s) -> np.ndarray:
        """Curvature |r' x r''| / |r'|^3 (1/mm) at ``s`` (0 on the overhangs)."""
        s = np.atleast_1d(np.asarray(s, float))
        u = self._u_of(s)
        d1, d2 = self._eval(u, 1), self._eval(u, 2)
        k = np.linalg.norm(np.cross(d1, d2), axis=1) / np.linalg.norm(d1, axis=1) ** 3
        k[(s < self.overhang_mm) | (s > self.overhang_mm + self.spline_length_mm)] = 0.0
        return k
