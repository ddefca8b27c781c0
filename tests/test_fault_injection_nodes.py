"""Fault injection through the real stack (rclpy over DDS, OpenIGTLink over TCP), composed like the demo:
sim_tracker -> tracker_bridge -> trajectory_guard. A bumped reference array latches TRACKING_LOST
until `tracking/reset_reference`; an occluded stylus is TRACKING_LOST; an untracked arm marker is not."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spine_nav.geometry import make_transform
from tests.helpers import free_tcp_port, wait_until

pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]
REF_XYZ_MM = [25.0, -80.0, -1400.0]
REF_QUAT_XYZW = [-0.7071067811865476, 0.0, 0.0, 0.7071067811865476]


class Probe:
    """Test-side node in the stack's context: publishes the plan, records health and guard status."""

    def __init__(self, stack):
        from rclpy.node import Node
        from spine_nav_interfaces.msg import GuardStatus, ScrewPlan, ToolHealth
        from std_srvs.srv import Trigger

        from spine_nav.nodes.qos import PLAN_QOS, STATUS_QOS

        self.node = Node("fault_injection_probe", context=stack.context)
        self.lock = threading.Lock()
        self.health: list = []
        self.status: list = []
        self.node.create_subscription(ToolHealth, "tracking/health", self._on(self.health), STATUS_QOS)
        self.node.create_subscription(GuardStatus, "guard/status", self._on(self.status), STATUS_QOS)
        self.plan_pub = self.node.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
        self.reset = self.node.create_client(Trigger, "tracking/reset_reference")
        stack.executor.add_node(self.node)

    def _on(self, store):
        def cb(msg):
            with self.lock:
                store.append(msg)
        return cb

    def clear(self):
        with self.lock:
            self.health.clear()
            self.status.clear()

    def last_status(self, n=1):
        with self.lock:
            return list(self.status[-n:])

    def saw_health(self, tool, pred):
        with self.lock:
            return any(h.tool == tool and pred(h) for h in self.health)


def _plan_msg():
    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.plan import Plan, Screw

    plan = Plan(screws=(Screw(id="L4_left", level="L4", side="left", entry_mm=(0, 0, 0), target_mm=(0, 0, 40),
                              diameter_mm=6.5, length_mm=45),), frame="Reference")
    return plan_to_msg(plan, time.time())


