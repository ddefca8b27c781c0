"""The ROS boundary: core objects (mm, 4x4) <-> ROS messages (m, REP-103).

This is the only module where millimetres become metres and back.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform, Vector3
from spine_nav_interfaces.msg import ArmState, GuardStatus, ToolHealth

from spine_nav.geometry import (m_to_mm, mm_to_m, rotation_rows_to_quat_xyzw, transform_from_quat, transform_to_quat,
                                unit_quat_xyzw, unit_quat_xyzw_to_rows)
from spine_nav.geometry.transforms import MM_PER_M
from spine_nav.guard import native as guard_native
from spine_nav.guard.state import GuardState
from spine_nav.nodes.cdr import GuardStatusPacker, PoseStampedPacker, unpack_pose_stamped
from spine_nav.plan import Plan, Screw
from spine_nav.native import load as load_native

NS_PER_S = 1_000_000_000


def seconds_to_stamp(t_s: float) -> Time:
    """Seconds (float, any epoch) to builtin_interfaces/Time."""
    sec, nanosec = seconds_to_sec_nanosec(t_s)
    return Time(sec=sec, nanosec=nanosec)


def seconds_to_sec_nanosec(t_s: float) -> tuple[int, int]:
    """Seconds (float) -> (sec, nanosec) as :func:`seconds_to_stamp` rounds them, without a Time object."""
    ns = int(round(t_s * NS_PER_S))
    return ns // NS_PER_S, ns % NS_PER_S


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def matrix_mm_to_pose(T_mm: np.ndarray) -> Pose:
    """4x4 rigid transform (mm) -> geometry_msgs/Pose (m, quaternion xyzw)."""
    q, t_mm = transform_to_quat(T_mm, order="xyzw")
    t = mm_to_m(t_mm)
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def validated_rows_mm_to_quat_mm(rows_mm: list) -> tuple[tuple[float, float, float, float], tuple[float, float, float]]:
    """First three rows (lists of 4 floats, mm) of a transform ALREADY validated as rigid -> (quaternion
    ``xyzw``, translation mm) in plain floats: the form PoseStamped carries (before mm -> m)."""
    return rotation_rows_to_quat_xyzw(rows_mm), (rows_mm[0][3], rows_mm[1][3], rows_mm[2][3])


def validated_matrix_mm_to_pose_stamped(T_mm: np.ndarray, frame_id: str, stamp_s: float) -> PoseStamped:
    """Hot-path variant of :func:`matrix_mm_to_pose_stamped` for a matrix ALREADY validated as rigid
    (e.g. by ``spine_nav.geometry.rigid_rows``): quaternion (xyzw) by Shepperd's method in plain
    Python floats, no scipy and no re-validation. Measured here: ~0.65 ms for the checked version vs a few
    tens of us for this one on a loaded 2-core machine. Same frames, units (mm -> m) and quaternion convention."""
    (x, y, z, w), (t0, t1, t2) = validated_rows_mm_to_quat_mm(T_mm[:3].tolist())
    # fields set in place (building Pose/Point/Quaternion objects costs ~3x more)
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    ns = int(round(stamp_s * NS_PER_S))
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // NS_PER_S, ns % NS_PER_S
    k = float(mm_to_m(1.0))
    pos, ori = msg.pose.position, msg.pose.orientation
    pos.x, pos.y, pos.z = t0 * k, t1 * k, t2 * k
    ori.x, ori.y, ori.z, ori.w = x, y, z, w
    return msg


def quat_mm_to_pose_cdr(quat_xyzw, t_mm, stamp_s: float, packer: PoseStampedPacker) -> bytes:
    """(quaternion ``xyzw``, translation mm) -> serialized PoseStamped bytes (metres), frame and stamp
    as the packer and ``stamp_s`` say; publish them with ``publisher.publish(data)``. ~3 us instead of
    ~25 us for filling and publishing a PoseStamped (see :mod:`spine_nav.nodes.cdr`)."""
    k = 1.0 / MM_PER_M
    return packer.pack(stamp_s, (t_mm[0] * k, t_mm[1] * k, t_mm[2] * k), quat_xyzw)


def validated_rows_mm_to_pose_cdr_py(rows_mm: list, stamp_s: float, packer: PoseStampedPacker) -> bytes:
    """:func:`validated_rows_mm_to_quat_mm` then :func:`quat_mm_to_pose_cdr` in one call, the same floats and
    bytes (tests/test_cdr.py): first three rows (mm) of a transform ALREADY validated as rigid -> serialized
    PoseStamped (metres). The bridge's per-pose conversion (two calls and four tuples fewer per pose), and the
    definition of its C twin ``_pose_cdr.pose_cdr`` (tests/test_native_frames.py: the same bytes)."""
    x, y, z, w = rotation_rows_to_quat_xyzw(rows_mm)
    k = 1.0 / MM_PER_M
    return packer.pack_values(stamp_s, rows_mm[0][3] * k, rows_mm[1][3] * k, rows_mm[2][3] * k, x, y, z, w)


def pose_cdr_fields_mm_py(data: bytes) -> tuple[int, int, str, tuple[float, float, float, float],
                                                tuple[float, float, float]]:
    """Serialized PoseStamped -> (stamp sec, stamp nanosec, frame_id, quaternion ``xyzw``, translation mm):
    :func:`pose_cdr_to_quat_mm` with the stamp as two ints (no builtin_interfaces/Time object built per
    sample, for the guard's 1 kHz path). NOT validated; ValueError on bytes that are not a PoseStamped.
    The definition of the C ``_pose_cdr.pose_fields_mm`` (tests/test_native_guard.py: the same fields, bit for bit)."""
    sec, nanosec, frame_id, (px, py, pz), q = unpack_pose_stamped(data)
    return sec, nanosec, frame_id, q, (px * MM_PER_M, py * MM_PER_M, pz * MM_PER_M)


_pose_cdr, _POSE_CDR_WHY_PYTHON = load_native("_pose_cdr", "spine_nav.nodes")


def describe_pose_cdr() -> str:
    """Which PoseStamped <-> CDR conversion runs (the bridge's packing, the guard's decode), for logs: "C" or
    "Python (why)"."""
    return "C" if _pose_cdr is not None else f"Python ({_POSE_CDR_WHY_PYTHON})"


def describe_guard_arithmetic() -> str:
    """The trajectory guard node's per-sample arithmetic, for its start-up log (as the tracker bridge logs its own):
    the geometry (:func:`spine_nav.guard.native.describe`) and the tool sample's decode, each "C" or "Python (why)"."""
    return f"per-sample geometry in {guard_native.describe()}, tool sample decode in {describe_pose_cdr()}"


if _pose_cdr is None:
    validated_rows_mm_to_pose_cdr = validated_rows_mm_to_pose_cdr_py
    pose_cdr_fields_mm = pose_cdr_fields_mm_py
else:
    def validated_rows_mm_to_pose_cdr(rows_mm: list, stamp_s: float, packer: PoseStampedPacker) -> bytes:
        """:func:`validated_rows_mm_to_pose_cdr_py` in one C call (``spine_nav/nodes/_pose_cdr.c``); a stamp the
        packer refuses goes to the Python twin, which raises as before."""
        return (_pose_cdr.pose_cdr(rows_mm, stamp_s, packer.name_utf8)
                or validated_rows_mm_to_pose_cdr_py(rows_mm, stamp_s, packer))

    def pose_cdr_fields_mm(data: bytes) -> tuple[int, int, str, tuple[float, float, float, float],
                                                 tuple[float, float, float]]:
        """:func:`pose_cdr_fields_mm_py` in one C call (``spine_nav/nodes/_pose_cdr.c``) for the layout the stack
        sends; anything else goes to the Python twin (rclpy's decoder, or its ValueError), as before."""
        return _pose_cdr.pose_fields_mm(data, MM_PER_M) or pose_cdr_fields_mm_py(data)


def pose_cdr_to_quat_mm(data: bytes) -> tuple[Time, str, tuple[float, float, float, float],
                                              tuple[float, float, float]]:
    """Serialized PoseStamped (a ``raw=True`` subscription) -> (header.stamp, frame_id, quaternion ``xyzw``,
    translation mm), plain floats, NOT validated (as :func:`pose_to_quat_mm`). ValueError on bytes
    that are not a PoseStamped."""
    sec, nanosec, frame_id, q, t_mm = pose_cdr_fields_mm(data)
    return Time(sec=sec, nanosec=nanosec), frame_id, q, t_mm


def quat_mm_to_matrix_mm(quat_xyzw, t_mm) -> np.ndarray:
    """Quaternion ``xyzw`` + translation mm (a PoseStamped's content) -> 4x4 rigid transform (mm), with the
    checks of :func:`spine_nav.geometry.transform_from_quat` in plain floats
    (:func:`spine_nav.geometry.unit_quat_xyzw`): ~5 us instead of ~100 us through scipy, for the 1 kHz
    consumers. Raises ValueError naming the problem."""
    try:
        t0, t1, t2 = (float(v) for v in t_mm)
    except (TypeError, ValueError):
        raise ValueError(f"pose: expected a translation of 3 numbers, got {t_mm!r}") from None
    if not math.isfinite(t0 + t1 + t2):
        raise ValueError(f"pose has NaN/inf in its translation {t_mm} mm")
    r0, r1, r2 = unit_quat_xyzw_to_rows(*unit_quat_xyzw(quat_xyzw, "pose quaternion"))
    return np.array([[*r0, t0], [*r1, t1], [*r2, t2], [0.0, 0.0, 0.0, 1.0]])


def pose_to_matrix_mm(pose: Pose) -> np.ndarray:
    """geometry_msgs/Pose (m) -> 4x4 rigid transform (mm). Raises ValueError on NaN or a bad quaternion."""
    q = [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]
    t_mm = m_to_mm([pose.position.x, pose.position.y, pose.position.z])
    return transform_from_quat(q, t_mm, order="xyzw")


def pose_to_quat_mm(pose: Pose) -> tuple[tuple[float, float, float, float], tuple[float, float, float]]:
    """geometry_msgs/Pose (m) -> (quaternion ``xyzw``, translation in mm) as plain floats, NOT validated.

    Fast path for 1 kHz consumers (``pose_to_matrix_mm`` costs ~100 us through scipy); the caller
    must validate, e.g. :func:`spine_nav.guard.metrics.tip_and_axis_from_quat`.
    """
    o, p = pose.orientation, pose.position
    return (o.x, o.y, o.z, o.w), (p.x * MM_PER_M, p.y * MM_PER_M, p.z * MM_PER_M)


def verdict_to_msg(v, frame_id: str, stamp: Time, sample_stamp: Time | None = None):
    """spine_nav.guard.GuardVerdict -> spine_nav_interfaces/GuardStatus (mm, deg as in the core); the sample's
    stamp echoed in ``tool_sample_stamp`` when given."""
    m = v.metrics
    msg = GuardStatus(active_screw_id=v.screw_id, state=int(v.state), state_name=v.state.name, reason=v.reason,
                      lateral_error_mm=m.lateral_error_mm, entry_offset_mm=m.entry_offset_mm,
                      angular_error_deg=m.angular_error_deg, depth_mm=m.depth_mm, remaining_mm=m.remaining_mm,
                      predicted_tip_error_mm=m.predicted_tip_error_mm, sample_age_ms=v.sample_age_ms)
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    if sample_stamp is not None:
        msg.tool_sample_stamp = sample_stamp
    return msg


#: GuardState -> its name (a dict look-up: ``state.name`` is a Python-level enum property, two calls per sample)
_STATE_NAMES = {s: s.name for s in GuardState}


def verdict_to_status_cdr(v, packer: GuardStatusPacker, stamp_ns: int, sample_stamp: tuple[int, int] | None = None,
                          repeat: bool = False) -> bytes:
    """:func:`verdict_to_msg` as serialized GuardStatus bytes (``publisher.publish(bytes)``), frame from
    ``packer``, header.stamp ``stamp_ns`` (ns, system or ROS clock), ``tool_sample_stamp`` (sec, nanosec)
    or zero when None, ``repeat`` as given. The same fields and values as :func:`verdict_to_msg` (tested)."""
    m = v.metrics
    return packer.pack(divmod(stamp_ns, NS_PER_S), sample_stamp or (0, 0), v.screw_id, int(v.state), _STATE_NAMES[v.state],
                       v.reason, (m.lateral_error_mm, m.entry_offset_mm, m.angular_error_deg, m.depth_mm,
                                  m.remaining_mm, m.predicted_tip_error_mm, v.sample_age_ms), repeat)


def tool_health_to_msg(h, frame_id: str, stamp: Time) -> ToolHealth:
    """spine_nav.tracking.watchdog.ToolHealthState -> spine_nav_interfaces/ToolHealth (ages capped at 1e9 ms)."""
    msg = ToolHealth(tool=h.tool, device=h.device, state=h.state, reason=h.reason, visible=h.visible,
                     sample_age_ms=float(min(h.sample_age_ms, 1e9)), rate_hz=float(h.rate_hz),
                     samples_received=h.samples_received, samples_rejected=h.samples_rejected)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.last_sample_stamp = seconds_to_stamp(h.last_sample_stamp_s)
    return msg


def arm_state_to_msg(st, frame_id: str, stamp: Time) -> ArmState:
    """spine_nav.arm.controller.ArmGuideState -> spine_nav_interfaces/ArmState (mm, deg as in the core)."""
    msg = ArmState(mode=st.mode, active_screw_id=st.active_screw_id, stop_cause=st.stop_cause,
                   alignment_error_mm=float(st.alignment_error_mm), alignment_error_deg=float(st.alignment_error_deg),
                   holding=st.holding)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def pose_cdr_to_matrix_mm(data: bytes) -> tuple[Time, np.ndarray]:
    """Serialized PoseStamped -> (header.stamp, 4x4 mm, validated); ValueError when unusable."""
    stamp, _frame, q, t_mm = pose_cdr_to_quat_mm(data)
    return stamp, quat_mm_to_matrix_mm(q, t_mm)


#: GuardStatus.state -> name, for senders that leave state_name empty.
_GUARD_STOP_NAMES = {GuardStatus.STATE_TRACKING_LOST: "TRACKING_LOST", GuardStatus.STATE_VIOLATION: "VIOLATION"}


def guard_state_name(msg: GuardStatus) -> str:
    """The status's state name (``state_name``, or for the stop states the name of ``state`` when empty)."""
    return msg.state_name or _GUARD_STOP_NAMES.get(msg.state, "")


def pose_to_row_major_mm(pose: Pose, what: str = "pose") -> list[float]:
    """geometry_msgs/Pose (m) -> the 4x4 T (mm) as 16 row-major floats; ValueError naming ``what`` on a
    non-finite pose or a bad quaternion.

    Plain float arithmetic (consoles get it per tracker sample, up to 1 kHz): the same matrix and checks
    as :func:`pose_to_matrix_mm` (finite; quaternion norm within ``QUAT_NORM_TOL`` of 1, then
    renormalised: :func:`spine_nav.geometry.unit_quat_xyzw`) at a few us instead of ~200 us.
    """
    q, (px, py, pz) = pose_to_quat_mm(pose)
    if not math.isfinite(px + py + pz):
        raise ValueError(f"{what}: contains non-finite values (NaN or inf)")
    r0, r1, r2 = unit_quat_xyzw_to_rows(*unit_quat_xyzw(q, f"{what} quaternion"))
    return [*r0, px, *r1, py, *r2, pz, 0.0, 0.0, 0.0, 1.0]


def matrix_mm_to_pose_stamped(T_mm: np.ndarray, frame_id: str, stamp_s: float) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = frame_id
    msg.header.stamp = seconds_to_stamp(stamp_s)
    msg.pose = matrix_mm_to_pose(T_mm)
    return msg


def matrix_mm_to_transform(T_mm: np.ndarray) -> Transform:
    pose = matrix_mm_to_pose(T_mm)
    return Transform(translation=Vector3(x=pose.position.x, y=pose.position.y, z=pose.position.z),
                     rotation=pose.orientation)


def transform_to_matrix_mm(tf: Transform) -> np.ndarray:
    pose = Pose(position=Point(x=tf.translation.x, y=tf.translation.y, z=tf.translation.z),
                orientation=tf.rotation)
    return pose_to_matrix_mm(pose)


def point_mm_to_msg(p_mm: Iterable[float]) -> Point:
    p = mm_to_m(np.asarray(list(p_mm), dtype=float))
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def point_msg_to_mm(p: Point) -> np.ndarray:
    return np.asarray(m_to_mm([p.x, p.y, p.z]), dtype=float)


def plan_to_msg(plan: Plan, stamp_s: float, not_navigable: dict[str, str] | None = None):
    """Plan (mm) -> spine_nav_interfaces/ScrewPlan (m). ``not_navigable`` maps screw id -> reason."""
    from spine_nav_interfaces.msg import Screw as ScrewMsg, ScrewPlan

    not_navigable = not_navigable or {}
    msg = ScrewPlan()
    msg.header.frame_id = plan.frame
    msg.header.stamp = seconds_to_stamp(stamp_s)
    msg.case_id = plan.case_id
    for s in plan.screws:
        msg.screws.append(ScrewMsg(
            id=s.id, level=s.level, side=s.side,
            entry=point_mm_to_msg(s.entry_mm), target=point_mm_to_msg(s.target_mm),
            diameter_m=float(mm_to_m(s.diameter_mm)), length_m=float(mm_to_m(s.length_mm)),
            navigable=s.id not in not_navigable, status_reason=not_navigable.get(s.id, ""),
        ))
    return msg


def msg_to_plan(msg) -> tuple[Plan, dict[str, str]]:
    """spine_nav_interfaces/ScrewPlan (m) -> (Plan in mm, {screw id: reason} for non-navigable screws).

    Raises :class:`spine_nav.plan.PlanError` naming the screw on invalid content.
    """
    screws = []
    not_navigable: dict[str, str] = {}
    for s in msg.screws:
        screws.append(Screw(id=s.id, level=s.level, side=s.side,
                            entry_mm=point_msg_to_mm(s.entry), target_mm=point_msg_to_mm(s.target),
                            diameter_mm=float(m_to_mm(s.diameter_m)), length_mm=float(m_to_mm(s.length_m))))
        if not s.navigable:
            not_navigable[s.id] = s.status_reason or "not navigable"
    return Plan(screws=tuple(screws), frame=msg.header.frame_id or "Reference", case_id=msg.case_id), not_navigable
