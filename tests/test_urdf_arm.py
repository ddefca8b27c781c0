"""The arm's single source (xacro -> URDF) agrees with MuJoCo, Pinocchio and the Gazebo assets."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from spine_nav.arm.model import DEFAULT_XACRO, GAZEBO_CONTROLLERS, expand_xacro, load_arm_model, parse_urdf
from spine_nav.resources import share_dir
from spine_nav.sim.arm import MujocoArm

REPO_ROOT = share_dir()  # the checkout (or an installed share/spine_nav)
GAZEBO = REPO_ROOT / "sim" / "gazebo"


@pytest.fixture(scope="module")
def arm():
    return load_arm_model()


def test_urdf_has_seven_limited_joints_and_frames(arm):
    assert arm.joint_names == [f"joint{i}" for i in range(1, 8)]
    for j in arm.joints:
        assert j.lower_rad < 0 < j.upper_rad and j.velocity_rad_s > 0 and j.effort_nm > 0
    root = ET.fromstring(arm.urdf_xml)
    links = {link.get("name") for link in root.findall("link")}
    assert {"RobotBase", "Flange", "GuideTube", "ArmMarker"} <= links
    for link in root.findall("link"):
        if link.get("name") != "Flange":  # a frame only
            assert link.find("inertial/mass") is not None, link.get("name")
    rc = root.find("ros2_control")
    assert [j.get("name") for j in rc.findall("joint")] == arm.joint_names


def test_mujoco_model_matches_urdf(arm):
    sim = MujocoArm(arm)
    m = sim.model
    assert [m.joint(i).name for i in range(m.njnt)] == arm.joint_names
    for j in arm.joints:
        mj = m.joint(j.name)
        assert mj.range == pytest.approx([j.lower_rad, j.upper_rad])
        assert m.body(mj.bodyid[0]).name == j.child
        assert m.body(m.body(mj.bodyid[0]).parentid[0]).name == j.parent
        np.testing.assert_allclose(mj.axis, j.axis)
        act = m.actuator(f"{j.name}_position")
        assert act.forcerange == pytest.approx([-j.effort_nm, j.effort_nm])
    # fixed links kept as bodies with the right parents (tree agrees)
    for _, parent, child in arm.fixed_tree:
        assert m.body(m.body(child).parentid[0]).name == parent


def test_pinocchio_fk_matches_mujoco(arm):
    from spine_nav.arm.kinematics import ArmKinematics

    kin = ArmKinematics(arm)
    sim = MujocoArm(arm)
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.uniform(kin.lower * 0.8, kin.upper * 0.8)
        sim.reset(q)
        for frame in ("GuideTube", "ArmMarker", "Flange"):
            np.testing.assert_allclose(kin.fk(q, frame), sim.body_pose(frame), atol=1e-6)


def test_bad_xacro_is_named(tmp_path):
    bad = tmp_path / "bad.urdf.xacro"
    bad.write_text("<robot name='x'><link name='a'/>")
    with pytest.raises(ValueError, match="bad.urdf.xacro"):
        expand_xacro(bad)
    with pytest.raises(ValueError, match="not found"):
        expand_xacro(tmp_path / "missing.xacro")


def test_gazebo_world_is_well_formed_and_references_exist():
    root = ET.parse(GAZEBO / "or_world.sdf").getroot()
    assert root.tag == "sdf"
    models = {m.get("name") for m in root.iter("model")}
    assert {"or_table", "patient_phantom"} <= models
    for uri in root.iter("uri"):
        assert (GAZEBO / uri.text).exists(), uri.text
    text = (GAZEBO / "or_world.sdf").read_text()
    for ref in set(re.findall(r"(?:urdf|sim)/[\w/]+\.(?:xacro|yaml|sdf)", text)):
        assert (REPO_ROOT / ref).is_file(), ref


def test_gazebo_bridge_and_controllers(arm):
    bridge = yaml.safe_load((GAZEBO / "bridge.yaml").read_text())
    assert isinstance(bridge, list) and bridge
    for entry in bridge:
        assert {"ros_topic_name", "gz_topic_name", "ros_type_name", "gz_type_name", "direction"} <= set(entry)
        assert entry["direction"] in ("GZ_TO_ROS", "ROS_TO_GZ", "BIDIRECTIONAL")
    ctrl = yaml.safe_load(GAZEBO_CONTROLLERS.read_text())
    assert ctrl["arm_position_controller"]["ros__parameters"]["joints"] == arm.joint_names
    # the xacro's gazebo plugin points at the existing controllers file
    root = ET.fromstring(arm.urdf_xml)
    params = root.find("gazebo/plugin/parameters").text.strip()
    assert Path(params).is_file()
    assert parse_urdf(expand_xacro(DEFAULT_XACRO)).joint_names == arm.joint_names
