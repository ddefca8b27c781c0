"""The guard's fast per-sample path gives what the generic one gives (bad input first).

Fast: tool sample bytes -> ints and floats (``conversions.pose_cdr_fields_mm``), status packed as CDR bytes
(``cdr.GuardStatusPacker`` via ``conversions.verdict_to_status_cdr``), node clock read as ns. Generic: the
same bytes -> builtin_interfaces/Time (``pose_cdr_to_quat_mm``), a GuardStatus message object
(``verdict_to_msg``) serialised by rclpy. Compared field by field after ``deserialize_message`` (rclpy leaves
padding bytes unset, so the bytes themselves differ there) and by length.
"""
from __future__ import annotations

import itertools
import math
import struct

import numpy as np
import pytest

from spine_nav.guard import GuardState, GuardVerdict
from spine_nav.guard.metrics import NAN_METRICS, GuardMetrics

FLOAT_FIELDS = ("lateral_error_mm", "entry_offset_mm", "angular_error_deg", "depth_mm", "remaining_mm",
                "predicted_tip_error_mm", "sample_age_ms")


def _fields(msg) -> tuple:
    """Every GuardStatus field, NaN made comparable."""
    f = [getattr(msg, k) for k in FLOAT_FIELDS]
    return (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id, msg.tool_sample_stamp.sec,
            msg.tool_sample_stamp.nanosec, msg.active_screw_id, msg.state, msg.state_name, msg.reason,
            *("nan" if isinstance(x, float) and math.isnan(x) else x for x in f), msg.repeat)


def _same_as_rclpy(data: bytes, ref) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from spine_nav_interfaces.msg import GuardStatus

    wire = serialize_message(ref)  # what rclpy puts on the wire for ``ref`` (strings cut at a NUL, as C strings)
    assert _fields(deserialize_message(data, GuardStatus)) == _fields(deserialize_message(wire, GuardStatus))
    assert len(data) == len(wire)


def _status(stamp, sample, screw_id, state, state_name, reason, values, repeat):
    from builtin_interfaces.msg import Time
    from spine_nav_interfaces.msg import GuardStatus

    msg = GuardStatus(active_screw_id=screw_id, state=state, state_name=state_name, reason=reason,
                      **dict(zip(FLOAT_FIELDS, values)), repeat=repeat)
    msg.header.frame_id = "Reference"
    msg.header.stamp = Time(sec=stamp[0], nanosec=stamp[1])
    msg.tool_sample_stamp = Time(sec=sample[0], nanosec=sample[1])
    return msg


# ---- bad input first ---------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [-1, 256, 1000])
def test_packer_rejects_a_state_that_is_not_a_uint8(state):
    from spine_nav.nodes.cdr import GuardStatusPacker

    with pytest.raises(ValueError, match="GuardStatus.state"):
        GuardStatusPacker("Reference").pack((0, 0), (0, 0), "", state, "X", "", (0.0,) * 7)


def test_packer_rejects_a_wrong_number_of_values_and_out_of_range_stamps_naming_them():
    from spine_nav.nodes.cdr import GuardStatusPacker

    p = GuardStatusPacker("Reference")
    with pytest.raises(ValueError, match="7 float64 values"):
        p.pack((0, 0), (0, 0), "", 3, "ALIGNED", "", (0.0,) * 6)
    with pytest.raises(ValueError, match="tool_sample_stamp"):
        p.pack((2**31, 0), (0, 0), "", 3, "ALIGNED", "", (0.0,) * 7)  # int32 sec
    with pytest.raises(ValueError, match="tool_sample_stamp"):
        p.pack((0, 0), (0, -1), "", 3, "ALIGNED", "", (0.0,) * 7)  # uint32 nanosec
    with pytest.raises(ValueError, match="float64"):
        p.pack((0, 0), (0, 0), "", 3, "ALIGNED", "", ("1.0",) + (0.0,) * 6)


