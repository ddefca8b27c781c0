"""Robot base layout: the demo's base pose reaches every planned screw (both sides, L1-L5) with the
arm's own alignment IK, and the search rejects poses the arm cannot work from, saying why.

Plans as the demo builds them (``case_geometry``: the case's own draws, plan mapped to Reference
through the ground truth), without rendering volumes. Bounded: ~10-20 s in all."""
from __future__ import annotations

import numpy as np
import pytest

from spine_nav.arm.kinematics import AlignmentTarget, ArmKinematics
from spine_nav.arm.layout import (BasePose, alignment_targets, evaluate_layout, reach_screen, robotbase_from_reference,
                                  search_layout)
from spine_nav.arm.model import load_arm_model
from spine_nav.demo.scene import DEMO_BASE_POSE, layout_for_plan
from spine_nav.geometry import invert, transform_directions, transform_points
from spine_nav.phantom.case import case_geometry, plan_screws
from spine_nav.plan import Plan
from spine_nav.sim.arm import default_scene

STANDOFF_MM = 25.0  # DemoConfig.standoff_mm / ArmGuideConfig.standoff_mm


@pytest.fixture(scope="module")
def kin():
    return ArmKinematics(load_arm_model())


def plan_in_reference(seed: int) -> Plan:
    """The plan of ``generate_case(seed)`` mapped to Reference through its ground truth."""
    spine, _, T_cbct_preop = case_geometry(seed)
    plan = Plan(screws=tuple(plan_screws(spine)), frame="PreopCT")
    return plan.transformed_per_level(T_cbct_preop, frame="Reference")


@pytest.fixture(scope="module")
def plans():
    return {seed: plan_in_reference(seed) for seed in (0, 1, 2)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_layout_reaches_all_ten_screws(kin, plans, seed):
    plan = plans[seed]
    assert len(plan.screws) == 10 and {s.side for s in plan.screws} == {"left", "right"}
    scene = layout_for_plan(plan, default_scene().T_tracker_robotbase, kin=kin, standoff_mm=STANDOFF_MM, search=False)
    lay = scene.layout
    assert lay.pose == DEMO_BASE_POSE and not lay.reason
    assert lay.n_reached == 10, lay.summary()
    assert lay.worst_margin >= 0.02 and lay.worst_sigma > 0.01, lay.summary()
    # an OR pose: cranial end, on the midline, on an elevated column (>= 200 mm above the entries)
    assert DEMO_BASE_POSE.plausible() == "" and DEMO_BASE_POSE.family == "cranial"
    assert DEMO_BASE_POSE.x_mm == 0.0 and DEMO_BASE_POSE.y_mm > 200.0 and DEMO_BASE_POSE.z_mm >= 200.0
    assert {s.screw_id for s in lay.screws} == {s.id for s in plan.screws}
    # independently of the layout module: the targets exactly as ArmGuide.align builds them from
    # T_robotbase_reference, solved from the demo's home joints
    T_b_r = scene.T_robotbase_reference
    np.testing.assert_allclose(T_b_r, robotbase_from_reference(plan, DEMO_BASE_POSE))
    np.testing.assert_allclose(scene.T_tracker_reference, scene.T_tracker_robotbase @ T_b_r)
    q = default_scene().q_home_rad
    for s in plan.screws:
        d = s.direction
        target = AlignmentTarget(transform_points(T_b_r, s.entry_mm - STANDOFF_MM * d), transform_directions(T_b_r, d))
        r = kin.align(target, q)  # raises UnreachableTarget (with the reason) when not reachable
        assert r.converged and kin.limit_margin(r.q_rad) >= 0.02, s.id
        T = kin.fk(r.q_rad)
        # the tube opening sits STANDOFF_MM above the entry on the planned line, axis along it (Reference)
        T_r_tube = invert(T_b_r) @ T
        np.testing.assert_allclose(T_r_tube[:3, 3], s.entry_mm - STANDOFF_MM * d, atol=0.01)
        assert float(T_r_tube[:3, 2] @ d) > np.cos(np.radians(0.01))
        q = r.q_rad  # the next screw starts where this one ended, as in the demo


def test_base_far_from_table_is_rejected_with_the_reason(kin, plans):
    plan = plans[0]
    far = evaluate_layout(kin, plan, BasePose("side_left", -1500.0, 0.0, 100.0), standoff_mm=STANDOFF_MM)
    assert far.n_reached == 0 and not far.all_reached
    assert set(far.failures) == {s.id for s in plan.screws}
    for why in far.failures.values():
        assert "out of reach" in why and "move the robot base closer" in why, why
    assert "0/10 screws reached" in far.summary() and "out of reach" in far.summary()
    good = evaluate_layout(kin, plan, DEMO_BASE_POSE, standoff_mm=STANDOFF_MM)
    assert good.key > far.key
    # a base standing under the patient is not an OR pose: rejected before any IK
    under = evaluate_layout(kin, plan, BasePose("side_left", -100.0, 0.0, 0.0), standoff_mm=STANDOFF_MM)
    assert under.reason.startswith("base over the table/patient") and under.key < far.key
    assert all(not s.reached for s in under.screws)


def test_reach_screen_agrees_with_check_reach(kin, plans):
    ids, pts, axes = alignment_targets(plans[1], STANDOFF_MM)
    poses = [DEMO_BASE_POSE, BasePose("side_left", -1500.0, 0.0, 100.0), BasePose("cranial", 0.0, 350.0, 200.0)]
    screen = reach_screen(kin, poses, pts, axes)
    for pose, (n_ok, _slack) in zip(poses, screen):
        T_b_t = invert(pose.T_table_robotbase)
        n = 0
        for p, a in zip(transform_points(T_b_t, pts), transform_directions(T_b_t, axes)):
            try:
                kin.check_reach(AlignmentTarget(p, a))
                n += 1
            except ValueError:
                pass
        assert int(n_ok) == n, pose
    assert screen[0, 0] == 10 and screen[1, 0] == 0 and screen[1, 1] < 0


def test_search_finds_a_layout_reaching_every_screw(kin, plans):
    res = search_layout(kin, [plans[2]], standoff_mm=STANDOFF_MM, families=("side_right", "cranial"),
                        per_family=2, refine_rounds=1)
    best = res.best
    assert best.all_reached and best.worst_margin >= 0.02, best.summary()
    assert best.pose.plausible() == "" and best.pose.family in ("side_right", "cranial")
    assert res.screened > 100 and 2 <= res.evaluated <= 40
    assert set(res.per_family) == {"side_right", "cranial"}
