r"""Guard quantities: where the tool is relative to one planned screw (Reference frame, mm, deg).

Inputs (all in the ``Reference`` frame):

* planned screw: entry point ``E``, target ``T``; unit direction ``d = (T - E) / |T - E|``;
  planned depth ``L = |T - E|``.
* tool: ``T_reference_tooltip``; tip ``p`` = its translation, tool axis ``a`` = its z column
  (unit, along the shaft toward the tip).

Sketch (plane of the planned line and the tip)::

                   entry plane (through E, normal d)
                          |
        tool axis a       |
            \             |
             \ p (tip)    |                      depth stop = L + depth_margin_mm
              o . . . . . | . . . . . . . . . . . . . . . . . . . . |
              :\  lateral |                                         |
              : \  error  |                                         |
   ---- -depth:--\--------E=================================T-------+---->  d (planned)
         (<0) :   \  C    |<------------ L ---------------->|
                   \ |    |                                 |  Q = p + s'a (tip if it
          C = axis crosses the entry plane                  |      advances along a to depth L)
          entry_offset = |C - E|                            predicted_tip_error = |Q - T|

Definitions (written once, here; docs/guard.md repeats them):

* ``depth_mm = (p - E) . d``: tip progression along the planned direction from the entry
  point, negative before the entry plane.
* ``remaining_mm = L - depth_mm``.
* ``lateral_error_mm = |(p - E) - depth_mm * d|``: distance from the tip to the planned
  (infinite) line.
* ``angular_error_deg = atan2(|a x d|, a . d)``: angle between tool axis and planned
  direction, 0..180 (180 = pointing backwards).
* ``entry_offset_mm = |C - E|`` with ``C = p + s a``, ``s = -depth_mm / (a . d)``: the tool
  axis (as an infinite line) crossing the entry plane, vs the entry point. ``inf`` when the
  tool is parallel to the entry plane (``|a . d| < 1e-9``, i.e. perpendicular to the
  trajectory): the axis never crosses.
* ``predicted_tip_error_mm = |Q - T|`` with ``Q = p + s' a``, ``s' = remaining_mm / (a . d)``:
  where the tip ends when it advances along its own axis until it reaches the planned depth.
  ``inf`` when ``a . d <= 1e-9`` (perpendicular or pointing backwards: advancing never
  reaches the planned depth).

Implementation choice: the per-sample path is scalar float arithmetic on geometry precomputed per
screw (:class:`ScrewGeometry`), in C when the extension ``spine_nav/guard/_judge.c`` is built
(:mod:`spine_nav.guard.native`), else in plain Python floats (``math`` module, tuples). The plain-Python
functions (:func:`compute_metrics_py`, :func:`tip_and_axis_from_quat_py`) DEFINE the results: the C
functions compute the same expressions in the same order and are tested to give the same bits
(tests/test_native_guard.py); anything unusual (a failed check, an input that is not floats) is left to
the Python twin, which raises its PoseError as before. numpy costs ~1 us per call on 3-vectors, and one
evaluation needs ~15 vector ops, so numpy would spend ~15 us in call overhead alone; the plain-Python
version takes ~2-3 us, the C one a fraction of a microsecond plus its call (docs/performance.md "The
guard's geometry in C"; :func:`compute_metrics_numpy` is the numpy reference, also used as a test oracle).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Sequence

import numpy as np

from spine_nav.geometry import (ORTHONORMAL_TOL, QUAT_NORM_TOL, NotRigidError, angle_between_deg, rigid_rows,
                                unit_quat_xyzw)
from spine_nav.guard import native
from spine_nav.plan import Screw

#: |a . d| below this counts as "tool axis parallel to the entry plane".
PARALLEL_EPS = 1e-9

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class ScrewGeometry:
    """One planned trajectory, precomputed as plain floats (Reference frame, mm)."""

    screw_id: str
    entry: Vec3
    target: Vec3
    direction: Vec3
    depth_mm: float
    navigable: bool = True
    status_reason: str = ""

    @classmethod
    def from_screw(cls, screw: Screw, navigable: bool = True, status_reason: str = "") -> "ScrewGeometry":
        e = tuple(float(v) for v in screw.entry_mm)
        t = tuple(float(v) for v in screw.target_mm)
        d = tuple(float(v) for v in screw.direction)
        return cls(screw.id, e, t, d, screw.depth_mm, navigable, status_reason)  # type: ignore[arg-type]

    @cached_property
    def packed(self) -> tuple[float, ...]:
        """(entry xyz, direction xyz, target xyz, depth_mm): what the C ``metrics`` reads, built once per screw
        (a cached_property: stored in the instance's ``__dict__``, which the frozen dataclass allows)."""
        return (*self.entry, *self.direction, *self.target, self.depth_mm)


class GuardMetrics(NamedTuple):
    """The guard quantities for one sample against one screw (see module docstring).

    A NamedTuple (immutable, and ~5x cheaper to build than a frozen dataclass on the hot path).
    """

    lateral_error_mm: float
    entry_offset_mm: float
    angular_error_deg: float
    depth_mm: float
    remaining_mm: float
    predicted_tip_error_mm: float
    tip_to_entry_mm: float


NAN_METRICS = GuardMetrics(*(math.nan,) * 7)

#: ``tuple.__new__``: builds a NamedTuple from a tuple of all its fields in one C call, without the Python-level
#: ``__new__`` that ``GuardMetrics(...)`` runs (one Python call less per sample on the 1 kHz path; the caller
#: passes every field, in order)
new_named_tuple = tuple.__new__

# the C functions' constants, from their definitions here (they decline until configured)
native.configure(native.judge, QUAT_NORM_TOL, PARALLEL_EPS, GuardMetrics)


def compute_metrics(g: ScrewGeometry, tip: Sequence[float], axis: Sequence[float]) -> GuardMetrics:
    """Guard quantities for tool ``tip`` (mm) and unit ``axis`` against screw ``g``: the C twin when built
    (:mod:`spine_nav.guard.native`), else (or for inputs it declines) :func:`compute_metrics_py`, same bits."""
    judge = native.judge
    m = None if judge is None else judge.metrics(g.packed, tip, axis)
    return compute_metrics_py(g, tip, axis) if m is None else m


def compute_metrics_py(g: ScrewGeometry, tip: Sequence[float], axis: Sequence[float]) -> GuardMetrics:
    """Guard quantities for tool ``tip`` (mm) and unit ``axis`` against screw ``g`` (plain math). The definition
    of the C ``_judge.metrics``: change both together (products, not ``**2``; the same order)."""
    ex, ey, ez = g.entry
    dx, dy, dz = g.direction
    px, py, pz = tip
    ax, ay, az = axis
    vx, vy, vz = px - ex, py - ey, pz - ez
    depth = vx * dx + vy * dy + vz * dz
    lx, ly, lz = vx - depth * dx, vy - depth * dy, vz - depth * dz
    lateral = math.sqrt(lx * lx + ly * ly + lz * lz)
    cos_a = ax * dx + ay * dy + az * dz
    cx, cy, cz = ay * dz - az * dy, az * dx - ax * dz, ax * dy - ay * dx
    angle = math.degrees(math.atan2(math.sqrt(cx * cx + cy * cy + cz * cz), cos_a))
    remaining = g.depth_mm - depth
    if abs(cos_a) < PARALLEL_EPS:
        entry_offset = math.inf
    else:
        s = -depth / cos_a
        ox, oy, oz = vx + s * ax, vy + s * ay, vz + s * az
        entry_offset = math.sqrt(ox * ox + oy * oy + oz * oz)
    if cos_a <= PARALLEL_EPS:
        predicted = math.inf
    else:
        s = remaining / cos_a
        tx, ty, tz = g.target
        qx, qy, qz = px + s * ax - tx, py + s * ay - ty, pz + s * az - tz
        predicted = math.sqrt(qx * qx + qy * qy + qz * qz)
    return new_named_tuple(GuardMetrics, (lateral, entry_offset, angle, depth, remaining, predicted,
                                          math.sqrt(vx * vx + vy * vy + vz * vz)))


def compute_metrics_numpy(screw: Screw, T_reference_tooltip: np.ndarray) -> GuardMetrics:
    """The same quantities with numpy and :mod:`spine_nav.geometry` (reference / test oracle; slower)."""
    T = np.asarray(T_reference_tooltip, dtype=float)
    p, a = T[:3, 3], T[:3, 2]
    e, t, d, L = screw.entry_mm, screw.target_mm, screw.direction, screw.depth_mm
    v = p - e
    depth = float(v @ d)
    lateral = float(np.linalg.norm(v - depth * d))
    cos_a = float(a @ d)
    angle = angle_between_deg(a, d)
    entry_offset = math.inf if abs(cos_a) < PARALLEL_EPS else float(np.linalg.norm(p + (-depth / cos_a) * a - e))
    predicted = math.inf if cos_a <= PARALLEL_EPS else float(np.linalg.norm(p + ((L - depth) / cos_a) * a - t))
    return GuardMetrics(lateral, entry_offset, angle, depth, L - depth, predicted, float(np.linalg.norm(v)))


def axis_segment_mm(tip: Sequence[float], axis: Sequence[float], length_mm: float) -> tuple[Vec3, Vec3]:
    """(point ``length_mm`` back along the tool axis, tip): the tool shaft for displays (mm)."""
    return (tip[0] - length_mm * axis[0], tip[1] - length_mm * axis[1], tip[2] - length_mm * axis[2]), \
        (tip[0], tip[1], tip[2])


class PoseError(ValueError):
    """A tool pose that cannot be judged (non-finite, wrong shape, not a rigid transform)."""


def tip_and_axis(T_reference_tooltip: object, tol: float = ORTHONORMAL_TOL) -> tuple[Vec3, Vec3]:
    """Tip position (mm) and unit tool axis (z column) from a 4x4 pose, after checking it with
    :func:`spine_nav.geometry.rigid_rows` at ``tol`` (the checks of ``validate_transform`` in plain
    floats: the numpy version costs ~15 us, more than the whole evaluation budget of 20 us).
    Raises :class:`PoseError` naming the failed check."""
    try:
        (r0, r1, r2) = rigid_rows(T_reference_tooltip, "tool pose", tol)
    except NotRigidError as exc:
        raise PoseError(str(exc)) from None
    return (r0[3], r1[3], r2[3]), (r0[2], r1[2], r2[2])


def tip_and_axis_from_quat(q_xyzw: Sequence[float], t_mm: Sequence[float]) -> tuple[Vec3, Vec3]:
    """:func:`tip_and_axis_from_quat_py` through the C twin when built (:mod:`spine_nav.guard.native`; same bits);
    anything the C declines (a failed check, an input that is not floats) runs the Python twin, which raises."""
    judge = native.judge
    pose = None if judge is None else judge.tip_axis_quat(q_xyzw, t_mm)
    return tip_and_axis_from_quat_py(q_xyzw, t_mm) if pose is None else pose


def tip_and_axis_from_quat_py(q_xyzw: Sequence[float], t_mm: Sequence[float]) -> tuple[Vec3, Vec3]:
    """Tip (mm) and unit tool axis from a quaternion (order ``xyzw``) and translation, checked with
    :func:`spine_nav.geometry.unit_quat_xyzw` (the rules of ``transform_from_quat`` in plain floats:
    the scipy path costs ~100 us per sample, this ~1 us). The axis is the third column of the
    rotation matrix, ``(2(xz + wy), 2(yz - wx), 1 - 2(x^2 + y^2))``. The definition of the C
    ``_judge.tip_axis_quat``, and the one that raises :class:`PoseError` with its message."""
    try:
        px, py, pz = t_mm
        total = float(px + py + pz)
    except (TypeError, ValueError):
        raise PoseError(f"tool pose: expected a translation of 3 numbers, got {t_mm!r}") from None
    if not math.isfinite(total):
        raise PoseError("tool pose: contains non-finite values (NaN or inf)")
    try:
        x, y, z, w = unit_quat_xyzw(q_xyzw, "tool pose quaternion")
    except ValueError as exc:
        raise PoseError(str(exc)) from None
    return (px, py, pz), (2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y))