def test_packer_cuts_strings_at_a_nul_and_encodes_utf8_as_rclpy_does():
    from spine_nav.nodes.cdr import GuardStatusPacker

    p = GuardStatusPacker("Reference")
    for sid, name, reason in (("a\0b", "AL\0", "\0x"), ("L4_gauche", "ÉTAT", "angle 4.3° > 4 — tilt"), ("", "", "")):
        values = (math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 2.5)
        _same_as_rclpy(p.pack((1, 2), (3, 4), sid, 5, name, reason, values, True),
                       _status((1, 2), (3, 4), sid, 5, name, reason, values, True))


def test_pose_fields_decode_rejects_what_the_generic_decode_rejects_with_the_same_message():
    from spine_nav.nodes.conversions import pose_cdr_fields_mm, pose_cdr_to_quat_mm

    for bad in (b"", b"\x00\x01\x00\x00", b"\x00\x01\x00\x00" + b"\xff" * 12, b"garbage" * 5):
        with pytest.raises(ValueError) as generic:
            pose_cdr_to_quat_mm(bad)
        with pytest.raises(ValueError) as fast:
            pose_cdr_fields_mm(bad)
        assert str(fast.value) == str(generic.value)


# ---- equivalence ----------------------------------------------------------------------------------
def test_packer_matches_rclpy_for_every_string_length_modulo_8():
    """Every padding case of the three strings (lengths 0-8 each, 729 combinations) and both repeat values."""
    from spine_nav.nodes.cdr import GuardStatusPacker

    p = GuardStatusPacker("Reference")
    values = (1.5, -2.25, 3.0, -44.0, 0.5, math.nan, 0.25)
    for a, b, c in itertools.product(range(9), repeat=3):
        repeat = bool((a + b + c) % 2)
        _same_as_rclpy(p.pack((7, 999_999_999), (-5, 1), "i" * a, 4, "n" * b, "r" * c, values, repeat),
                       _status((7, 999_999_999), (-5, 1), "i" * a, 4, "n" * b, "r" * c, values, repeat))


def test_packer_gives_the_same_bytes_from_its_string_cache_as_when_laying_the_strings_out_anew():
    """The per-packer cache of (screw id, state name, reason) layouts: a hit (same strings, other stamps, state,
    values, repeat; also after the cache was emptied by 300 other reasons) gives the bytes a fresh packer gives,
    and what rclpy serialises."""
    from spine_nav.nodes.cdr import GuardStatusPacker

    cached = GuardStatusPacker("Reference")
    strings = ("L4_left", "ALIGNED", "inside corridor \u00e9")
    cached.pack((1, 2), (3, 4), *strings[:1], 3, *strings[1:], (0.0,) * 7)
    for k in range(300):  # fills the cache past its bound: emptied once
        cached.pack((1, 2), (3, 4), "L4_left", 2, "APPROACH", f"tip {k * 0.1:.1f} mm from entry", (0.0,) * 7)
    cached.pack((1, 2), (3, 4), *strings[:1], 3, *strings[1:], (0.0,) * 7)
    for stamp, state, values, repeat in (((5, 6), 3, (1.5, -2.0, 3.0, -4.0, 0.5, math.nan, 0.25), False),
                                         ((2**31 - 1, 999_999_999), 5, (math.inf,) * 7, True)):
        data = cached.pack(stamp, (-7, 8), strings[0], state, strings[1], strings[2], values, repeat)
        assert data == GuardStatusPacker("Reference").pack(stamp, (-7, 8), strings[0], state, strings[1], strings[2],
                                                           values, repeat)
        _same_as_rclpy(data, _status(stamp, (-7, 8), strings[0], state, strings[1], strings[2], values, repeat))


@pytest.mark.parametrize("frame", ["", "R", "Reference", "a_longer_frame_id_x"])
def test_packer_matches_rclpy_for_any_header_frame(frame):
    from rclpy.serialization import deserialize_message
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.cdr import GuardStatusPacker

    for a in range(9):
        data = GuardStatusPacker(frame).pack((1, 2), (3, 4), "s" * a, 2, "APPROACH", "why", (0.0,) * 7)
        ref = _status((1, 2), (3, 4), "s" * a, 2, "APPROACH", "why", (0.0,) * 7, False)
        ref.header.frame_id = frame
        assert _fields(deserialize_message(data, GuardStatus)) == _fields(ref)


