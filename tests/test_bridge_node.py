"""tracker_bridge node over real TCP and real rclpy/DDS: no drops, stamps, fuzz survival, watchdog, console output."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np

from spine_nav.geometry import make_transform
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig
from spine_nav.sim.tracker_server import SimTrackerServer
from spine_nav.tracking import codec
from spine_nav.tracking.transport import IgtlClient
from tests.helpers import free_tcp_port, wait_until

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "config" / "nodes.yaml"
T_REF_TIP = make_transform(np.eye(3), [12.0, -30.0, 45.0])


class Listener:
    """A node in the stack's context that records what the bridge publishes."""

    def __init__(self, stack):
        from geometry_msgs.msg import PoseStamped
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from spine_nav_interfaces.msg import ToolHealth

        from spine_nav.nodes.qos import STATUS_QOS

        self.node = Node("bridge_test_listener", context=stack.context)
        self.tips, self.health, self.lock = [], [], threading.Lock()
        be = QoSProfile(depth=5000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(PoseStamped, "tracking/tool_tip", self._tip, be)
        self.node.create_subscription(ToolHealth, "tracking/health", self._health, STATUS_QOS)
        stack.executor.add_node(self.node)

    def _tip(self, msg):
        with self.lock:
            self.tips.append(msg)

    def _health(self, msg):
        with self.lock:
            self.health.append(msg)


def _stream_ended(bridge) -> bool:
    """The bridge has read the tracker's end of stream (every byte sent was handled and published)."""
    conn = bridge.link.connection
    return conn is not None and conn.closed


def _stack(port: int, mode: str = "client", console_port: int = 0, extra=()):
    from spine_nav.nodes.runner import ComposedStack

    args = ["-p", f"tracker_bridge:port:={port}", "-p", f"tracker_bridge:mode:={mode}", *extra]
    if console_port:  # the 3D Slicer output (its own node) composed with the bridge, as `spine-nav up` does
        return ComposedStack(["tracker_bridge", "slicer_output"], params_file=PARAMS,
                             extra_ros_args=args + ["-p", f"slicer_output:port:={console_port}"])
    return ComposedStack(["tracker_bridge"], params_file=PARAMS, extra_ros_args=args)


def test_sim_stream_every_sample_published_with_tracker_stamp():
    model = TrackerModel(TrackerModelConfig(rate_hz=200.0, noise_mm=0.0, tremor_mm=0.0, seed=1))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0)
    stack = _stack(sim.port)
    listener = Listener(stack)
    try:
        stack.start()
        sim.start()
        assert wait_until(lambda: len(listener.tips) >= 150, timeout_s=20.0)
        sim.close()
        bridge = stack.nodes["tracker_bridge"]
        assert wait_until(lambda: _stream_ended(bridge), timeout_s=10.0)
        # best effort over loopback, deep history: every published tip arrives (the assertion below)
        assert wait_until(lambda: len(listener.tips) >= bridge.published["tool_tip"], timeout_s=10.0)
        with listener.lock:
            tips = list(listener.tips)
        stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in tips])
        k = np.round((stamps - model.t0_s) * model.config.rate_hz)
        assert np.allclose(stamps, model.t0_s + k / 200.0, atol=2e-6)  # the tracker's own sample times
        assert np.all(np.diff(k) == 1), "a sample was dropped or duplicated"
        assert bridge.published["tool_tip"] == len(tips) == bridge.core.watchdog.tools["stylus"].samples_received
        assert bridge.stale_reported == 0
        p = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z] for m in tips]) * 1000.0
        np.testing.assert_allclose(p, np.tile(T_REF_TIP[:3, 3], (len(p), 1)), atol=0.01)  # mm; float32 wire
        assert all(m.header.frame_id == "Reference" for m in tips)
        assert len(bridge.latency_ns) == len(tips)
    finally:
        sim.close()
        listener.node.destroy_node()
        stack.close()


