"""The hardware-facing nodes are lifecycle nodes (spine_nav/nodes/lifecycle.py): what is live in each state.

For each of tracker_bridge, arm_guide, sim_arm and console_bridge: unconfigured -> configure -> activate ->
deactivate -> cleanup, checking the sockets, threads, timers and ROS entities of each state (the bridge's TCP
port accepts only when active, the arm guide's servo thread runs only when active, the simulated arm steps only
when active, the console's HTTP port answers only when active), and a configure that fails (a bad parameter
value, a missing file, a port in use) leaves the node unconfigured with the cause in its log line / exception.
Every wait is bounded.
"""
from __future__ import annotations

import http.client
import socket
import threading
from pathlib import Path

import pytest

from tests.helpers import free_tcp_port, wait_until

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "config" / "nodes.yaml"


@pytest.fixture
def up():
    """``up(cls, *overrides, **kw)``: the node in its own context (config/nodes.yaml + ``-p`` overrides), spun by
    an executor thread; everything is shut down after the test."""
    import rclpy
    from rclpy.context import Context

    from spine_nav.nodes.runner import make_executor, spin_until

    made = []

    def make(cls, *overrides, **kwargs):
        ctx = Context()
        args = ["t", "--ros-args", "--params-file", str(PARAMS)]
        for o in overrides:
            args += ["-p", o]
        rclpy.init(args=args, context=ctx)
        node = cls(context=ctx, **kwargs)
        ex = make_executor("single", context=ctx)
        ex.add_node(node)
        stop = threading.Event()
        th = threading.Thread(target=spin_until, args=(ex, lambda: not stop.is_set() and ctx.ok()), daemon=True)
        th.start()
        made.append((ctx, node, ex, stop, th))
        return node

    yield make
    for ctx, node, ex, stop, th in made:
        stop.set()
        th.join(timeout=5.0)
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)


def _ok(result) -> bool:
    from rclpy.lifecycle import TransitionCallbackReturn

    return result == TransitionCallbackReturn.SUCCESS


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return True
    except ConnectionRefusedError:
        return False