def test_verdict_to_status_cdr_carries_what_verdict_to_msg_carries():
    from builtin_interfaces.msg import Time

    from spine_nav.nodes.cdr import GuardStatusPacker
    from spine_nav.nodes.conversions import verdict_to_msg, verdict_to_status_cdr

    p = GuardStatusPacker("Reference")
    metrics = GuardMetrics(*(float(i) + 0.125 for i in range(len(GuardMetrics._fields))))
    for state, m, sample in itertools.product(GuardState, (NAN_METRICS, metrics), (None, (1_700_000_000, 5))):
        v = GuardVerdict(state, f"{state.name} because", "L4_left", m, 1.0, 0.75)
        ref = verdict_to_msg(v, "Reference", Time(sec=12, nanosec=345), None if sample is None else
                             Time(sec=sample[0], nanosec=sample[1]))
        _same_as_rclpy(verdict_to_status_cdr(v, p, 12 * 10**9 + 345, sample), ref)
        ref.repeat = True
        _same_as_rclpy(verdict_to_status_cdr(v, p, 12 * 10**9 + 345, sample, repeat=True), ref)


def test_pose_fields_decode_equals_the_generic_decode():
    from rclpy.serialization import serialize_message

    from spine_nav.nodes.conversions import matrix_mm_to_pose_stamped, pose_cdr_fields_mm, pose_cdr_to_quat_mm
    from spine_nav.nodes.cdr import PoseStampedPacker

    msg = matrix_mm_to_pose_stamped(np.eye(4), "Reference", 1_700_000_000.123456789)
    msg.pose.position.x = math.nan
    datas = [serialize_message(msg), PoseStampedPacker("Ref").pack(5.5, (0.1, 0.2, 0.3), (0.0, 0.0, 0.0, 0.0))]
    for data in datas:
        stamp, frame, q, t = pose_cdr_to_quat_mm(data)
        sec, nanosec, frame2, q2, t2 = pose_cdr_fields_mm(data)
        assert (sec, nanosec, frame2) == (stamp.sec, stamp.nanosec, frame)
        assert np.array_equal(np.array(q2 + t2), np.array(q + t), equal_nan=True)


# ---- the node: the fast DDS path against the generic path on a stream with bad samples ----------------------
def _pose_bytes(T_mm, frame: str, stamp_s: float) -> bytes:
    from rclpy.serialization import serialize_message

    from spine_nav.nodes.conversions import matrix_mm_to_pose_stamped

    return serialize_message(matrix_mm_to_pose_stamped(T_mm, frame, stamp_s))


def _with_pose(data: bytes, position_m=None, quat=None) -> bytes:
    """``data`` (a PoseStamped of frame "Reference") with its position / quaternion overwritten (NaN, zero...)."""
    off = len(data) - 56
    pos = struct.unpack_from("<3d", data, off) if position_m is None else position_m
    q = struct.unpack_from("<4d", data, off + 24) if quat is None else quat
    return data[:off] + struct.pack("<7d", *pos, *q)