def test_fuzzed_input_counted_and_node_keeps_serving():
    port = free_tcp_port()
    stack = _stack(port, mode="server")
    listener = Listener(stack)
    rng = np.random.default_rng(5)
    T_tr = make_transform(np.eye(3), [0, 0, -1000.0])
    good = (codec.encode_transform("ReferenceToTracker", T_tr, 50.0)
            + codec.encode_transform("StylusToTracker", T_tr @ T_REF_TIP @ np.linalg.inv(
                make_transform(np.eye(3), [0, 0, 150.0])), 50.0))
    try:
        stack.start()
        bridge = stack.nodes["tracker_bridge"]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            bad_crc = bytearray(good)
            bad_crc[70] ^= 0x55
            s.sendall(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
            s.sendall(bytes(bad_crc))
            s.sendall(codec.encode_transform("StylusToTracker", np.full((4, 4), np.nan), 50.0))
            s.sendall(codec.encode_transform("StylusToTracker", np.diag([1.0, 1.0, 3.0, 1.0]), 50.0))
            s.sendall(good[:30])  # truncated header, then a complete stream again
            s.sendall(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
            for i in range(20):
                s.sendall(codec.encode_transform("ReferenceToTracker", T_tr, 60.0 + i)
                          + codec.encode_transform("StylusToTracker", T_tr @ T_REF_TIP @ np.linalg.inv(
                              make_transform(np.eye(3), [0, 0, 150.0])), 60.0 + i))
            assert wait_until(lambda: len(listener.tips) >= 15, timeout_s=10.0)
        conn_errors = bridge.core.rejected
        assert conn_errors["non-finite pose"] + conn_errors["non-rigid pose"] >= 1
        # the node still serves a brand-new connection
        n0 = len(listener.tips)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(codec.encode_transform("StylusTipToReference", T_REF_TIP, 99.0))
            assert wait_until(lambda: len(listener.tips) > n0, timeout_s=10.0)
    finally:
        listener.node.destroy_node()
        stack.close()


def test_watchdog_occlusion_and_timeout_on_health_topic():
    # the occlusion is injected once the bridge is seen receiving (model.occlude: from the next sample on):
    # a window fixed in model time (0.6-0.9 s after the tracker's start) could pass before a loaded machine's
    # bridge had (re)connected, and "missing" was then never reported
    model = TrackerModel(TrackerModelConfig(rate_hz=100.0, noise_mm=0.0, seed=2))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0)
    stack = _stack(sim.port)
    listener = Listener(stack)

    def saw(pred):
        with listener.lock:
            return any(pred(h) for h in listener.health if h.tool == "stylus")

    try:
        stack.start()
        sim.start()
        assert wait_until(lambda: saw(lambda h: h.state == 0), timeout_s=15.0)
        model.occlude("StylusToTracker", 0.3)
        assert wait_until(lambda: saw(lambda h: h.state == 1 and "missing" in h.reason), timeout_s=15.0)
        with listener.lock:
            listener.health.clear()
        assert wait_until(lambda: saw(lambda h: h.state == 0), timeout_s=15.0)  # visible again
        sim.close()  # tracker stops: sample age grows past 50 ms
        assert wait_until(lambda: saw(lambda h: h.state == 1 and h.reason.startswith("sample age")), timeout_s=15.0)
    finally:
        sim.close()
        listener.node.destroy_node()
        stack.close()


def test_console_output_plan_guard_and_tool_pose():
    from rclpy.node import Node
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.nodes.qos import PLAN_QOS, STATUS_QOS
    from spine_nav.plan import Plan, Screw
    from spine_nav_interfaces.msg import ScrewPlan

    model = TrackerModel(TrackerModelConfig(rate_hz=100.0, noise_mm=0.0, seed=3))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0)
    console_port = free_tcp_port()
    stack = _stack(sim.port, console_port=console_port)
    assert stack.links == ["tracker_bridge -> slicer_output (/tracking/tool_tip, in process)"]
    pub_node = Node("console_test_pub", context=stack.context)
    plan_pub = pub_node.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
    guard_pub = pub_node.create_publisher(GuardStatus, "guard/status", STATUS_QOS)
    stack.executor.add_node(pub_node)
    got, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        with lock:
            got.append(msg)

    def types():
        with lock:
            return {(m.type, m.device) for m in got}

    client = None
    try:
        stack.start()
        sim.start()
        client = IgtlClient("127.0.0.1", console_port, on_msg).start()
        assert client.wait_connected(10.0)
        plan = Plan(screws=(Screw(id="L4_left", level="L4", side="left", entry_mm=np.array([10.0, 20.0, 30.0]),
                                  target_mm=np.array([15.0, 60.0, 25.0]), diameter_mm=6.5, length_mm=45.0),),
                    frame="Reference", case_id="t")
        plan_pub.publish(plan_to_msg(plan, 1.0))
        want = {("POINT", "PlanPoints"), ("TRAJ", "PlanTrajectories"), ("STRING", "GuardState"),
                ("TRANSFORM", "StylusTipToReference")}

        def all_out() -> bool:  # the status is not latched: sent again until the bridge (once matched) forwards it
            if ("STRING", "GuardState") not in types():
                guard_pub.publish(GuardStatus(state=3, state_name="ALIGNED", active_screw_id="L4_left"))
            return want <= types()
        assert wait_until(all_out, timeout_s=15.0), types()
        with lock:
            pts = next(m for m in got if m.type == "POINT")
            text = next(m for m in got if m.type == "STRING").text
            tool = next(m for m in got if m.type == "TRANSFORM")
        assert pts.raw.names == ["L4_left_entry", "L4_left_target"]
        np.testing.assert_allclose(pts.raw.positions[1], [15.0, 60.0, 25.0], atol=1e-3)  # mm, PLUS/Slicer units
        assert text.startswith("ALIGNED screw=L4_left")
        np.testing.assert_allclose(tool.poses[0][1], T_REF_TIP, atol=1e-3)
        assert stack.nodes["slicer_output"].output.dropped == 0
    finally:
        if client is not None:
            client.close()
        sim.close()
        pub_node.destroy_node()
        stack.close()