def _topics(node) -> set[str]:
    return {p.topic_name for p in node.publishers}


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def _listening_socket(port: int, reuse: bool = False) -> socket.socket:
    """A server on ``port``; ``reuse`` (SO_REUSEADDR) to check a port was released although connections the
    node closed may linger in TIME_WAIT."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


# ------------------------------------------------------------------------------------------- tracker_bridge
def test_tracker_bridge_port_accepts_only_when_active(up):
    from spine_nav.nodes.tracker_bridge import TrackerBridgeNode

    port = free_tcp_port()
    node = up(TrackerBridgeNode, "tracker_bridge:mode:=server", f"tracker_bridge:port:={port}")
    assert node.state_label == "unconfigured"
    assert "/tracking/tool_tip" not in _topics(node) and not _accepts(port)

    assert _ok(node.trigger_configure()) and node.state_label == "inactive"
    assert {"/tracking/tool_tip", "/tracking/reference", "/tracking/health"} <= _topics(node)
    assert not _accepts(port)  # reserved (bound, not listening): refused
    assert node.link is None

    assert _ok(node.trigger_activate()) and node.state_label == "active"
    with socket.create_connection(("127.0.0.1", port), timeout=2.0):
        assert wait_until(lambda: len(node.link.connections) == 1, timeout_s=20.0)  # accept thread, loaded machine
    # the watchdog timer runs: health goes out while active
    assert node.active

    assert _ok(node.trigger_deactivate()) and node.state_label == "inactive"
    assert node.link is None and not _accepts(port)
    # the port is still the node's while inactive: another server cannot take it
    with pytest.raises(OSError):
        _listening_socket(port).close()

    assert _ok(node.trigger_activate())  # and back: the same port again
    assert _accepts(port)
    assert _ok(node.trigger_deactivate())

    assert _ok(node.trigger_cleanup()) and node.state_label == "unconfigured"
    assert "/tracking/tool_tip" not in _topics(node)
    _listening_socket(port, reuse=True).close()  # released


def test_tracker_bridge_configure_fails_on_a_port_in_use_and_stays_unconfigured(up):
    from spine_nav.nodes.tracker_bridge import TrackerBridgeNode

    port = free_tcp_port()
    blocker = _listening_socket(port)
    try:
        node = up(TrackerBridgeNode, "tracker_bridge:mode:=server", f"tracker_bridge:port:={port}")
        assert not _ok(node.trigger_configure())
        assert node.state_label == "unconfigured"
        assert "parameter port" in node.transition_error and f"127.0.0.1:{port}" in node.transition_error
        assert node.transition_error.startswith("tracker_bridge: configure failed:")
        assert "/tracking/tool_tip" not in _topics(node)  # what the failed configure made is gone
    finally:
        blocker.close()
    assert _ok(node.trigger_configure())  # the cause removed, the same node configures
    assert node.state_label == "inactive"


def test_tracker_bridge_configure_fails_on_a_bad_mode(up):
    from spine_nav.nodes.lifecycle import LifecycleError, bring_up
    from spine_nav.nodes.tracker_bridge import TrackerBridgeNode

    node = up(TrackerBridgeNode, "tracker_bridge:mode:=sideways")
    with pytest.raises(LifecycleError, match="tracker_bridge: configure failed: parameter mode must be 'client' or "
                                             "'server', got 'sideways'"):
        bring_up(node)
    assert node.state_label == "unconfigured"


def test_composed_stack_and_spine_nav_up_report_a_failed_configure(capsys):
    """`spine-nav up` (ComposedStack) brings the nodes up; a node that cannot configure stops the start with
    its reason and a non-zero exit."""
    from spine_nav.cli.main import main
    from spine_nav.nodes.lifecycle import LifecycleError
    from spine_nav.nodes.runner import ComposedStack

    port = free_tcp_port()
    blocker = _listening_socket(port)
    try:
        with pytest.raises(LifecycleError, match=f"tracker_bridge: configure failed: parameter port: .*:{port}"):
            ComposedStack(["tracker_bridge"], params_file=PARAMS,
                          extra_ros_args=["-p", "tracker_bridge:mode:=server", "-p", f"tracker_bridge:port:={port}"])
        rc = main(["up", "--nodes", "tracker_bridge", "--duration", "0.1", "--ros-args", "-p",
                   "tracker_bridge:mode:=server", "-p", f"tracker_bridge:port:={port}"])
    finally:
        blocker.close()
    assert rc == 1
    err = capsys.readouterr().err
    assert "stack not started: tracker_bridge: configure failed: parameter port" in err


# ------------------------------------------------------------------------------------------- arm_guide
def _arm_command(cmd: str):
    from spine_nav_interfaces.srv import ArmCommand

    return ArmCommand.Request(command=cmd, screw_id=""), ArmCommand.Response()


def test_arm_guide_lifecycle(up):
    from spine_nav.nodes.arm_guide import ArmGuideNode

    node = up(ArmGuideNode)
    assert node.state_label == "unconfigured" and not _threads("arm_servo")
    assert "/arm/state" not in _topics(node)

    assert _ok(node.trigger_configure()) and node.state_label == "inactive"
    assert {"/arm/state", "/arm/joint_command", "/arm/guide_pose"} <= _topics(node)
    assert _threads("arm_guide_command")  # the arm/command service's executor
    assert not _threads("arm_servo")
    res = node.on_command(*_arm_command("hold"))
    assert not res.success and "not active" in res.message  # no command while inactive

    assert _ok(node.trigger_activate()) and node.state_label == "active"
    assert wait_until(lambda: node.servo.stats.cycles > 10, timeout_s=10.0)
    assert _threads("arm_servo")

    assert _ok(node.trigger_deactivate()) and node.state_label == "inactive"
    assert wait_until(lambda: not _threads("arm_servo"), timeout_s=20.0)
    cycles = node.servo.stats.cycles
    threading.Event().wait(0.2)
    assert node.servo.stats.cycles == cycles  # stopped, not paused

    assert _ok(node.trigger_activate())  # a fresh servo thread
    assert wait_until(lambda: node.servo.stats.cycles > 10, timeout_s=10.0)
    assert _ok(node.trigger_deactivate())

    assert _ok(node.trigger_cleanup()) and node.state_label == "unconfigured"
    assert not _threads("arm_guide_command") and "/arm/state" not in _topics(node)


def test_arm_guide_configure_fails_on_a_missing_urdf(up, tmp_path):
    from spine_nav.nodes.arm_guide import ArmGuideNode

    missing = tmp_path / "no_such_robot.urdf"
    node = up(ArmGuideNode, f"arm_guide:urdf:={missing}")
    assert not _ok(node.trigger_configure())
    assert node.state_label == "unconfigured"
    assert node.transition_error.startswith("arm_guide: configure failed:")
    assert "no_such_robot.urdf" in node.transition_error
    assert not _threads("arm_guide_command") and "/arm/state" not in _topics(node)


# ------------------------------------------------------------------------------------------- sim_arm
def test_sim_arm_steps_only_when_active(up):
    from spine_nav.nodes.sim_arm import SimArmNode

    node = up(SimArmNode)
    assert _ok(node.trigger_configure()) and node.state_label == "inactive"
    assert {"/joint_states", "/tracking/arm_marker"} <= _topics(node)
    t0 = node.sim.time_s
    threading.Event().wait(0.3)
    assert node.sim.time_s == t0  # the stepping timer is off while inactive

    assert _ok(node.trigger_activate())
    assert wait_until(lambda: node.sim.time_s > t0 + 0.05, timeout_s=10.0)

    assert _ok(node.trigger_deactivate())
    # a tick already running ends (on a loaded machine it can take longer than any fixed pause), then the
    # simulation time stands still: wait (bounded) for a 0.3 s window without a step, then check it stays
    t_seen = [node.sim.time_s]

    def still_for(window_s: float) -> bool:
        t_seen.append(node.sim.time_s)
        threading.Event().wait(window_s)
        return node.sim.time_s == t_seen[-1]
    assert wait_until(lambda: still_for(0.3), timeout_s=20.0), t_seen[-5:]
    t1 = node.sim.time_s
    threading.Event().wait(0.3)
    assert node.sim.time_s == t1

    assert _ok(node.trigger_cleanup()) and node.state_label == "unconfigured"
    assert node.sim is None and "/joint_states" not in _topics(node)


def test_sim_arm_configure_fails_on_a_bad_start_pose(up):
    from spine_nav.nodes.sim_arm import SimArmNode

    node = up(SimArmNode, "sim_arm:q0_rad:=[0.0, 0.1]")
    assert not _ok(node.trigger_configure())
    assert node.state_label == "unconfigured"
    assert "sim_arm: configure failed: parameter q0_rad has 2 values" in node.transition_error


# ------------------------------------------------------------------------------------------- console_bridge
def _http_status(port: int) -> int | None:
    """Status of GET / on the console port, None when the connection is refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30.0)  # in-process server thread, loaded machine
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    except ConnectionRefusedError:
        return None
    finally:
        conn.close()