@pytest.mark.ros
def test_guard_node_fast_path_publishes_what_the_generic_path_would(ros_context):
    """Samples before the plan, a plan with a screw not navigable, wrong frame, NaN, zero and non-unit
    quaternions, time going backwards, a stale sample, a lost tool (health), the tool's path over a screw
    (approach, aligned, debounce, depth stop), the not navigable screw, far from every screw, the in-process
    entry and the heartbeat repeat: every status the node publishes equals rclpy's serialisation of
    ``verdict_to_msg`` of the verdict a separate LiveGuard gives on the generic decode of the same bytes."""
    from builtin_interfaces.msg import Time
    from rclpy.serialization import deserialize_message
    from spine_nav_interfaces.msg import GuardStatus, ToolHealth

    from spine_nav.bench.guard import bench_plan, tool_path
    from spine_nav.guard import GuardConfig
    from spine_nav.guard.live import LiveGuard
    from spine_nav.nodes.conversions import plan_to_msg, pose_cdr_to_quat_mm, seconds_to_stamp, verdict_to_msg
    from spine_nav.nodes.trajectory_guard import TrajectoryGuardNode

    node = TrajectoryGuardNode(context=ros_context)
    published: list[bytes] = []
    now = {"ns": 0}
    node.status_pub = type("Recorder", (), {"publish": staticmethod(published.append)})()
    node.now_ns = lambda: now["ns"]
    ref = LiveGuard(GuardConfig(), "Reference", ["stylus", "reference"])
    expected: list = []
    plan = bench_plan(2)
    base = 1_700_000_000.0
    try:
        def sample(data: bytes, age_s: float = 0.0005):
            stamp, frame, q, t = pose_cdr_to_quat_mm(data)
            stamp_s = stamp.sec + stamp.nanosec * 1e-9
            now["ns"] = int(round((stamp_s + age_s) * 1e9))
            node.on_tool(data)
            v = ref.sample(frame, q, t, stamp_s, now["ns"] * 1e-9)
            expected.append(verdict_to_msg(v, "Reference", Time(sec=now["ns"] // 10**9, nanosec=now["ns"] % 10**9),
                                           stamp))

        poses = tool_path(plan, 1000)
        k = iter(range(10**6))

        def at(i_pose: int, frame: str = "Reference") -> bytes:
            return _pose_bytes(poses[i_pose], frame, base + 1e-3 * next(k))

        sample(at(0))  # no plan yet
        not_navigable = {plan.screws[1].id: "pedicle too narrow"}
        plan_msg = plan_to_msg(plan, base, not_navigable)
        node.on_plan(plan_msg)
        ref.set_plan(plan, not_navigable, "Reference")
        sample(at(0, frame="Tracker"))  # wrong frame
        sample(_with_pose(at(1), position_m=(math.nan, 0.0, 0.0)))
        sample(_with_pose(at(2), quat=(0.0, 0.0, 0.0, 0.0)))
        sample(_with_pose(at(3), quat=(0.0, 0.0, 0.0, 1.5)))
        sample(_pose_bytes(poses[4], "Reference", base))  # time backwards
        sample(at(5), age_s=0.2)  # stale
        lost = ToolHealth(tool="stylus", state=ToolHealth.STATE_TRACKING_LOST, visible=False, reason="occluded")
        node.on_health(lost)
        v = ref.health("stylus", True, "occluded", now["ns"] * 1e-9)
        expected.append(verdict_to_msg(v, "Reference", Time(sec=now["ns"] // 10**9, nanosec=now["ns"] % 10**9),
                                       expected[-1].tool_sample_stamp))
        sample(at(6))
        node.on_health(ToolHealth(tool="stylus", state=ToolHealth.STATE_OK, visible=True))
        ref.health("stylus", False, "", now["ns"] * 1e-9)
        for i in range(0, 800, 3):  # approach, align, drill to 44 mm
            sample(at(i))
        screw = plan.screws[0]
        for extra_mm in (2.0, 2.5, 3.0, 0.0, -1.0):  # past the planned depth (45 mm): the depth stop, then back
            T = poses[799].copy()
            T[:3, 3] = screw.target_mm + extra_mm * screw.direction
            sample(_pose_bytes(T, "Reference", base + 1e-3 * next(k)))
        for i in range(800, 1000, 3):  # retract
            sample(at(i))
        T_far = poses[0].copy()
        T_far[:3, 3] += (500.0, 0.0, 0.0)
        sample(_pose_bytes(T_far, "Reference", base + 1e-3 * next(k)))  # no active screw
        T_nn = poses[0].copy()
        T_nn[:3, 3] = plan.screws[1].entry_mm
        sample(_pose_bytes(T_nn, "Reference", base + 1e-3 * next(k)))  # the not navigable screw
        # the in-process entry (stamp as seconds) is judged and published like the DDS one
        stamp_s = base + 1e-3 * next(k)
        stamp, frame, q, t = pose_cdr_to_quat_mm(_pose_bytes(poses[500], "Reference", stamp_s))
        now["ns"] = int(round((stamp_s + 0.0005) * 1e9))
        node.on_tool_sample(None, stamp_s, frame, q, t)
        v = ref.sample(frame, q, t, stamp_s, now["ns"] * 1e-9)
        expected.append(verdict_to_msg(v, "Reference", Time(sec=now["ns"] // 10**9, nanosec=now["ns"] % 10**9),
                                       seconds_to_stamp(stamp_s)))
        # the heartbeat: the last verdict again, fresh stamp, repeat true
        node._last_status = (*node._last_status[:2], node._last_status[2] - 1.0)
        now["ns"] += 7_000_000
        node.on_tick()  # the watchdog finds the sample 7 ms old: fresh, no TRACKING_LOST
        rep = verdict_to_msg(v, "Reference", Time(sec=now["ns"] // 10**9, nanosec=now["ns"] % 10**9),
                             seconds_to_stamp(stamp_s))
        rep.repeat = True
        expected.append(rep)
    finally:
        node.destroy_node()
    got = [deserialize_message(d, GuardStatus) for d in published]
    assert [_fields(m) for m in got] == [_fields(m) for m in expected]
    seen = {m.state_name for m in got}
    reasons = " | ".join(m.reason for m in got)
    assert {"NO_PLAN", "TRACKING_LOST", "APPROACH", "ALIGNED", "VIOLATION"} <= seen, seen
    for part in ("no plan received", "frame 'Tracker'", "time went backwards", "stale sample", "tracker: stylus",
                 "depth stop", "no active screw", "not navigable", "pending debounce"):
        assert part in reasons, part
    assert got[-1].repeat and not any(m.repeat for m in got[:-1])


@pytest.mark.ros
def test_guard_node_clock_follows_ros_time_when_use_sim_time_is_set(ros_context):
    """now_ns reads the system clock only while ROS time is inactive; with use_sim_time and no /clock yet the
    node clock reads 0, as rclpy's does."""
    import time

    from rclpy.parameter import Parameter

    from spine_nav.nodes.trajectory_guard import TrajectoryGuardNode

    node = TrajectoryGuardNode(context=ros_context)
    try:
        assert abs(node.now_ns() - time.time_ns()) < 5 * 10**9
        assert node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])[0].successful
        assert node.now_ns() == node.get_clock().now().nanoseconds == 0
        assert node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, False)])[0].successful
        assert abs(node.now_ns() - time.time_ns()) < 5 * 10**9
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_guard_node_builds_markers_only_while_someone_subscribes(ros_context):
    """No subscriber on guard/markers: a markers tick builds and publishes nothing (it would hold the executor thread
    the 1 kHz samples wait for); once a viewer subscribes, the tick builds and publishes the corridors again."""
    import time

    from visualization_msgs.msg import MarkerArray

    from spine_nav.bench.guard import bench_plan
    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.nodes.trajectory_guard import TrajectoryGuardNode

    node = TrajectoryGuardNode(context=ros_context)
    built = []
    real_build = node.markers.build
    node.markers.build = lambda *a: built.append(a) or real_build(*a)
    try:
        node.on_plan(plan_to_msg(bench_plan(), time.time()))
        node.publish_markers()
        assert built == []
        viewer = node.create_subscription(MarkerArray, "guard/markers", lambda m: None, 10)
        deadline = time.monotonic() + 5.0  # discovery within the process: bounded wait
        while node.marker_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        node.publish_markers()
        assert len(built) == 1 and built[0][0].screws  # the plan's corridors
        node.destroy_subscription(viewer)
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_guard_profile_times_every_step_of_the_callback_and_the_floor():
    """`bench guard --profile`'s structure (no timing asserted): every step, the totals, the verdicts judged."""
    from spine_nav.bench.guard_profile import profile_guard

    out = profile_guard(300, with_cprofile=False)
    assert set(out["steps"]) == {"decode", "lock", "clock", "judge", "status", "publish", "latency_add"}
    for part in (out["callback_total"], out["floor_total"], *out["steps"].values()):
        assert set(part) == {"p50_us", "p90_us"} and all(math.isfinite(x) and x > 0 for x in part.values())
    assert sum(out["states"].values()) == 300 and set(out["states"]) <= {s.name for s in GuardState}
