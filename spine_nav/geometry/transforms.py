"""Rigid transforms: the one place spine_nav's frame convention is written down.

Convention (used everywhere in spine_nav, never re-derived elsewhere)
--------------------------------------------------------------------
``T_a_b`` is a 4x4 homogeneous matrix that maps coordinates expressed in frame
``b`` to coordinates expressed in frame ``a``::

    p_a = T_a_b @ p_b            (p as homogeneous column [x, y, z, 1])

PLUS / OpenIGTLink call the same matrix ``BToA`` (e.g. ``StylusToTracker`` is
``T_tracker_stylus``). Transforms compose right to left, frames cancel in the
middle::

    T_reference_tool = T_reference_tracker @ T_tracker_tool
                     = invert(T_tracker_reference) @ T_tracker_tool

Units: the core works in millimetres (translations in mm, names end in
``_mm``); ROS messages use metres (REP-103) and the conversion happens only at
the ROS boundary (:mod:`spine_nav.nodes.conversions`) with :func:`mm_to_m` /
:func:`m_to_mm`.

Quaternions carry an explicit ``order`` argument everywhere: ``"xyzw"`` (ROS
``geometry_msgs/Quaternion``, OpenIGTLink POSITION ``OX OY OZ W``, scipy) or
``"wxyz"`` (transforms3d, MuJoCo, Eigen's constructor).

Every public function validates its input and raises :class:`ValueError` with
the name of the offending argument; nothing here returns a silently wrong
result for NaN, a non-orthonormal rotation or a wrong shape.
"""
from __future__ import annotations

import math
from typing import Iterable, Literal

import numpy as np
from scipy.spatial.transform import Rotation

QuatOrder = Literal["xyzw", "wxyz"]

#: The one rigidity tolerance of spine_nav (:func:`validate_transform`, its fast path :func:`rigid_rows`,
#: :func:`validate_rotation`, :func:`is_rigid`): max abs of ``R.T @ R - I`` and of the bottom row's
#: departure from ``[0, 0, 0, 1]``. float32 OpenIGTLink matrices are orthonormal to ~1e-6; 1e-4 leaves
#: 100x headroom for them while rejecting any real shear or scale (a 0.01 % scale error, 0.02 mm over
#: 200 mm). The bridge, the arm and the guard all check wire poses at this one value, so a pose the
#: bridge passes on is never refused downstream for being "less rigid".
ORTHONORMAL_TOL = 1e-4