def test_console_script_runs_standalone_and_stops_on_sigterm(ros_context):
    """The `tracker_bridge` console script (own process, params file) publishes the sim stream."""
    import subprocess
    import sys

    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    model = TrackerModel(TrackerModelConfig(rate_hz=100.0, noise_mm=0.0, seed=4))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0).start()
    script = Path(sys.executable).parent / "tracker_bridge"
    proc = subprocess.Popen([str(script), "--ros-args", "--params-file", str(PARAMS), "-p", f"port:={sim.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    node = Node("standalone_listener", context=ros_context)
    got = []
    node.create_subscription(PoseStamped, "tracking/tool_tip", got.append,
                             QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT))
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    try:
        assert wait_until(lambda: len(got) >= 20, timeout_s=30.0, spin=lambda: ex.spin_once(timeout_sec=0.02))
        proc.terminate()
        assert proc.wait(timeout=15) is not None  # stops on SIGTERM (no hang)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        sim.close()
        ex.shutdown()
        node.destroy_node()
    np.testing.assert_allclose([got[-1].pose.position.x * 1000.0], [T_REF_TIP[0, 3]], atol=0.01)


def _stamp_s(t) -> float:
    return t.sec + t.nanosec * 1e-9


def test_guard_composed_with_the_bridge_judges_every_sample_once_without_dds():
    """bridge + guard in one process: the guard takes each tool tip on the bridge's thread (its DDS
    subscription is gone, so nothing is judged twice), echoes every sample stamp once, and a listener
    that raises does not stop the stream."""
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.qos import STATUS_QOS
    from spine_nav.nodes.runner import ComposedStack

    model = TrackerModel(TrackerModelConfig(rate_hz=200.0, noise_mm=0.0, tremor_mm=0.0, seed=2))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0, stamp_at_send=True)
    stack = ComposedStack(["tracker_bridge", "trajectory_guard"], params_file=PARAMS,
                          extra_ros_args=["-p", f"tracker_bridge:port:={sim.port}"])
    bridge, guard = stack.nodes["tracker_bridge"], stack.nodes["trajectory_guard"]
    assert stack.links == ["tracker_bridge -> trajectory_guard (/tracking/tool_tip, in process)",
                           "tracker_bridge -> trajectory_guard (/tracking/health, in process)"]
    assert guard.tool_sub is None and guard.health_sub is None and guard.tool_in_process
    calls = []

    def broken_listener(*sample):
        calls.append(sample)
        raise RuntimeError("consumer bug")

    bridge.tool_tip_listeners.add(broken_listener)
    listener = Listener(stack)
    statuses, lock = [], threading.Lock()

    def on_status(m):
        with lock:
            statuses.append(m)

    listener.node.create_subscription(GuardStatus, "guard/status", on_status, STATUS_QOS)
    try:
        stack.start()
        sim.start()
        assert wait_until(lambda: len(listener.tips) >= 200, timeout_s=20.0)
        sim.close()
        assert wait_until(lambda: _stream_ended(bridge), timeout_s=10.0)
        assert wait_until(lambda: len(listener.tips) >= bridge.published["tool_tip"], timeout_s=10.0)
        last_tip = _stamp_s(listener.tips[-1].header.stamp)

        def last_judged() -> bool:  # the (reliable) status of the last sample has arrived
            with lock:
                return any(_stamp_s(m.tool_sample_stamp) == last_tip and m.state_name != "TRACKING_LOST"
                           for m in statuses)
        assert wait_until(last_judged, timeout_s=10.0)
        with lock, listener.lock:
            tips, got = list(listener.tips), list(statuses)
        # (the guard's heartbeat repeats the last verdict with repeat=True: a sign of life, not a judgement)
        sample_stamps = [_stamp_s(m.tool_sample_stamp) for m in got if m.state_name != "TRACKING_LOST" and not m.repeat]
        assert guard.samples == bridge.published["tool_tip"] == len(calls) == len(tips)
        assert len(sample_stamps) == len(set(sample_stamps)), "a sample was judged twice"
        assert set(sample_stamps) <= {_stamp_s(m.header.stamp) for m in tips}
        # reliable status topic: from the first status the listener got (discovery), every sample's status
        after = [t for t in (_stamp_s(m.header.stamp) for m in tips) if t >= min(sample_stamps)]
        # every sample got its status: judged, or TRACKING_LOST while the periodic health (every 20 ms) still
        # reported a tool lost at the stream's start
        answered = {_stamp_s(m.tool_sample_stamp) for m in got if not m.repeat}
        assert len(answered & set(after)) >= len(after) - 2 and len(after) > 150
        assert bridge.tool_tip_listeners.failures == [0, len(calls)]  # the guard's listener never failed
        judged = [m for m in got if m.state_name != "TRACKING_LOST"]  # (the end of the stream: lost)
        assert judged and all(m.state_name == "NO_PLAN" for m in judged)  # no plan was published
    finally:
        sim.close()
        stack.close()


