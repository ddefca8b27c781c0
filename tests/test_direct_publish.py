"""Serialized messages published through rcl from C (spine_nav/nodes/_rcl_publish.c, spine_nav/nodes/direct_publish.py).

Bad input first (a zero address, not bytes, after close, an rcl failure with its own text), then the bytes a real DDS
subscription receives (the same as rclpy's publish of them), the handle's lifetime (rclpy cannot finalize the publisher
while the C object holds its address), the fallback to rclpy's publish, and the tracker bridge node using it.
"""
from __future__ import annotations

import os
import time

import pytest

from spine_nav.nodes import direct_publish
from spine_nav.nodes.direct_publish import DirectPublisher, serialized_outputs

needs_c = pytest.mark.skipif(direct_publish._native is None,
                             reason=f"publishing through rclpy: {direct_publish.WHY_RCLPY} "
                                    "(test_the_extension_is_built_by_the_set_up fails unless SPINE_NAV_NATIVE=0)")


def test_the_extension_is_built_by_the_set_up():
    """`make` builds it (setup.py ext_modules); a missing build step must show, not fall back in silence."""
    if os.environ.get("SPINE_NAV_NATIVE") == "0":
        pytest.skip("SPINE_NAV_NATIVE=0 asks for rclpy's publish")
    assert direct_publish._native is not None, direct_publish.WHY_RCLPY


@pytest.fixture
def node(ros_context):
    import rclpy

    n = rclpy.create_node("direct_publish_test", context=ros_context)
    yield n
    n.destroy_node()


def _pose_publisher(node, topic="direct/pose"):
    from geometry_msgs.msg import PoseStamped

    return node.create_publisher(PoseStamped, topic, 10)


def _pose_bytes(stamp_s: float, x_m: float) -> bytes:
    from spine_nav.nodes.cdr import PoseStampedPacker

    return PoseStampedPacker("Reference").pack(stamp_s, (x_m, 0.2, -0.3), (0.0, 0.0, 0.0, 1.0))


@needs_c
def test_a_zero_address_is_refused_naming_the_topic():
    with pytest.raises(ValueError, match="/tracking/tool_tip"):
        direct_publish._native.Publisher(0, "/tracking/tool_tip")
    with pytest.raises(OverflowError):
        direct_publish._native.Publisher(-1, "/tracking/tool_tip")
    with pytest.raises(OverflowError):
        direct_publish._native.Publisher(2 ** 64, "/tracking/tool_tip")
    with pytest.raises(TypeError):
        direct_publish._native.Publisher("1234", "/t")
    with pytest.raises(TypeError):
        direct_publish._native.Publisher(1234.0, "/t")
    with pytest.raises(TypeError):
        direct_publish._native.Publisher(1234, b"/t")


@needs_c
def test_a_publisher_never_initialised_refuses_to_publish():
    bare = direct_publish._native.Publisher.__new__(direct_publish._native.Publisher)
    with pytest.raises(RuntimeError, match="never initialised"):
        bare.publish(b"\0" * 8)
    assert bare.closed


@needs_c
def test_anything_but_bytes_is_refused_naming_the_topic_and_the_type(node):
    direct = DirectPublisher(_pose_publisher(node))
    try:
        for bad, name in (("text", "str"), (bytearray(b"\0" * 8), "bytearray"), (memoryview(b"\0" * 8), "memoryview"),
                          (None, "NoneType"), (12, "int")):
            with pytest.raises(TypeError, match=rf"publish to /direct/pose: expected bytes .*got {name}"):
                direct.publish(bad)
    finally:
        direct.close()


@needs_c
def test_publishing_after_close_raises_and_close_is_idempotent(node):
    direct = DirectPublisher(_pose_publisher(node))
    direct.close()
    direct.close()
    assert direct.closed
    with pytest.raises(RuntimeError, match="/direct/pose: the publisher was closed"):
        direct.publish(_pose_bytes(1.0, 0.1))


@needs_c
def test_an_rcl_failure_raises_with_rcl_s_own_text(ros_context):
    """A publisher whose context was shut down: rcl refuses it; the error says so, and rcl's error state is reset."""
    import rclpy

    n = rclpy.create_node("direct_publish_shutdown", context=ros_context)
    direct = DirectPublisher(_pose_publisher(n))
    try:
        rclpy.shutdown(context=ros_context)
        with pytest.raises(RuntimeError, match=r"/direct/pose: rcl_publish_serialized_message returned \d+: .*context"):
            direct.publish(_pose_bytes(1.0, 0.1))
        with pytest.raises(RuntimeError, match="returned"):  # the same again: the error state was reset, not stacked
            direct.publish(_pose_bytes(1.0, 0.1))
    finally:
        direct.close()
        n.destroy_node()