def test_console_bridge_http_port_answers_only_when_active(up):
    from spine_nav.nodes.console_bridge import ConsoleBridgeNode

    port = free_tcp_port()
    node = up(ConsoleBridgeNode, f"console_bridge:port:={port}")
    assert _http_status(port) is None
    assert _ok(node.trigger_configure()) and node.state_label == "inactive"
    assert _http_status(port) is None and node.server is None
    assert any(s.topic_name == "/guard/status" for s in node.subscriptions)

    assert _ok(node.trigger_activate())
    assert _http_status(port) is not None  # the web server answers
    assert node.server.port == port

    assert _ok(node.trigger_deactivate())
    assert _http_status(port) is None and node.server is None
    node.sink({"t": "diag", "name": "x", "level": 0, "message": "", "hardware_id": ""})  # dropped, no error

    assert _ok(node.trigger_cleanup()) and node.state_label == "unconfigured"
    assert not any(s.topic_name == "/guard/status" for s in node.subscriptions)
    _listening_socket(port, reuse=True).close()  # released


def test_console_bridge_configure_fails_on_a_port_in_use(up):
    from spine_nav.nodes.console_bridge import ConsoleBridgeNode

    port = free_tcp_port()
    blocker = _listening_socket(port)
    try:
        node = up(ConsoleBridgeNode, f"console_bridge:port:={port}")
        assert not _ok(node.trigger_configure())
        assert node.state_label == "unconfigured"
        assert "console_bridge: configure failed: parameter port" in node.transition_error
        assert str(port) in node.transition_error
    finally:
        blocker.close()