class NotRigidError(ValueError):
    """Raised by the rigidity check (:func:`validate_transform`, :func:`validate_rotation`,
    :func:`rigid_rows`); ``kind`` is ``"non-finite"`` (NaN/inf, wrong shape, not numbers) or
    ``"non-rigid"`` (bottom row, orthonormality, reflection). A :class:`ValueError`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


MM_PER_M = 1000.0


def _as_float_array(value: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not numeric ({exc})") from None
    return arr


def validate_rotation(R: object, name: str = "rotation", tol: float = ORTHONORMAL_TOL) -> np.ndarray:
    """Return ``R`` as a float 3x3 array after checking it is a proper rotation.

    Raises ValueError naming ``name`` when the shape is not 3x3, a value is not
    finite, the columns are not orthonormal within ``tol`` or ``det(R) != +1``
    (a reflection).
    """
    arr = _finite_matrix(R, name, 3, "a 3x3 rotation matrix")
    _check_rotation(arr, name, tol)
    return arr


def _finite_matrix(value: object, name: str, n: int, what: str) -> np.ndarray:
    """``value`` as a finite float n x n array, or NotRigidError (kind ``"non-finite"``) naming ``name``."""
    try:
        arr = _as_float_array(value, name)
    except ValueError as exc:
        raise NotRigidError("non-finite", str(exc)) from None
    if arr.shape != (n, n):
        raise NotRigidError("non-finite", f"{name}: expected {what}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NotRigidError("non-finite", f"{name}: contains non-finite values (NaN or inf)")
    return arr


def _check_rotation(R: np.ndarray, name: str, tol: float) -> None:
    """Orthonormal within ``tol`` and ``det > 0`` (a finite 3x3 float array)."""
    ortho_err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if ortho_err > tol:
        raise NotRigidError(
            "non-rigid", f"{name}: rotation is not orthonormal (max |R^T R - I| = {ortho_err:.3g} > {tol:.1g})")
    det = float(np.linalg.det(R))
    if det <= 0.0:
        raise NotRigidError("non-rigid", f"{name}: rotation has det = {det:.4f} (a reflection, expected +1)")


def validate_transform(T: object, name: str = "transform", tol: float = ORTHONORMAL_TOL) -> np.ndarray:
    """Return ``T`` as a float 4x4 array after checking it is a rigid transform: THE rigidity check.

    Checks, in this order: shape 4x4 and all values finite (kind ``"non-finite"``), bottom row
    ``[0, 0, 0, 1]`` within ``tol``, upper-left 3x3 orthonormal within ``tol`` with ``det > 0``
    (kind ``"non-rigid"``). Raises :class:`NotRigidError` (a ValueError) naming ``name`` and the failed
    check. :func:`rigid_rows` is the same check in plain floats for the 1 kHz paths (tests/test_geometry.py
    holds them to the same verdict on random and borderline matrices).
    """
    arr = _finite_matrix(T, name, 4, "a 4x4 matrix of numbers")
    if np.max(np.abs(arr[3] - np.array([0.0, 0.0, 0.0, 1.0]))) > tol:
        raise NotRigidError("non-rigid", f"{name}: bottom row must be [0, 0, 0, 1], got {arr[3].tolist()}")
    _check_rotation(arr[:3, :3], f"{name} rotation part", tol)
    return arr


def is_rigid(T: object, tol: float = ORTHONORMAL_TOL) -> bool:
    """True when :func:`validate_transform` would accept ``T``."""
    try:
        validate_transform(T, tol=tol)
    except ValueError:
        return False
    return True


def rigid_rows(m: object, name: str = "transform", tol: float = ORTHONORMAL_TOL) -> list[list[float]]:
    """The fast path of :func:`validate_transform`: the same checks (4x4; finite; bottom row 0 0 0 1;
    orthonormal rotation within ``tol``, det > 0), the same tolerance and the same error kinds in plain
    Python floats, returning the first three rows as lists.

    The one plain-float rigid check of the 1 kHz paths (tracker bridge, the arm's reference filter and
    marker check, the guard's pose check): numpy calls on 4x4 arrays cost ~10x more there. ``m``: a
    4x4 ndarray or nested sequence. Raises :class:`NotRigidError` naming ``name`` and the failed check."""
    try:
        rows = m.tolist() if isinstance(m, np.ndarray) else [list(r) for r in m]  # type: ignore[union-attr]
        (a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (b0, b1, b2, b3) = rows
        # one sum propagates any NaN/inf (inf - inf is NaN too): a single finiteness test
        total = a00 + a01 + a02 + a03 + a10 + a11 + a12 + a13 + a20 + a21 + a22 + a23 + b0 + b1 + b2 + b3
    except (TypeError, ValueError):
        shape = getattr(m, "shape", None)
        raise NotRigidError("non-finite", f"{name}: expected a 4x4 matrix of numbers"
                                          + (f", got shape {shape}" if shape is not None else "")) from None
    if not math.isfinite(total):
        raise NotRigidError("non-finite", f"{name}: contains non-finite values (NaN or inf)")
    if abs(b0) > tol or abs(b1) > tol or abs(b2) > tol or abs(b3 - 1.0) > tol:
        raise NotRigidError("non-rigid", f"{name}: bottom row must be [0, 0, 0, 1], got {[b0, b1, b2, b3]}")
    err = max(abs(a00 * a00 + a10 * a10 + a20 * a20 - 1.0), abs(a01 * a01 + a11 * a11 + a21 * a21 - 1.0),
              abs(a02 * a02 + a12 * a12 + a22 * a22 - 1.0), abs(a00 * a01 + a10 * a11 + a20 * a21),
              abs(a00 * a02 + a10 * a12 + a20 * a22), abs(a01 * a02 + a11 * a12 + a21 * a22))
    if err > tol:
        raise NotRigidError("non-rigid", f"{name}: rotation is not orthonormal (max |R^T R - I| = {err:.3g} > {tol:.1g})")
    det = a00 * (a11 * a22 - a21 * a12) - a10 * (a01 * a22 - a21 * a02) + a20 * (a01 * a12 - a11 * a02)
    if det <= 0.0:
        raise NotRigidError("non-rigid", f"{name}: rotation has det = {det:.4f} (a reflection, expected +1)")
    del rows[3]
    return rows


def unit_quat_xyzw(q_xyzw: object, name: str = "quaternion") -> tuple[float, float, float, float]:
    """The checks of :func:`transform_from_quat` on a quaternion (order ``xyzw``) in plain floats:
    4 finite numbers of norm 1 within :data:`QUAT_NORM_TOL`; returns it renormalised. ~1 us instead of
    ~100 us through scipy on the 1 kHz paths. Raises ValueError naming ``name`` and the problem."""
    try:
        x, y, z, w = q_xyzw  # type: ignore[misc]
        n = math.sqrt(x * x + y * y + z * z + w * w)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected 4 numbers (order xyzw), got {q_xyzw!r}") from None
    if not math.isfinite(n):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")
    if abs(n - 1.0) > QUAT_NORM_TOL:
        raise ValueError(f"{name}: norm {n:.6f} is not 1 (order xyzw, tolerance {QUAT_NORM_TOL})")
    return x / n, y / n, z / n, w / n


def validate_points(points: object, name: str = "points") -> np.ndarray:
    """Return an (N, 3) float array of finite points, or raise ValueError.

    A single point of shape (3,) is accepted and returned as shape (1, 3).
    """
    arr = _as_float_array(points, name)
    if arr.shape == (3,):
        arr = arr.reshape(1, 3)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (N, 3) or (3,), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")
    return arr


def _validate_vector(v: object, name: str, n: int) -> np.ndarray:
    """Return a finite float vector of shape (n,), or raise ValueError naming ``name``."""
    arr = _as_float_array(v, name)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected {n} values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")
    return arr


def validate_vector3(v: object, name: str = "vector") -> np.ndarray:
    """Return a finite float vector of shape (3,), or raise ValueError."""
    return _validate_vector(v, name, 3)


def make_transform(rotation: object = None, translation_mm: object = None) -> np.ndarray:
    """Build ``T`` from a 3x3 rotation (default identity) and a translation (default 0)."""
    T = np.eye(4)
    if rotation is not None:
        T[:3, :3] = validate_rotation(rotation)
    if translation_mm is not None:
        T[:3, 3] = validate_vector3(translation_mm, "translation_mm")
    return T


def invert(T_a_b: object, name: str = "T_a_b") -> np.ndarray:
    """Return ``T_b_a`` for a rigid ``T_a_b`` (closed form: ``[R^T, -R^T t]``)."""
    T = validate_transform(T_a_b, name)
    R = T[:3, :3]
    t = T[:3, 3]
    inv = np.eye(4)
    inv[:3, :3] = R.T
    inv[:3, 3] = -R.T @ t
    return inv


def compose(*transforms: object) -> np.ndarray:
    """Compose rigid transforms left to right as written: ``compose(T_a_b, T_b_c) == T_a_c``."""
    if not transforms:
        raise ValueError("compose: needs at least one transform")
    result = np.eye(4)
    for i, T in enumerate(transforms):
        result = result @ validate_transform(T, f"compose argument {i}")
    return result


def transform_points(T_a_b: object, points_b: object) -> np.ndarray:
    """Map points (N, 3) or (3,) from frame b to frame a. Returns the same shape as given."""
    T = validate_transform(T_a_b, "T_a_b")
    single = np.asarray(points_b).shape == (3,)
    pts = validate_points(points_b, "points_b")
    out = pts @ T[:3, :3].T + T[:3, 3]
    return out[0] if single else out


def transform_directions(T_a_b: object, directions_b: object) -> np.ndarray:
    """Rotate direction vectors (N, 3) or (3,) from frame b to frame a (no translation)."""
    T = validate_transform(T_a_b, "T_a_b")
    single = np.asarray(directions_b).shape == (3,)
    dirs = validate_points(directions_b, "directions_b")
    out = dirs @ T[:3, :3].T
    return out[0] if single else out


def _check_order(order: str) -> None:
    if order not in ("xyzw", "wxyz"):
        raise ValueError(f"quaternion order must be 'xyzw' or 'wxyz', got {order!r}")


#: a quaternion whose norm is further than this from 1 is refused (then renormalised)
QUAT_NORM_TOL = 1e-3


def quat_to_matrix(q: object, order: QuatOrder) -> np.ndarray:
    """3x3 rotation from a quaternion given in ``order`` (``"xyzw"`` or ``"wxyz"``).

    The quaternion must be finite and of norm 1 within ``QUAT_NORM_TOL`` (it is then
    renormalised); a zero or far-from-unit quaternion raises ValueError, since
    it means the sender got something wrong. Plain arithmetic, not scipy: this
    runs per tracker sample in every node (scipy's Rotation costs ~100 us here).
    """
    _check_order(order)
    arr = validate_vector4(q, "quaternion")
    norm = math.sqrt(float(arr @ arr))
    if abs(norm - 1.0) > QUAT_NORM_TOL:
        raise ValueError(f"quaternion: norm {norm:.6f} is not 1 (order {order})")
    if order == "xyzw":
        x, y, z, w = (arr / norm).tolist()
    else:
        w, x, y, z = (arr / norm).tolist()
    return np.array(unit_quat_xyzw_to_rows(x, y, z, w))


# --- plain-float forms for per-sample hot paths (no checks: the caller has validated its input) ---

def unit_quat_xyzw_to_rows(x: float, y: float, z: float, w: float) -> list[list[float]]:
    """Rotation matrix rows of a UNIT quaternion (x, y, z, w), as Python floats."""
    return [[1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)]]


def rotation_rows_to_quat_xyzw(rows) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w), w >= 0, of an already validated rotation given as its first three
    rows (extra columns, e.g. a 3x4 transform's translation, are ignored). Shepperd's method."""
    (r00, r01, r02, *_), (r10, r11, r12, *_), (r20, r21, r22, *_) = rows
    tr = r00 + r11 + r22
    if tr > 0.0:
        s = 2.0 * math.sqrt(tr + 1.0)
        x, y, z, w = (r21 - r12) / s, (r02 - r20) / s, (r10 - r01) / s, 0.25 * s
    elif r00 > r11 and r00 > r22:
        s = 2.0 * math.sqrt(1.0 + r00 - r11 - r22)
        x, y, z, w = 0.25 * s, (r01 + r10) / s, (r02 + r20) / s, (r21 - r12) / s
    elif r11 > r22:
        s = 2.0 * math.sqrt(1.0 + r11 - r00 - r22)
        x, y, z, w = (r01 + r10) / s, 0.25 * s, (r12 + r21) / s, (r02 - r20) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r22 - r00 - r11)
        x, y, z, w = (r02 + r20) / s, (r12 + r21) / s, 0.25 * s, (r10 - r01) / s
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if w < 0.0:
        n = -n
    return x / n, y / n, z / n, w / n


def matrix_to_quat(R: object, order: QuatOrder) -> np.ndarray:
    """Unit quaternion in ``order`` for a rotation matrix, with a non-negative scalar part."""
    _check_order(order)
    xyzw = Rotation.from_matrix(validate_rotation(R)).as_quat()
    if xyzw[3] < 0:
        xyzw = -xyzw
    return xyzw if order == "xyzw" else np.roll(xyzw, 1)


def validate_vector4(v: object, name: str) -> np.ndarray:
    """Return a finite float vector of shape (4,), or raise ValueError."""
    return _validate_vector(v, name, 4)


def transform_from_quat(q: object, translation_mm: object, order: QuatOrder) -> np.ndarray:
    """4x4 transform from a quaternion (in ``order``) and a translation in mm."""
    return make_transform(quat_to_matrix(q, order), translation_mm)


def transform_to_quat(T: object, order: QuatOrder) -> tuple[np.ndarray, np.ndarray]:
    """Split a rigid transform into (quaternion in ``order``, translation)."""
    arr = validate_transform(T)
    return matrix_to_quat(arr[:3, :3], order), arr[:3, 3].copy()


def rotation_angle_deg(R: object) -> float:
    """Angle of a rotation matrix (0..180 deg), robust near 0 and 180."""
    return float(np.degrees(Rotation.from_matrix(validate_rotation(R)).magnitude()))


def angle_between_deg(u: object, v: object) -> float:
    """Angle between two non-zero vectors in degrees (0..180), via atan2 for accuracy near 0."""
    a = validate_vector3(u, "u")
    b = validate_vector3(v, "v")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        raise ValueError("angle_between_deg: zero-length vector")
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), float(np.dot(a, b)))))


