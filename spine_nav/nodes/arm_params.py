"""The arm parameters shared by ``arm_guide`` and ``sim_arm``: which robot, which command interface.

Robot (:mod:`spine_nav.arm.description`; ``urdf`` empty = our own arm, ``urdf/spine_arm.urdf.xacro``)::

    urdf                  URDF/xacro path, or package://pkg/rel in an installed package's share
    base_link, flange_link
    guidetube_xyz_mm, guidetube_quat_xyzw     T_flange_guidetube (tool mount, mm)
    armmarker_xyz_mm, armmarker_quat_xyzw     T_flange_armmarker (tool mount, mm)
    package_paths         where package:// and $(find pkg) resolve

Commands (``command_interface``)::

    spine_nav          arm/joint_command            trajectory_msgs/JointTrajectory, one point (today's stream)
    joint_trajectory   <controller_name>/joint_trajectory   the same, for a ros2_control JointTrajectoryController
    forward_position   <controller_name>/commands   std_msgs/Float64MultiArray, positions in controller_joints order
                                                  (a forward position controller)

``controller_joints``: the controller's joint list in its order (default: the URDF chain's joints);
``joint_name_map``: ``"urdf_joint:controller_joint"`` entries where the controller (and the
joint_state_broadcaster's ``/joint_states``) name a joint differently from the URDF. Mismatches are
refused at start-up with a one-line error naming the parameter and the joint (no guessing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from spine_nav.arm.model import ArmModel

COMMAND_INTERFACES = ("spine_nav", "joint_trajectory", "forward_position")
DEFAULT_CONTROLLERS = {"spine_nav": "", "joint_trajectory": "joint_trajectory_controller",
                       "forward_position": "forward_position_controller"}


@dataclass(frozen=True)
class ArmInterface:
    """The robot and how it is commanded. ``controller_joints[k]`` is the name the controller uses for its
    k-th joint; ``urdf_index[k]`` the index of that joint in ``arm.joint_names`` (chain order)."""

    arm: ArmModel
    command_interface: str
    controller_name: str
    controller_joints: tuple[str, ...]
    urdf_index: tuple[int, ...]

    @property
    def command_topic(self) -> str:
        if self.command_interface == "spine_nav":
            return "arm/joint_command"
        suffix = "joint_trajectory" if self.command_interface == "joint_trajectory" else "commands"
        return f"{self.controller_name}/{suffix}"

    @property
    def message_type(self) -> type:
        return Float64MultiArray if self.command_interface == "forward_position" else JointTrajectory

    def command_message(self, q_urdf: np.ndarray, holding: bool, stamp: Time, sample: bool, period_s: float):
        """The position command ``q_urdf`` (chain order) as this interface sends it.

        ``forward_position``: Float64MultiArray in the controller's order (no stamp, no hold flag).
        ``joint_trajectory`` (a JointTrajectoryController): one point reached ``period_s`` from now (stamp 0 =
        "start now"); holding = the frozen position keeps being sent. ``spine_nav``: one point, stamped
        ``stamp``; frame_id "sample" when the command answers a tracker sample stamped ``stamp`` (latency
        measurable end to end), "hold" while holding (position streaming; the servo limits velocity).
        """
        if self.command_interface == "forward_position":
            return Float64MultiArray(data=self.to_controller(q_urdf))
        if self.command_interface == "joint_trajectory":
            ns = int(period_s * 1e9)
            pt = JointTrajectoryPoint(positions=self.to_controller(q_urdf),
                                      time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
            return JointTrajectory(joint_names=list(self.controller_joints), points=[pt])
        msg = JointTrajectory(joint_names=list(self.arm.joint_names),
                              points=[JointTrajectoryPoint(positions=q_urdf.tolist(), time_from_start=Duration())])
        msg.header.stamp = stamp
        msg.header.frame_id = "hold" if holding else "sample" if sample else ""
        return msg

    def to_controller(self, q_urdf: np.ndarray) -> list[float]:
        """Joint values in chain order -> the controller's order."""
        return [float(q_urdf[i]) for i in self.urdf_index]

    def from_names(self, names, values, what: str) -> np.ndarray:
        """Values named by ``names`` (controller names, any order) -> chain order. ValueError (one line)
        naming ``what`` and the first missing joint."""
        pos = {n: i for i, n in enumerate(names)}
        out = np.empty(self.arm.dof)
        for k, i in enumerate(self.urdf_index):
            j = pos.get(self.controller_joints[k])
            if j is None or j >= len(values):
                raise ValueError(f"{what}: no value for joint {self.controller_joints[k]!r} (got {list(names)})")
            out[i] = values[j]
        return out

    def joint_state(self, names, positions, velocities) -> tuple[np.ndarray, np.ndarray]:
        """A joint_states message's (names, positions, velocities) -> (q, qd) in chain order (qd zero when the
        velocities do not match the names); ValueError naming the first missing joint."""
        q = self.from_names(names, positions, "joint_states")
        qd = self.from_names(names, velocities, "joint_states") if len(velocities) == len(names) else np.zeros(self.arm.dof)
        return q, qd

    def from_controller_order(self, values, what: str) -> np.ndarray:
        if len(values) != len(self.controller_joints):
            raise ValueError(f"{what}: {len(values)} values, the controller has {len(self.controller_joints)} "
                             f"joints {list(self.controller_joints)}")
        out = np.empty(self.arm.dof)
        for k, i in enumerate(self.urdf_index):
            out[i] = values[k]
        return out


