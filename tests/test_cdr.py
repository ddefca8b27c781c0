"""PoseStamped <-> CDR bytes (spine_nav.nodes.cdr) agrees with rclpy's own serialization both ways,
and bad bytes are refused with a message; plus the bytes really travel over DDS to a normal subscriber."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.serialization import deserialize_message, serialize_message

from spine_nav.geometry import quat_to_matrix
from spine_nav.nodes.cdr import PoseStampedPacker, unpack_pose_stamped
from spine_nav.nodes.conversions import (matrix_mm_to_pose_stamped, pose_cdr_to_quat_mm, quat_mm_to_pose_cdr,
                                         validated_rows_mm_to_pose_cdr, validated_rows_mm_to_quat_mm)
from tests.helpers import wait_until

FRAMES = ["", "R", "Reference", "Tracker", "abcdefg", "abcdefgh", "Ümlaut_frame"]


def _random_pose(rng: random.Random):
    q = [rng.gauss(0, 1) for _ in range(4)]
    n = math.sqrt(sum(v * v for v in q))
    return tuple(rng.uniform(-2, 2) for _ in range(3)), tuple(v / n for v in q)


def test_unpack_refuses_bytes_that_are_no_pose_stamped():
    for bad in (b"", b"\x00\x01\x00\x00", b"\x00\x01\x00\x00" + b"\xff" * 30, b"garbage" * 3):
        with pytest.raises(ValueError, match="PoseStamped"):
            unpack_pose_stamped(bad)


@pytest.mark.parametrize("frame_id", FRAMES)
def test_packed_bytes_deserialize_like_rclpy(frame_id):
    rng = random.Random(frame_id)
    packer = PoseStampedPacker(frame_id)
    for _ in range(50):
        pos, q = _random_pose(rng)
        stamp_s = rng.uniform(0, 2e9)
        data = packer.pack(stamp_s, pos, q)
        msg = deserialize_message(data, PoseStamped)
        ns = int(round(stamp_s * 1e9))
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (ns // 10**9, ns % 10**9)
        assert msg.header.frame_id == frame_id
        p, o = msg.pose.position, msg.pose.orientation
        assert (p.x, p.y, p.z) == pos and (o.x, o.y, o.z, o.w) == q
        assert len(data) == len(serialize_message(msg))


@pytest.mark.parametrize("frame_id", FRAMES)
def test_unpack_reads_rclpy_serialized_bytes(frame_id):
    rng = random.Random(frame_id + "u")
    for _ in range(50):
        pos, q = _random_pose(rng)
        msg = PoseStamped()
        msg.header.frame_id = frame_id
        msg.header.stamp.sec, msg.header.stamp.nanosec = rng.randrange(2**31), rng.randrange(10**9)
        (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) = pos
        (msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w) = q
        sec, nanosec, fid, p, o = unpack_pose_stamped(serialize_message(msg))
        assert fid == frame_id and p == pos and o == q
        assert (sec, nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)


def test_nan_travels_unchanged_for_the_consumer_to_refuse():
    data = PoseStampedPacker("Reference").pack(1.0, (float("nan"), 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    _, _, _, p, _ = unpack_pose_stamped(data)
    assert math.isnan(p[0])


def test_rows_mm_to_cdr_matches_the_checked_conversion():
    rng = np.random.default_rng(3)
    packer = PoseStampedPacker("Reference")
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(q, order="xyzw")
        T[:3, 3] = rng.uniform(-500, 500, 3)
        data = quat_mm_to_pose_cdr(*validated_rows_mm_to_quat_mm(T[:3].tolist()), 12.5, packer)  # the bridge's path
        ref = matrix_mm_to_pose_stamped(T, "Reference", 12.5)
        got = deserialize_message(data, PoseStamped)
        a = [ref.pose.position.x, ref.pose.position.y, ref.pose.position.z]
        assert np.allclose([got.pose.position.x, got.pose.position.y, got.pose.position.z], a, atol=1e-12)
        qa = np.array([ref.pose.orientation.x, ref.pose.orientation.y, ref.pose.orientation.z, ref.pose.orientation.w])
        qb = np.array([got.pose.orientation.x, got.pose.orientation.y, got.pose.orientation.z, got.pose.orientation.w])
        assert min(np.abs(qa - qb).max(), np.abs(qa + qb).max()) < 1e-9  # q and -q are the same rotation
        stamp, frame_id, q_back, t_mm = pose_cdr_to_quat_mm(data)
        assert frame_id == "Reference" and (stamp.sec, stamp.nanosec) == (12, 500_000_000)
        assert np.allclose(t_mm, T[:3, 3], atol=1e-9) and np.allclose(q_back, qb)


@pytest.mark.ros
def test_published_bytes_reach_a_normal_subscriber_and_raw_bytes_a_raw_one(ros_context):
    from spine_nav.nodes.qos import SENSOR_QOS

    talker = rclpy.create_node("test_cdr_talker", context=ros_context)
    listener = rclpy.create_node("test_cdr_listener", context=ros_context)
    typed: list[PoseStamped] = []
    raw: list[bytes] = []
    listener.create_subscription(PoseStamped, "cdr_test/pose", typed.append, SENSOR_QOS)
    listener.create_subscription(PoseStamped, "cdr_test/pose", raw.append, SENSOR_QOS, raw=True)
    pub = talker.create_publisher(PoseStamped, "cdr_test/pose", SENSOR_QOS)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(talker)
    ex.add_node(listener)
    spin = lambda: ex.spin_once(timeout_sec=0.01)  # noqa: E731
    assert wait_until(lambda: pub.get_subscription_count() >= 2, 10.0, spin=spin)
    data = PoseStampedPacker("Reference").pack(7.25, (0.1, -0.2, 0.3), (0.0, 0.0, 0.6, 0.8))
    pub.publish(data)
    assert wait_until(lambda: typed and raw, 10.0, spin=spin)
    m = typed[0]
    assert m.header.frame_id == "Reference" and (m.header.stamp.sec, m.header.stamp.nanosec) == (7, 250_000_000)
    assert (m.pose.position.x, m.pose.position.y, m.pose.position.z) == (0.1, -0.2, 0.3)
    assert (m.pose.orientation.z, m.pose.orientation.w) == (0.6, 0.8)
    assert unpack_pose_stamped(raw[0]) == (7, 250_000_000, "Reference", (0.1, -0.2, 0.3), (0.0, 0.0, 0.6, 0.8))
    ex.shutdown()


def test_quat_mm_to_matrix_mm_refuses_bad_poses_and_matches_the_checked_path():
    from spine_nav.geometry import transform_from_quat
    from spine_nav.nodes.conversions import quat_mm_to_matrix_mm

    with pytest.raises(ValueError, match="NaN"):
        quat_mm_to_matrix_mm((0.0, 0.0, 0.0, 1.0), (float("nan"), 0.0, 0.0))
    with pytest.raises(ValueError, match="non-finite"):
        quat_mm_to_matrix_mm((float("inf"), 0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="norm"):
        quat_mm_to_matrix_mm((0.0, 0.0, 0.0, 0.5), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="norm"):
        quat_mm_to_matrix_mm((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    rng = np.random.default_rng(5)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        t = rng.uniform(-500, 500, 3)
        np.testing.assert_allclose(quat_mm_to_matrix_mm(q * (1 + 5e-4), t),
                                   transform_from_quat(q, t, order="xyzw"), atol=1e-12)


@pytest.mark.parametrize("frame_id", ["Reference", "Tracker"])
def test_one_call_rows_to_cdr_gives_the_bytes_of_the_two_call_path(frame_id):
    """validated_rows_mm_to_pose_cdr (the bridge's per-pose conversion) == quat_mm_to_pose_cdr(validated_rows_mm_to_quat_mm)
    byte for byte, on rotations covering every branch of Shepperd's method."""
    from spine_nav.geometry import random_transform

    rng = np.random.default_rng(8)
    packer = PoseStampedPacker(frame_id)
    mats = [random_transform(rng, max_translation_mm=1500.0) for _ in range(40)]
    mats += [np.diag([1.0, -1.0, -1.0, 1.0]), np.diag([-1.0, 1.0, -1.0, 1.0]), np.diag([-1.0, -1.0, 1.0, 1.0])]
    for k, M in enumerate(mats):
        rows = M[:3].tolist()
        stamp = 1_000_000.0 + k * 1e-3
        q, t_mm = validated_rows_mm_to_quat_mm(rows)
        assert validated_rows_mm_to_pose_cdr(rows, stamp, packer) == quat_mm_to_pose_cdr(q, t_mm, stamp, packer)