def transform_difference(T_1: object, T_2: object) -> tuple[float, float]:
    """(translation distance in mm, rotation angle in deg) between two rigid transforms."""
    A = validate_transform(T_1, "T_1")
    B = validate_transform(T_2, "T_2")
    delta = invert(A) @ B
    return float(np.linalg.norm(A[:3, 3] - B[:3, 3])), rotation_angle_deg(delta[:3, :3])


def mm_to_m(value_mm: object) -> np.ndarray | float:
    """Millimetres to metres. Call only at the ROS boundary."""
    if np.isscalar(value_mm):
        return float(value_mm) / MM_PER_M
    return np.asarray(value_mm, dtype=float) / MM_PER_M


def m_to_mm(value_m: object) -> np.ndarray | float:
    """Metres to millimetres. Call only at the ROS boundary."""
    if np.isscalar(value_m):
        return float(value_m) * MM_PER_M
    return np.asarray(value_m, dtype=float) * MM_PER_M


def random_transform(rng: np.random.Generator, max_angle_deg: float = 180.0,
                     max_translation_mm: float = 100.0) -> np.ndarray:
    """A random rigid transform (uniform axis, angle up to ``max_angle_deg``) for tests and simulation."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0.0, max_angle_deg))
    t = rng.uniform(-max_translation_mm, max_translation_mm, size=3)
    return make_transform(Rotation.from_rotvec(axis * angle).as_matrix(), t)


def average_transforms(transforms: Iterable[object]) -> np.ndarray:
    """Mean of rigid transforms (chordal mean of rotations, arithmetic mean of translations)."""
    mats = [validate_transform(T, f"transforms[{i}]") for i, T in enumerate(transforms)]
    if not mats:
        raise ValueError("average_transforms: no transforms")
    rot = Rotation.from_matrix(np.stack([m[:3, :3] for m in mats])).mean().as_matrix()
    return make_transform(rot, np.mean([m[:3, 3] for m in mats], axis=0))


def axial_perpendicular_frame(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(n, m)`` perpendicular to the unit vector ``direction`` (LPS): ``n`` in the axial
    plane (``direction x S``; ``L`` when ``direction`` is along the S axis), ``m = n x direction``
    (~superior). Used to sample and draw planes along a screw."""
    n = np.cross(direction, [0.0, 0.0, 1.0])
    if np.linalg.norm(n) < 1e-6:
        n = np.array([1.0, 0.0, 0.0])
    n /= np.linalg.norm(n)
    m = np.cross(n, direction)
    return n, m / np.linalg.norm(m)