def test_console_bridge_with_a_sink_forwards_only_when_active(up):
    from spine_nav.nodes.console_bridge import ConsoleBridgeNode

    got: list[dict] = []
    node = up(ConsoleBridgeNode, sink=got.append)
    assert _ok(node.trigger_configure())
    node.sink({"t": "x"})
    assert got == []
    assert _ok(node.trigger_activate())
    node.sink({"t": "x"})
    assert got == [{"t": "x"}]


def test_destroying_an_active_node_shuts_it_down(up):
    """destroy_node() from active: deactivate + cleanup (sockets closed, threads stopped), as before."""
    from spine_nav.nodes.lifecycle import bring_up
    from spine_nav.nodes.tracker_bridge import TrackerBridgeNode

    port = free_tcp_port()
    node = up(TrackerBridgeNode, "tracker_bridge:mode:=server", f"tracker_bridge:port:={port}")
    bring_up(node)
    assert _accepts(port)
    node.trigger_shutdown()
    assert node.state_label == "finalized" and not _accepts(port)
    _listening_socket(port, reuse=True).close()


def test_demo_node_process_reports_why_its_node_did_not_configure(tmp_path):
    """The demo's node processes (`spine-nav up`, supervised): a node that fails to configure ends its process
    with code 1, and the supervisor's "lost" event carries the reason (what the arm guide's hold cause shows)."""
    from spine_nav.demo.processes import NodeProcess, Supervisor

    proc = NodeProcess("navigation", ["tracker_bridge"], ["-p", "tracker_bridge:mode:=sideways"],
                       tmp_path / "navigation.log", max_duration_s=30.0)
    lost = []
    sup = Supervisor([proc], on_lost=lost.append, backoff_s=60.0).start()
    try:
        assert wait_until(lambda: bool(lost), timeout_s=90.0), proc.tail()
    finally:
        sup.stop()
        proc.stop()
    (event,) = lost
    assert event.returncode == 1
    assert event.message == ("process navigation (tracker_bridge) exited with code 1: stack not started: "
                             "tracker_bridge: configure failed: parameter mode must be 'client' or 'server', "
                             "got 'sideways'")


def test_transitions_can_be_driven_over_ros_services(up):
    """What `ros2 lifecycle set /sim_arm configure` does: the node's change_state / get_state services."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from spine_nav.nodes.sim_arm import SimArmNode

    node = up(SimArmNode)
    caller = Node("lifecycle_caller", context=node.context)
    try:
        change = caller.create_client(ChangeState, "/sim_arm/change_state")
        get = caller.create_client(GetState, "/sim_arm/get_state")
        assert change.wait_for_service(timeout_sec=20.0) and get.wait_for_service(timeout_sec=20.0)

        def call(client, request):
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            ex = SingleThreadedExecutor(context=node.context)
            ex.add_node(caller)
            try:
                assert wait_until(lambda: (ex.spin_once(timeout_sec=0.05), done.is_set())[1], timeout_s=20.0)
            finally:
                ex.shutdown(timeout_sec=1.0)
            return future.result()

        for transition, label in ((Transition.TRANSITION_CONFIGURE, "inactive"),
                                  (Transition.TRANSITION_ACTIVATE, "active")):
            assert call(change, ChangeState.Request(transition=Transition(id=transition))).success
            assert call(get, GetState.Request()).current_state.label == label
        assert node.state_label == "active" and node.active
    finally:
        caller.destroy_node()
