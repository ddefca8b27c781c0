"""Bring your own arm (spine_nav.arm.description): bad descriptions are refused with one line naming the
file and the element; real robot descriptions that others wrote (example-robot-data: Franka Panda 7 axes,
UR5 6 axes, xArm7) load, align the guide tube and simulate; our own arm's description is kinematically
identical to the model the arm guide has always used."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spine_nav.arm.description import ArmDescriptionConfig, load_description, tool_transform_mm

ERD = "package://example-robot-data/robots/"
ROBOTS = {  # name: (urdf, base link, flange link, axes)
    "panda": (ERD + "panda_description/urdf/panda.urdf", "panda_link0", "panda_link8", 7),
    "ur5": (ERD + "ur_description/urdf/ur5_robot.urdf", "base_link", "tool0", 6),
    "xarm7": (ERD + "xarm_description/urdf/xarm7.urdf", "link_base", "link7", 7),
}
OURS = Path(__file__).resolve().parents[1] / "urdf" / "spine_arm.urdf.xacro"


def _chain_urdf(tmp_path: Path, joints: list[tuple[str, str]], name: str = "bad.urdf") -> Path:
    """A serial chain base -> l1 -> ... -> flange; ``joints`` = (type, extra XML inside <joint>)."""
    links = ["base"] + [f"l{i}" for i in range(1, len(joints))] + ["flange"]
    xml = ['<robot name="t">'] + [f'<link name="{n}"/>' for n in links]
    for i, (jtype, extra) in enumerate(joints):
        xml.append(f'<joint name="j{i + 1}" type="{jtype}"><parent link="{links[i]}"/><child link="{links[i + 1]}"/>'
                   f'<origin xyz="0 0 0.1"/><axis xyz="0 {i % 2} {1 - i % 2}"/>{extra}</joint>')
    xml.append("</robot>")
    p = tmp_path / name
    p.write_text("\n".join(xml))
    return p


LIM = '<limit lower="-2" upper="2" velocity="1" effort="10"/>'


# ---------------------------------------------------------------------------- bad input first
def test_missing_links_are_named(tmp_path):
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 6)
    with pytest.raises(ValueError, match=rf"^{p}: base_link 'base_link': no <link name='base_link'>"):
        load_description(ArmDescriptionConfig(p, "base_link", "flange"))
    with pytest.raises(ValueError, match=rf"^{p}: flange_link 'tool0': no <link name='tool0'>"):
        load_description(ArmDescriptionConfig(p, "base", "tool0"))
    with pytest.raises(ValueError, match=rf"^{p}: flange_link 'base' is not below base_link 'flange'"):
        load_description(ArmDescriptionConfig(p, "flange", "base"))
    with pytest.raises(ValueError, match=r"nope.urdf: robot description not found"):
        load_description(ArmDescriptionConfig(tmp_path / "nope.urdf", "a", "b"))


def test_too_few_axes_prismatic_floating_and_missing_limits_are_refused(tmp_path):
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 4 + [("fixed", "")])
    with pytest.raises(ValueError, match=rf"^{p}: the chain base -> flange has 4 revolute axes; .* >= 5"):
        load_description(ArmDescriptionConfig(p, "base", "flange"))
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 3 + [("prismatic", LIM)] + [("revolute", LIM)] * 3)
    with pytest.raises(ValueError, match=rf"^{p}: <joint name='j4'>: type 'prismatic' on the chain"):
        load_description(ArmDescriptionConfig(p, "base", "flange"))
    p = _chain_urdf(tmp_path, [("floating", "")] + [("revolute", LIM)] * 6)
    with pytest.raises(ValueError, match=rf"^{p}: <joint name='j1'>: type 'floating' on the chain"):
        load_description(ArmDescriptionConfig(p, "base", "flange"))
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 5 + [("revolute", '<limit velocity="1" effort="1"/>')])
    with pytest.raises(ValueError, match=rf"^{p}: <joint name='j6'>: <limit lower upper> missing"):
        load_description(ArmDescriptionConfig(p, "base", "flange"))
    # ... unless the limits are given: then the override is used
    arm = load_description(ArmDescriptionConfig(p, "base", "flange", limit_overrides={"j6": (-1.0, 1.5)}))
    assert arm.joints[-1].lower_rad == -1.0 and arm.joints[-1].upper_rad == 1.5
    with pytest.raises(ValueError, match=rf"^{p}: limit override for joint 'gripper': not on the chain"):
        load_description(ArmDescriptionConfig(p, "base", "flange", limit_overrides={"gripper": (0, 1)}))
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 5 + [("revolute", '<limit lower="-1" upper="1"/>')])
    with pytest.raises(ValueError, match=rf"^{p}: <joint name='j6'>: <limit velocity effort> missing"):
        load_description(ArmDescriptionConfig(p, "base", "flange"))


def test_tool_transform_that_is_not_rigid_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^--tool: quat_xyzw is not a unit quaternion \(norm 2.0000\)"):
        tool_transform_mm([0, 0, 100], [0, 0, 0, 2.0], name="--tool")
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 6)
    scaled = np.diag([2.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=rf"^{p}: T_flange_guidetube rotation part: rotation is not orthonormal"):
        load_description(ArmDescriptionConfig(p, "base", "flange", T_flange_guidetube_mm=scaled))


def test_continuous_joints_and_joints_off_the_chain(tmp_path):
    p = _chain_urdf(tmp_path, [("revolute", LIM)] * 5 + [("continuous", '<limit velocity="2" effort="5"/>')])
    arm = load_description(ArmDescriptionConfig(p, "base", "flange"))
    assert arm.dof == 6 and arm.joints[-1].upper_rad == pytest.approx(2 * np.pi)
    # Panda: the hand's two prismatic finger joints hang off the flange: ignored
    arm = load_description(ArmDescriptionConfig(ROBOTS["panda"][0], "panda_link0", "panda_link8"))
    assert arm.joint_names == [f"panda_joint{i}" for i in range(1, 8)]


# ---------------------------------------------------------------------------- our own arm
def test_our_arm_described_like_any_other_has_identical_kinematics():
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.arm.model import load_arm_model

    desc = load_description(ArmDescriptionConfig(
        OURS, "RobotBase", "Flange", T_flange_guidetube_mm=tool_transform_mm([0, 0, 100]),
        T_flange_armmarker_mm=tool_transform_mm([70, 0, 20], rpy_rad=[0, np.pi / 2, 0])))
    ours = load_arm_model()
    assert desc.joint_names == ours.joint_names
    assert np.array_equal(desc.lower_rad, ours.lower_rad) and np.array_equal(desc.upper_rad, ours.upper_rad)
    k1, k2 = ArmKinematics(ours), ArmKinematics(desc)
    rng = np.random.default_rng(3)
    for _ in range(20):
        q = rng.uniform(k1.lower, k1.upper)
        for frame in ("Flange", "GuideTube", "ArmMarker"):
            assert np.allclose(k1.fk(q, frame), k2.fk(q, frame), atol=1e-9), frame


# ---------------------------------------------------------------------------- real robots
@pytest.mark.parametrize("robot", sorted(ROBOTS))
def test_real_robot_aligns_the_guide_and_simulates(robot):
    """IK aligns the tube on a pose the arm can reach (FK of a mid-range configuration moved off), and the
    MuJoCo model from the same description holds a commanded configuration with its generated servo."""
    from spine_nav.arm.kinematics import AlignmentTarget, ArmKinematics
    from spine_nav.sim.arm import MujocoArm

    urdf, base, flange, axes = ROBOTS[robot]
    arm = load_description(ArmDescriptionConfig(urdf, base, flange))
    assert arm.dof == axes
    kin = ArmKinematics(arm)
    rng = np.random.default_rng(0)
    q_true = np.clip(kin.mid + rng.uniform(-0.5, 0.5, arm.dof), kin.lower, kin.upper)
    T = kin.fk(q_true)
    target = AlignmentTarget(T[:3, 3], T[:3, 2])
    r = kin.align(target, np.clip(q_true + 0.3, kin.lower, kin.upper))
    pos, ang = kin.alignment_error(r.q_rad, target)
    assert r.converged and pos < 1e-3 and ang < 1e-3
    sim = MujocoArm(arm, q0_rad=q_true)
    sim.command(q_true)
    sim.step(500)
    _, q, qd = sim.state()
    assert np.max(np.abs(q - q_true)) < 1e-3 and np.max(np.abs(qd)) < 1e-2
    assert np.allclose(sim.body_pose("GuideTube"), kin.fk(q), atol=1e-3)