def arm_interface(values: dict, who: str) -> ArmInterface:
    """The :class:`ArmInterface` from the declared parameters above (``values``: name -> value, as
    :func:`spine_nav.nodes.parameters.declare_node_parameters` returns them); ValueError (one line, naming
    ``who`` and the parameter) if unusable."""
    from spine_nav.arm.description import ArmDescriptionConfig, load_description, tool_transform_mm
    from spine_nav.arm.model import load_arm_model

    p = values
    urdf, base, flange = str(p["urdf"]), str(p["base_link"]), str(p["flange_link"])
    pkg_paths, ctrl_joints, name_map = ([s for s in p[k] if s] for k in ("package_paths", "controller_joints",
                                                                         "joint_name_map"))
    iface, controller = str(p["command_interface"]), str(p["controller_name"])
    if iface not in COMMAND_INTERFACES:
        raise ValueError(f"{who}: parameter command_interface={iface!r}: expected one of {', '.join(COMMAND_INTERFACES)}")
    if urdf:
        if not base or not flange:
            raise ValueError(f"{who}: parameter urdf={urdf!r} needs base_link and flange_link")
        cfg = ArmDescriptionConfig(urdf, base, flange,
                                   tool_transform_mm(list(p["guidetube_xyz_mm"]), list(p["guidetube_quat_xyzw"]),
                                                     name=f"{who}: guidetube_xyz_mm/quat_xyzw"),
                                   tool_transform_mm(list(p["armmarker_xyz_mm"]), list(p["armmarker_quat_xyzw"]),
                                                     name=f"{who}: armmarker_xyz_mm/quat_xyzw"),
                                   package_paths=tuple(pkg_paths))
        arm = load_description(cfg)
    else:
        arm = load_arm_model()
    mapping: dict[str, str] = {}
    for item in name_map:
        u, sep, c = item.partition(":")
        if not sep or u not in arm.joint_names:
            raise ValueError(f"{who}: parameter joint_name_map entry {item!r}: expected 'urdf_joint:controller_joint' "
                             f"with a URDF chain joint ({', '.join(arm.joint_names)})")
        mapping[u] = c
    ros_names = [mapping.get(n, n) for n in arm.joint_names]
    if not ctrl_joints:
        ctrl_joints = ros_names
    missing = [n for n in ros_names if n not in ctrl_joints]
    extra = [n for n in ctrl_joints if n not in ros_names]
    if missing or extra or len(set(ctrl_joints)) != len(ctrl_joints):
        what = (f"joint {missing[0]!r} of the URDF chain is not in it" if missing else
                f"joint {extra[0]!r} is not on the URDF chain {arm.joint_names}" if extra else "duplicate names")
        raise ValueError(f"{who}: parameter controller_joints {ctrl_joints}: {what} (map names with joint_name_map)")
    return ArmInterface(arm, iface, controller or DEFAULT_CONTROLLERS[iface], tuple(ctrl_joints),
                        tuple(ros_names.index(n) for n in ctrl_joints))
