"""Real rclpy over DDS: two nodes exchange the custom guard status; the plan publisher latches its plan."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor

from tests.helpers import wait_until

pytestmark = pytest.mark.ros


def test_two_nodes_exchange_guard_status(ros_context):
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.qos import STATUS_QOS

    talker = rclpy.create_node("test_guard_talker", context=ros_context)
    listener = rclpy.create_node("test_guard_listener", context=ros_context)
    received: list[GuardStatus] = []
    listener.create_subscription(GuardStatus, "guard/status", received.append, STATUS_QOS)
    pub = talker.create_publisher(GuardStatus, "guard/status", STATUS_QOS)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(talker)
    ex.add_node(listener)
    assert wait_until(lambda: pub.get_subscription_count() > 0, 30.0, spin=lambda: ex.spin_once(timeout_sec=0.01))
    msg = GuardStatus(active_screw_id="L4_left", state=GuardStatus.STATE_WARN, state_name="WARN",
                      lateral_error_mm=1.25, angular_error_deg=2.5, depth_mm=-3.0, remaining_mm=48.0)
    msg.tool_sample_stamp.sec = 42
    msg.tool_sample_stamp.nanosec = 500
    pub.publish(msg)
    assert wait_until(lambda: len(received) == 1, 10.0, spin=lambda: ex.spin_once(timeout_sec=0.01))
    got = received[0]
    assert got.active_screw_id == "L4_left" and got.state == GuardStatus.STATE_WARN
    assert got.lateral_error_mm == 1.25 and got.angular_error_deg == 2.5 and got.depth_mm == -3.0
    assert (got.tool_sample_stamp.sec, got.tool_sample_stamp.nanosec) == (42, 500)
    ex.shutdown()
    talker.destroy_node()
    listener.destroy_node()


def _plan_dict():
    return {"screws": [{"id": "L3_left", "level": "L3", "side": "left", "entry_mm": [10, 20, 30],
                        "target_mm": [12, 60, 25], "diameter_mm": 6.5, "length_mm": 45}]}


def test_plan_publisher_latches_plan_in_metres(tmp_path):
    """The node runs composed (ComposedStack, like `spine-nav up`); a late subscriber gets the plan."""
    from spine_nav_interfaces.msg import ScrewPlan

    from spine_nav.nodes.conversions import msg_to_plan
    from spine_nav.nodes.qos import PLAN_QOS
    from spine_nav.nodes.runner import ComposedStack

    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(_plan_dict()))
    with ComposedStack(["plan_publisher"], extra_ros_args=["-p", f"plan_publisher:plan_path:={plan_path}"]):
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx)
        try:
            node = rclpy.create_node("test_plan_listener", context=ctx)
            got: list[ScrewPlan] = []
            node.create_subscription(ScrewPlan, "plan/preop", got.append, PLAN_QOS)
            ex = SingleThreadedExecutor(context=ctx)
            ex.add_node(node)
            # (30 s: discovery of the composed node from a fresh context is slower on a loaded machine)
            assert wait_until(lambda: got, 30.0, spin=lambda: ex.spin_once(timeout_sec=0.02))
            msg = got[0]
            assert msg.screws[0].id == "L3_left"
            assert msg.screws[0].entry.x == pytest.approx(0.010)  # metres on the topic
            plan, not_nav = msg_to_plan(msg)
            assert np.allclose(plan.screws[0].entry_mm, [10, 20, 30]) and not not_nav
            ex.shutdown()
            node.destroy_node()
        finally:
            rclpy.shutdown(context=ctx)


def test_plan_publisher_rejects_corrupt_plan_and_keeps_running(tmp_path):
    from spine_nav.nodes.runner import ComposedStack

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"screws": [{**_plan_dict()["screws"][0], "diameter_mm": float("nan")}]}))
    with ComposedStack(["plan_publisher"], extra_ros_args=["-p", f"plan_publisher:plan_path:={bad}"]) as stack:
        node = stack.nodes["plan_publisher"]
        assert node.plan is None
        good = tmp_path / "good.json"
        good.write_text(json.dumps(_plan_dict()))
        assert node.load_and_publish(str(good)) is True
        assert node.plan.ids == ["L3_left"]


def test_pose_parameter_helper_builds_the_transform_and_names_bad_values(ros_context):
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter

    from spine_nav.geometry import make_transform
    from spine_nav.nodes.parameters import declare_pose_parameter

    default = make_transform(np.eye(3), [1.0, 2.0, 3.0])
    node = rclpy.create_node("pose_param_ok", context=ros_context)
    try:
        assert np.allclose(declare_pose_parameter(node, "tracker_robotbase", default), default)
    finally:
        node.destroy_node()
    node = rclpy.create_node("pose_param_bad", context=ros_context, parameter_overrides=[
        Parameter("tracker_robotbase_quat_xyzw", value=[0.0, 0.0, 0.0, 0.0])])
    try:
        with pytest.raises(ValueError, match=r"pose_param_bad: parameters tracker_robotbase_xyz_mm=.* / "
                                             r"tracker_robotbase_quat_xyzw=\[0.0, 0.0, 0.0, 0.0\]"):
            declare_pose_parameter(node, "tracker_robotbase")
    finally:
        node.destroy_node()