def test_bump_latches_reference_lost_in_bridge_and_guard_until_reset(ros_context):
    from spine_nav_interfaces.msg import GuardStatus
    from std_srvs.srv import Trigger

    from spine_nav.nodes.runner import ComposedStack

    port = free_tcp_port()
    args = ["-p", f"sim_tracker:port:={port}", "-p", "sim_tracker:rate_hz:=100.0", "-p", "sim_tracker:tremor_mm:=0.0",
            "-p", f"sim_tracker:tracker_reference_xyz_mm:={REF_XYZ_MM}",
            "-p", f"sim_tracker:tracker_reference_quat_xyzw:={REF_QUAT_XYZW}",
            "-p", f"tracker_bridge:port:={port}",
            # a loaded CI machine delays samples (stalls of 0.5-1 s): judge the fault handling, not sample age.
            # Occlusion and bump are reported by the tracker itself (status / latch), not found by these timeouts
            "-p", "tracker_bridge:timeout_ms:=2000.0", "-p", "trajectory_guard:stale_after_s:=3.0"]
    with ComposedStack(["sim_tracker", "tracker_bridge", "trajectory_guard"],
                       params_file=REPO / "config" / "nodes.yaml", extra_ros_args=args) as stack:
        model = stack.nodes["sim_tracker"].model  # the simulation-control API
        np.testing.assert_allclose(model.config.T_tracker_reference[:3, 3], REF_XYZ_MM)
        np.testing.assert_allclose(model.T_tracker_reference_true(0.0), model.config.T_tracker_reference)
        probe = Probe(stack)
        try:
            probe.plan_pub.publish(_plan_msg())
            model.set_tool_pose_mm(make_transform(None, [0.2, 0.0, 5.0]))  # on the line, 5 mm deep
            # arm_marker is never tracked here (lost in tracking/health) but not in health_tools: ALIGNED
            assert wait_until(lambda: any(s.state == GuardStatus.STATE_ALIGNED for s in probe.last_status(20)),
                              timeout_s=20.0), [s.reason for s in probe.last_status(3)]
            # never tracked, so never a change: it shows in the periodic health (health_publish_period_ms)
            assert wait_until(lambda: probe.saw_health("arm_marker", lambda h: h.state == 1), timeout_s=5.0)

            # stylus occluded for 0.4 s (model time): TRACKING_LOST with the tracker's reason, then back
            probe.clear()
            model.occlude("StylusToTracker", 0.4)
            assert wait_until(lambda: any(s.state == GuardStatus.STATE_TRACKING_LOST and "stylus" in s.reason
                                          for s in probe.last_status(50)), timeout_s=10.0)
            assert wait_until(lambda: probe.last_status() and probe.last_status()[0].state == GuardStatus.STATE_ALIGNED,
                              timeout_s=10.0)

            # bump the reference array 3 mm sideways (its own frame): latched lost in the bridge and the guard
            probe.clear()
            t_bump = model.bump(make_transform(None, [3.0, 0.0, 0.0]))
            assert wait_until(lambda: probe.saw_health("reference", lambda h: h.state == 1 and "bumped?" in h.reason),
                              timeout_s=10.0)
            assert wait_until(lambda: any("reference array moved" in s.reason and "bumped?" in s.reason for s in probe.last_status(20)),
                              timeout_s=10.0)
            t_model_now = model.model_time_s(time.time())
            assert wait_until(lambda: model.model_time_s(time.time()) > t_model_now + 0.5, timeout_s=5.0)
            probe.clear()
            assert wait_until(lambda: len(probe.last_status(30)) >= 30, timeout_s=10.0)
            # still lost 0.5 s later although reference samples keep arriving; the bridge withholds every tool
            # tip while latched, so these are the guard's watchdog statuses, led by the tracker's reason
            assert all(s.state == GuardStatus.STATE_TRACKING_LOST and "reference array moved" in s.reason
                       for s in probe.last_status(30))
            assert stack.nodes["tracker_bridge"].core.withheld > 0
            assert t_bump > 0

            # explicit reset (after re-registration): reference OK again; the OLD registration is now
            # off by the bump (3 mm lateral), which the guard shows as a VIOLATION
            assert probe.reset.wait_for_service(timeout_sec=5.0)
            fut = probe.reset.call_async(Trigger.Request())
            assert wait_until(fut.done, timeout_s=10.0)
            assert fut.result().success and "reference array moved" in fut.result().message
            probe.clear()
            assert wait_until(lambda: probe.saw_health("reference", lambda h: h.state == 0), timeout_s=10.0)
            assert wait_until(lambda: probe.last_status() and probe.last_status()[0].state == GuardStatus.STATE_VIOLATION,
                              timeout_s=10.0), [s.reason for s in probe.last_status(3)]
            probe.clear()
            assert wait_until(lambda: len(probe.last_status(10)) == 10, timeout_s=10.0)
            judged = [s for s in probe.last_status(10) if s.state == GuardStatus.STATE_VIOLATION]
            assert len(judged) >= 5, [s.reason for s in probe.last_status(10)]
            lateral = np.median([s.lateral_error_mm for s in judged])
            assert lateral == pytest.approx(3.0 - 0.2, abs=0.4)  # tip x 0.2 mm shifted by -3 mm (tracker noise)
        finally:
            stack.executor.remove_node(probe.node)
            probe.node.destroy_node()


def test_sim_tracker_rejects_a_bad_reference_pose_parameter():
    from spine_nav.nodes.runner import ComposedStack

    with pytest.raises(ValueError, match="tracker_reference_quat_xyzw"):
        ComposedStack(["sim_tracker"], params_file=REPO / "config" / "nodes.yaml",
                      extra_ros_args=["-p", f"sim_tracker:port:={free_tcp_port()}",
                                      "-p", "sim_tracker:tracker_reference_quat_xyzw:=[0.0, 0.0, 0.0, 0.0]"])