def test_a_bumped_reference_is_reported_as_the_bump_never_as_a_violation():
    """bridge + guard in one process (as in the demo), the tool held on a planned screw's axis 5 mm deep, then
    the reference array is knocked 3 mm / 2 deg (the demo's --bump; a tip composed with the bumped reference
    is ~3 mm off the axis: VIOLATION). The guard must go TRACKING_LOST naming the bump and never VIOLATION;
    no tool tip composed with the bumped reference is published on DDS (docs/fault-attribution.md)."""
    from scipy.spatial.transform import Rotation
    from spine_nav_interfaces.msg import GuardStatus, ScrewPlan

    from spine_nav.geometry import transform_difference
    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.nodes.qos import PLAN_QOS, STATUS_QOS
    from spine_nav.nodes.runner import ComposedStack
    from spine_nav.plan import Plan, Screw

    tip = T_REF_TIP[:3, 3]
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=0.0, tremor_mm=0.0, seed=7))
    model.set_tool_pose_mm(T_REF_TIP)
    sim = SimTrackerServer(model, port=0, stamp_at_send=True)
    stack = ComposedStack(["tracker_bridge", "trajectory_guard"], params_file=PARAMS,
                          extra_ros_args=["-p", f"tracker_bridge:port:={sim.port}"])
    bridge = stack.nodes["tracker_bridge"]
    listener = Listener(stack)
    plan_pub = listener.node.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
    statuses, lock = [], threading.Lock()

    def on_status(m):
        with lock:
            statuses.append(m)

    def seen(pred) -> bool:
        with lock:
            return any(pred(m) for m in statuses)

    listener.node.create_subscription(GuardStatus, "guard/status", on_status, STATUS_QOS)
    plan = Plan(screws=(Screw(id="L4_left", level="L4", side="left", entry_mm=tip - [0.0, 0.0, 5.0],
                              target_mm=tip + [0.0, 0.0, 40.0], diameter_mm=6.5, length_mm=45.0),),
                frame="Reference", case_id="bump")
    try:
        stack.start()
        plan_pub.publish(plan_to_msg(plan, 1.0))
        sim.start()
        assert wait_until(lambda: seen(lambda m: m.state_name == "ALIGNED"), timeout_s=20.0)
        D = make_transform(Rotation.from_euler("x", 2.0, degrees=True).as_matrix(), [3.0, 0.0, 0.0])
        model.bump(D)
        assert wait_until(lambda: seen(lambda m: m.state_name == "TRACKING_LOST" and "bumped?" in m.reason),
                          timeout_s=20.0)
        assert wait_until(lambda: bridge.core.withheld >= 20, timeout_s=20.0)  # tips keep being held back
        sim.close()
        with lock, listener.lock:
            got, tips = list(statuses), list(listener.tips)
        assert not [m for m in got if m.state_name == "VIOLATION"], "the bump was reported as a violation"
        aligned = next(i for i, m in enumerate(got) if m.state_name == "ALIGNED")
        stop = next(m for m in got[aligned:] if m.state_name != "ALIGNED")  # the first status that is not ALIGNED
        assert stop.state_name == "TRACKING_LOST" and "reference array moved" in stop.reason, stop.reason
        worst = max(transform_difference(pose_msg_to_mm(m), T_REF_TIP)[0] for m in tips)
        assert worst < 0.1, f"a tool tip composed with the bumped reference was published ({worst:.2f} mm off)"
        # lost after samples flowed (the periodic health says "no sample yet" before the first one)
        health = [h for h in listener.health if h.tool == "reference" and h.state == 1 and h.samples_received > 0]
        assert health and "bumped?" in health[0].reason
    finally:
        sim.close()
        listener.node.destroy_node()
        stack.close()