def _received(node, topic: str, publish, payloads: list[bytes], timeout_s: float = 10.0) -> list[bytes]:
    """Publish ``payloads`` (each until the raw subscription has it) and return what the subscription received."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor

    got: list[bytes] = []
    node.create_subscription(PoseStamped, topic, got.append, 10, raw=True)
    ex = SingleThreadedExecutor(context=node.context)
    ex.add_node(node)
    try:
        deadline = time.monotonic() + timeout_s
        while not got and time.monotonic() < deadline:  # discovery: until the first arrives
            publish(payloads[0])
            ex.spin_once(timeout_sec=0.05)
        got.clear()
        for data in payloads:
            n = len(got)
            publish(data)
            while len(got) == n and time.monotonic() < deadline:
                ex.spin_once(timeout_sec=0.05)
    finally:
        ex.remove_node(node)
        ex.shutdown()
    return got


@needs_c
def test_a_dds_subscription_receives_exactly_the_bytes_and_the_pose(node):
    from geometry_msgs.msg import PoseStamped
    from rclpy.serialization import deserialize_message

    direct = DirectPublisher(_pose_publisher(node))
    assert direct.how == "rcl from C"
    payloads = [_pose_bytes(1000.0 + 0.001 * k, 0.01 * k) for k in range(20)]
    try:
        got = _received(node, "direct/pose", direct.publish, payloads)
    finally:
        direct.close()
    assert got == payloads
    msg = deserialize_message(got[7], PoseStamped)
    assert msg.header.frame_id == "Reference"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1000, 7_000_000)
    assert (msg.pose.position.x, msg.pose.position.y, msg.pose.position.z) == pytest.approx((0.07, 0.2, -0.3))


def test_rclpy_s_publish_of_the_same_bytes_is_received_the_same(node):
    """The reference the C path is held to (and the fallback when it is not built)."""
    pub = _pose_publisher(node, "direct/rclpy")
    payloads = [_pose_bytes(1000.0 + 0.001 * k, 0.01 * k) for k in range(5)]
    assert _received(node, "direct/rclpy", pub.publish, payloads) == payloads


@needs_c
def test_rclpy_destroys_the_publisher_only_after_close(node):
    pub = _pose_publisher(node)
    direct = DirectPublisher(pub)
    address = pub.handle.pointer
    node.destroy_publisher(pub)  # deferred: the C object still holds the address
    assert pub.handle.pointer == address
    direct.publish(_pose_bytes(1.0, 0.1))  # still a live rcl publisher
    direct.close()
    assert pub.handle.pointer == 0  # now finalized by rclpy


def test_without_the_extension_it_is_rclpy_s_publish(node, monkeypatch):
    monkeypatch.setattr(direct_publish, "_native", None)
    monkeypatch.setattr(direct_publish, "WHY_RCLPY", "SPINE_NAV_NATIVE=0")
    pub = _pose_publisher(node)
    direct = DirectPublisher(pub)
    assert direct.publish == pub.publish
    assert direct.how == "rclpy (SPINE_NAV_NATIVE=0)"
    direct.close()  # nothing to release
    assert not direct.closed


def test_serialized_outputs_close_every_publisher_at_cleanup(node):
    from spine_nav.nodes.cdr import PoseStampedPacker

    pubs = {"tool_tip": _pose_publisher(node, "a"), "reference": _pose_publisher(node, "b")}
    closers = []
    outs, how = serialized_outputs(pubs, {"tool_tip": "Reference", "reference": "Tracker"}, closers.append)
    assert set(outs) == set(pubs) and len(closers) == 2
    assert how == ("rcl from C" if direct_publish._native is not None else f"rclpy ({direct_publish.WHY_RCLPY})")
    assert all(isinstance(packer, PoseStampedPacker) for _, packer in outs.values())
    for close in closers:
        close()
    if direct_publish._native is not None:
        with pytest.raises(RuntimeError, match="closed"):
            outs["tool_tip"][0](_pose_bytes(1.0, 0.1))


def test_the_tracker_bridge_publishes_through_c_and_releases_it_on_shutdown():
    """The node's pose outputs are DirectPublishers; its shutdown (deactivate: the socket closed, then cleanup) closes
    them before the publishers are destroyed."""
    from spine_nav.nodes.runner import ComposedStack
    from spine_nav.resources import share_path

    stack = ComposedStack(["tracker_bridge"], params_file=share_path("config", "nodes.yaml"),
                          extra_ros_args=["-p", "tracker_bridge:port:=9", "-p", "tracker_bridge:mode:=client"])
    bridge = stack.nodes["tracker_bridge"]
    try:
        stack.start()
        outs = dict(bridge._outs)
        assert set(outs) == {"tool_tip", "reference", "arm_marker"}
        if direct_publish._native is not None:
            assert bridge._publish_how == "rcl from C"
            assert not any(publish.__self__.closed for publish, _ in outs.values())
    finally:
        stack.close()
    if direct_publish._native is not None:
        assert all(publish.__self__.closed for publish, _ in outs.values())
