"""The demo's conductor: a ROS 2 participant playing surgeon, scrub nurse and recorder.

It talks to the stack only through its public ROS surface (services ``registration/register``,
``guard/select_screw``, ``arm/command``; topics ``guard/status``, ``arm/state``,
``arm/joint_command``; it moves the simulated drill on ``sim/tool_tip_truth``) and records
every message it receives with its arrival time, so latency is measured end to end.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.context import Context
from spine_nav_interfaces.msg import ArmState, GuardStatus
from spine_nav_interfaces.srv import ArmCommand, Register, SelectScrew
from trajectory_msgs.msg import JointTrajectory

from spine_nav.geometry import validate_transform
from spine_nav.nodes.conversions import stamp_to_seconds, validated_matrix_mm_to_pose_stamped
from spine_nav.nodes.qos import SENSOR_QOS, STATUS_QOS
from spine_nav.nodes.runner import make_executor, spin_until


@dataclass
class StatusSample:
    received_s: float
    sample_s: float
    screw_id: str
    state: str
    reason: str
    lateral_error_mm: float
    angular_error_deg: float
    depth_mm: float
    remaining_mm: float
    guard_s: float = 0.0  # the status's header.stamp: when the guard took the sample in (its clock)


@dataclass
class Recording:
    statuses: list[StatusSample] = field(default_factory=list)
    command_latency_s: list[float] = field(default_factory=list)
    arm_states: list[tuple[float, ArmState]] = field(default_factory=list)



def wait_locked(lock: threading.Lock, predicate, timeout_s: float, period_s: float = 0.01) -> bool:
    """Bounded wait until ``predicate()`` (evaluated under ``lock``) is true; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lock:
            ok = predicate()
        if ok:
            return True
        time.sleep(period_s)
    return False


class Conductor:
    """Own context, own executor thread; all waits are bounded."""

    def __init__(self, arm_service: str = "arm/command") -> None:
        """``arm_service``: where the surgeon's arm commands go (``spine-nav demo --hosts``: through the
        console's command panel, ``console/arm_command``, :mod:`spine_nav.nodes.command_source`)."""
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("demo_conductor", context=self.context)
        self.rec = Recording()
        self._lock = threading.Lock()
        self.last_status: GuardStatus | None = None
        self.last_arm: ArmState | None = None
        self.node.create_subscription(GuardStatus, "guard/status", self._on_status, STATUS_QOS)
        self.node.create_subscription(ArmState, "arm/state", self._on_arm, STATUS_QOS)
        self.node.create_subscription(JointTrajectory, "arm/joint_command", self._on_command, STATUS_QOS)
        self.tool_pub = self.node.create_publisher(PoseStamped, "sim/tool_tip_truth", SENSOR_QOS)
        self.register_cli = self.node.create_client(Register, "registration/register")
        self.select_cli = self.node.create_client(SelectScrew, "guard/select_screw")
        self.arm_cli = self.node.create_client(ArmCommand, arm_service)
        self.executor = make_executor("events", context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._tool_pose: np.ndarray | None = None
        self._hand_thread = threading.Thread(target=self._hand, name="demo_hand", daemon=True)
        self._hand_thread.start()
        self._thread = threading.Thread(
            target=spin_until, args=(self.executor, lambda: not self._stop.is_set() and self.context.ok()),
            name="demo_conductor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ recording
    def _on_status(self, msg: GuardStatus) -> None:
        now = time.time()
        with self._lock:
            self.last_status = msg
            self.rec.statuses.append(StatusSample(
                now, stamp_to_seconds(msg.tool_sample_stamp), msg.active_screw_id, msg.state_name, msg.reason,
                msg.lateral_error_mm, msg.angular_error_deg, msg.depth_mm, msg.remaining_mm,
                stamp_to_seconds(msg.header.stamp)))

    def _on_arm(self, msg: ArmState) -> None:
        with self._lock:
            self.last_arm = msg
            self.rec.arm_states.append((time.time(), msg))

    def _on_command(self, msg: JointTrajectory) -> None:
        # arm_guide stamps a command with the tracker sample time of the newest reference it used
        # (frame_id "sample"); periodic keep-alive commands carry frame_id "" / "hold".
        if msg.header.frame_id == "sample":
            self.rec.command_latency_s.append(time.time() - stamp_to_seconds(msg.header.stamp))

    # ------------------------------------------------------------------ calls
    def call(self, client, request, timeout_s: float) -> Any:
        """Call a service and wait (bounded). Raises TimeoutError naming the service."""
        if not client.wait_for_service(timeout_sec=min(timeout_s, 10.0)):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {client.srv_name}: no answer within {timeout_s:.0f} s")
            time.sleep(0.005)
        return future.result()

    def arm(self, command: str, screw_id: str = "") -> tuple[bool, str]:
        res = self.call(self.arm_cli, ArmCommand.Request(command=command, screw_id=screw_id), 10.0)
        return res.success, res.message

    def select_screw(self, screw_id: str) -> tuple[bool, str]:
        res = self.call(self.select_cli, SelectScrew.Request(screw_id=screw_id), 5.0)
        return res.success, res.message

    def move_tool(self, T_reference_tooltip: np.ndarray) -> None:
        """Hold the simulated drill at this true pose (Reference frame); the hand thread keeps
        publishing it at 100 Hz (best-effort topic: a single message could be lost)."""
        T = validate_transform(T_reference_tooltip, "T_reference_tooltip")
        with self._lock:
            self._tool_pose = T
        self._publish_tool()

    def _publish_tool(self) -> None:
        with self._lock:
            T = self._tool_pose
        if T is not None:  # validated in move_tool: the fast conversion is safe here
            self.tool_pub.publish(validated_matrix_mm_to_pose_stamped(T, "Reference", time.time()))

    def _hand(self) -> None:
        while not self._stop.wait(0.01):
            self._publish_tool()

    def wait_for(self, predicate, timeout_s: float, period_s: float = 0.01) -> bool:
        return wait_locked(self._lock, predicate, timeout_s, period_s)

    def close(self) -> None:
        self._stop.set()
        self._hand_thread.join(timeout=2.0)
        self._thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)