def pose_msg_to_mm(m) -> np.ndarray:
    """PoseStamped (m) -> 4x4 (mm)."""
    from scipy.spatial.transform import Rotation

    o, q = m.pose.position, m.pose.orientation
    return make_transform(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), [o.x * 1e3, o.y * 1e3, o.z * 1e3])


def test_health_is_judged_at_a_chunk_end_when_due_and_by_the_timer_only_when_no_chunk_did():
    """While frames flow the watchdog is judged on the socket thread (``_on_chunk_end``) once due; the timer's
    call (with its grace) then finds nothing due; without chunks the timer judges; a latch judges at once."""
    import time

    stack = _stack(free_tcp_port())  # client to nobody: no frames, executor not spun (no timer runs here)
    bridge = stack.nodes["tracker_bridge"]
    seen = []
    bridge.health_listeners.add(lambda msg: seen.append(msg.tool))
    grace = min(bridge._health_period_s / 4, 0.002)
    try:
        bridge._on_chunk_end(None)
        assert sorted(seen) == ["arm_marker", "reference", "stylus"]  # due at start: judged at the chunk's end
        bridge._on_chunk_end(None)
        bridge._publish_health(grace_s=grace)  # the timer, less than a period later
        assert len(seen) == 3
        bridge._health_due = time.monotonic() - grace / 4  # due, within the timer's grace: the chunk end judges
        bridge._publish_health(grace_s=grace)
        assert len(seen) == 3
        bridge._on_chunk_end(None)
        assert len(seen) == 6
        bridge._health_due = time.monotonic() - 2 * grace  # no chunk came: the timer judges
        bridge._publish_health(grace_s=grace)
        assert len(seen) == 9
        bridge._on_latch("test latch")  # a latch publishes every tool at once, due or not
        assert len(seen) == 12
    finally:
        stack.close()
