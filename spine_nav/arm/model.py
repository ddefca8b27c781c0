"""The arm model from its single source, ``urdf/spine_arm.urdf.xacro``.

:func:`load_arm_model` expands the xacro (the ``xacro`` package) into URDF XML and
reads joint names, limits and the kinematic tree from it. Pinocchio
(:mod:`spine_nav.arm.kinematics`), MuJoCo (:mod:`spine_nav.sim.arm`) and the
Gazebo assets all start from this XML. URDF units: metres, radians.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from spine_nav.resources import share_path

DEFAULT_XACRO = share_path("urdf", "spine_arm.urdf.xacro")
GAZEBO_CONTROLLERS = share_path("sim", "gazebo", "controllers.yaml")

#: spine_nav frame names = URDF link names.
BASE_FRAME, FLANGE_FRAME, TUBE_FRAME, MARKER_FRAME = "RobotBase", "Flange", "GuideTube", "ArmMarker"


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint (URDF ``<joint type="revolute">``): limits in rad, rad/s, N m."""

    name: str
    parent: str
    child: str
    axis: tuple[float, float, float]
    lower_rad: float
    upper_rad: float
    velocity_rad_s: float
    effort_nm: float


@dataclass(frozen=True)
class ArmModel:
    """The expanded URDF and what the controller needs from it."""

    urdf_xml: str
    source: Path
    joints: tuple[JointSpec, ...]
    fixed_tree: tuple[tuple[str, str, str], ...]  # (joint, parent link, child link) of every joint
    #: shoulder, elbow and wrist joints of an S-R-S arm (our own arm: exact reach shell in
    #: ArmKinematics.check_reach); None for any other arm (spine_nav.arm.description): a bound instead
    reach_joints: tuple[str, str, str] | None = ("joint2", "joint4", "joint6")

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def lower_rad(self) -> np.ndarray:
        return np.array([j.lower_rad for j in self.joints])

    @property
    def upper_rad(self) -> np.ndarray:
        return np.array([j.upper_rad for j in self.joints])

    @property
    def velocity_limit_rad_s(self) -> np.ndarray:
        return np.array([j.velocity_rad_s for j in self.joints])

    @property
    def dof(self) -> int:
        return len(self.joints)


def expand_xacro(path: str | Path = DEFAULT_XACRO, controllers_file: str | Path = GAZEBO_CONTROLLERS) -> str:
    """xacro -> URDF XML string. Raises ValueError naming the file when it does not expand."""
    import xacro

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: arm xacro not found")
    try:
        doc = xacro.process_file(str(p), mappings={"controllers_file": str(controllers_file)})
    except Exception as exc:  # xacro raises its own XacroException and xml errors
        raise ValueError(f"{p}: xacro expansion failed ({exc})") from None
    return doc.toprettyxml(indent="  ")


def parse_urdf(urdf_xml: str, source: Path = DEFAULT_XACRO) -> ArmModel:
    """Read joints (in tree order from the root) and the tree from URDF XML."""
    root = ET.fromstring(urdf_xml)
    joints: list[JointSpec] = []
    tree: list[tuple[str, str, str]] = []
    for j in root.findall("joint"):
        name, jtype = j.get("name"), j.get("type")
        parent, child = j.find("parent").get("link"), j.find("child").get("link")
        tree.append((name, parent, child))
        if jtype == "fixed":
            continue
        if jtype != "revolute":
            raise ValueError(f"{source}: joint {name!r} has type {jtype!r}; spine_arm expects revolute or fixed")
        lim = j.find("limit")
        if lim is None:
            raise ValueError(f"{source}: joint {name!r} has no <limit>")
        axis = tuple(float(v) for v in (j.find("axis").get("xyz") if j.find("axis") is not None else "1 0 0").split())
        joints.append(JointSpec(name, parent, child, axis, float(lim.get("lower")), float(lim.get("upper")),
                                float(lim.get("velocity")), float(lim.get("effort"))))
    return ArmModel(urdf_xml=urdf_xml, source=Path(source), joints=tuple(joints), fixed_tree=tuple(tree))


@lru_cache(maxsize=4)
def load_arm_model(path: str | Path = DEFAULT_XACRO) -> ArmModel:
    """The arm model from the xacro (cached per path: expansion takes ~50 ms)."""
    return parse_urdf(expand_xacro(path), Path(path))
