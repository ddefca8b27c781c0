"""Trajectory guard core (no ROS): quantities, pose checks, config, selection, per-level plans.

Hand-computed cases use one screw along +z: entry (0, 0, 0), target (0, 0, 40) (planned depth 40 mm).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from spine_nav.geometry import is_rigid, make_transform, random_transform
from spine_nav.guard import (
    GuardConfig,
    GuardConfigError,
    GuardState,
    PoseError,
    ScrewGeometry,
    ScrewSelector,
    TrajectoryGuard,
    compute_metrics,
    compute_metrics_numpy,
    tip_and_axis,
)
from spine_nav.plan import Plan, Screw
from scipy.spatial.transform import Rotation


def screw(sid="L4_left", entry=(0, 0, 0), target=(0, 0, 40), level=None):
    level = level or sid.split("_")[0]
    return Screw(id=sid, level=level, side=sid.split("_")[1], entry_mm=entry, target_mm=target,
                 diameter_mm=6.5, length_mm=45)


def tool(tip, rot_y_deg=0.0, axis=None):
    """T_reference_tooltip with the tip at ``tip`` and z axis = +z rotated about y (or ``axis``)."""
    if axis is not None:
        R = Rotation.align_vectors([axis], [[0, 0, 1]])[0].as_matrix()
    else:
        R = Rotation.from_euler("y", rot_y_deg, degrees=True).as_matrix()
    return make_transform(R, tip)


def metrics_for(T, s=None):
    s = s or screw()
    tip, axis = tip_and_axis(T)
    m = compute_metrics(ScrewGeometry.from_screw(s), tip, axis)
    ref = compute_metrics_numpy(s, T)
    assert m == pytest.approx(ref, abs=1e-9, rel=1e-9)
    return m


# ---- quantities, hand-computed ----------------------------------------------------------------
def test_tool_on_the_planned_line():
    m = metrics_for(tool((0, 0, 10)))
    assert (m.lateral_error_mm, m.entry_offset_mm, m.angular_error_deg) == (0, 0, 0)
    assert (m.depth_mm, m.remaining_mm, m.predicted_tip_error_mm) == (10, 30, 0)


def test_parallel_offset_before_entry():
    m = metrics_for(tool((3, 4, -5)))
    assert m.lateral_error_mm == pytest.approx(5.0)
    assert m.depth_mm == pytest.approx(-5.0) and m.remaining_mm == pytest.approx(45.0)
    assert m.angular_error_deg == pytest.approx(0.0)
    assert m.entry_offset_mm == pytest.approx(5.0)          # axis crosses entry plane at (3, 4, 0)
    assert m.predicted_tip_error_mm == pytest.approx(5.0)   # ends at (3, 4, 40) vs target (0, 0, 40)
    assert m.tip_to_entry_mm == pytest.approx(math.sqrt(50))


def test_tilted_45_deg_on_line():
    m = metrics_for(tool((0, 0, 10), rot_y_deg=45))
    assert m.angular_error_deg == pytest.approx(45.0)
    assert m.lateral_error_mm == pytest.approx(0.0, abs=1e-12)
    assert m.entry_offset_mm == pytest.approx(10.0)         # crossing at (-10, 0, 0)
    assert m.predicted_tip_error_mm == pytest.approx(30.0)  # ends at (30, 0, 40)


def test_tool_perpendicular_to_trajectory():
    m = metrics_for(tool((0, 0, -2), axis=[1, 0, 0]))
    assert m.angular_error_deg == pytest.approx(90.0)
    assert m.lateral_error_mm == pytest.approx(0.0) and m.depth_mm == pytest.approx(-2.0)
    assert m.entry_offset_mm == math.inf and m.predicted_tip_error_mm == math.inf


def test_tip_exactly_at_entry():
    m = metrics_for(tool((0, 0, 0), rot_y_deg=10))
    assert m.depth_mm == 0 and m.lateral_error_mm == 0 and m.entry_offset_mm == 0 and m.tip_to_entry_mm == 0
    assert m.remaining_mm == 40
    assert m.predicted_tip_error_mm == pytest.approx(40 * math.tan(math.radians(10)))


def test_tip_exactly_at_target_and_pointing_backwards():
    m = metrics_for(tool((0, 0, 40)))
    assert m.remaining_mm == 0 and m.predicted_tip_error_mm == 0
    back = metrics_for(tool((1, 0, 5), axis=[0, 0, -1]))
    assert back.angular_error_deg == pytest.approx(180.0)
    assert back.entry_offset_mm == pytest.approx(1.0)  # the axis line still crosses at (1, 0, 0)
    assert back.predicted_tip_error_mm == math.inf     # advancing never reaches the planned depth


def test_zero_length_motion_same_sample_twice():
    g = TrajectoryGuard(GuardConfig(debounce_s=0.0))
    g.set_plan(Plan(screws=(screw(),), frame="Reference"))
    T = tool((0.3, 0, 12))
    a = g.evaluate(T, 1.0, 1.001)
    b = g.evaluate(T, 1.0, 1.002)  # same stamp: no motion, not "time going backwards"
    assert a.state == b.state == GuardState.ALIGNED
    assert a.metrics == b.metrics


def test_plain_and_numpy_agree_on_random_poses():
    rng = np.random.default_rng(6)
    s = screw(entry=(10, -20, 5), target=(25, 10, 40))
    for _ in range(200):
        T = random_transform(rng, max_angle_deg=170.0, max_translation_mm=60.0)
        metrics_for(T, s)


# ---- pose checks ------------------------------------------------------------------------------
def test_pose_checks_agree_with_geometry_validate_transform():
    rng = np.random.default_rng(1)
    good = random_transform(rng)
    bad = []
    for scale in (1.001, 0.99):
        T = good.copy()
        T[:3, :3] *= scale
        bad.append(T)
    refl = good.copy()
    refl[:3, 0] *= -1
    bad.append(refl)
    row = good.copy()
    row[3, 0] = 0.5
    bad.append(row)
    for v in (np.nan, np.inf):
        T = good.copy()
        T[1, 2] = v
        bad.append(T)
    assert tip_and_axis(good)[0] == pytest.approx(tuple(good[:3, 3]))
    assert is_rigid(good)
    for T in bad:
        assert not is_rigid(T)
        with pytest.raises(PoseError, match="tool pose"):
            tip_and_axis(T)
    with pytest.raises(PoseError, match="4x4"):
        tip_and_axis(np.eye(3))


# ---- config ---------------------------------------------------------------------------------------
def test_config_defaults_from_clinical_notes_and_validation():
    c = GuardConfig()
    assert (c.warn_lateral_mm, c.warn_angle_deg, c.violation_lateral_mm, c.violation_angle_deg,
            c.depth_margin_mm) == (1.0, 2.0, 2.0, 4.0, 0.0)
    assert c.updated(violation_lateral_mm=3.0).violation_lateral_mm == 3.0
    for change, match in (({"warn_lateral_mm": 2.5}, "warn_lateral_mm"),
                          ({"violation_angle_deg": float("nan")}, "violation_angle_deg: must be finite"),
                          ({"depth_margin_mm": -1.0}, "depth_margin_mm"),
                          ({"warn_angle_deg": 0.0}, "warn_angle_deg"),
                          ({"hysteresis_deg": 2.5}, "hysteresis_deg"),
                          ({"warn_lateral_mm": True}, "expected a number"),
                          ({"bogus": 1.0}, "unknown guard setting")):
        with pytest.raises(GuardConfigError, match=match):
            c.updated(**change)


# ---- selection ------------------------------------------------------------------------------------
def two_screws():
    return [ScrewGeometry.from_screw(screw("L4_left", (-15, 0, 0), (-15, 0, 40))),
            ScrewGeometry.from_screw(screw("L4_right", (15, 0, 0), (15, 0, 40)))]


def test_auto_selection_hysteresis_no_flicker_between_neighbours():
    sel = ScrewSelector(capture_radius_mm=30.0, switch_margin_mm=2.0)
    sel.set_screws(two_screws())
    assert sel.update((-14, 0, -5)).screw_id == "L4_left"
    for x in (0.5, -0.5, 0.9, -0.9, 0.5):          # around the midline: stays on the first choice
        assert sel.update((x, 0, -5)).screw_id == "L4_left"
    assert sel.update((1.1, 0, -5)).screw_id == "L4_right"   # closer by > 2 mm: switch
    for x in (0.5, -0.5, -0.9):
        assert sel.update((x, 0, -5)).screw_id == "L4_right"
    assert sel.update((-1.1, 0, -5)).screw_id == "L4_left"
    assert sel.update((0, 0, -100)) is None and "capture radius" in sel.last_reason


def test_auto_selection_search_skipping_is_exact():
    rng = np.random.default_rng(3)
    screws = [ScrewGeometry.from_screw(screw(f"L{1 + i // 2}_{'left' if i % 2 else 'right'}",
                                             (20.0 * (i % 2) - 10, 35.0 * (i // 2), 0),
                                             (20.0 * (i % 2) - 10 + 5, 35.0 * (i // 2), 40))) for i in range(10)]
    fast, brute = ScrewSelector(30.0, 2.0), ScrewSelector(30.0, 2.0)
    fast.set_screws(screws)
    brute.set_screws(screws)
    brute._skip_search = lambda tip: False  # noqa: SLF001 - the reference: full search every sample
    p = np.array([0.0, 0.0, -20.0])
    for _ in range(3000):
        p = p + rng.normal(0, 1.5, 3)
        p[1] = np.clip(p[1], -40, 200)
        a, b = fast.update(tuple(p)), brute.update(tuple(p))
        assert (a and a.screw_id) == (b and b.screw_id)
    assert fast.searches < brute.searches


def test_explicit_selection_and_unknown_id():
    sel = ScrewSelector(30.0, 2.0)
    sel.set_screws(two_screws())
    sel.select("L4_right")
    assert sel.update((-15, 0, 5)).screw_id == "L4_right"   # explicit: distances do not matter
    with pytest.raises(KeyError, match="L9_left"):
        sel.select("L9_left")
    sel.select("")
    assert sel.update((-15, 0, 5)).screw_id == "L4_left"



def test_selection_before_any_plan_names_the_missing_plan_and_works_once_it_arrives():
    from spine_nav.guard.core import NO_PLAN_YET

    g = TrajectoryGuard(GuardConfig(debounce_s=0.0))
    with pytest.raises(KeyError, match=f"'L4_left': {NO_PLAN_YET}"):
        g.select("L4_left")
    g.select("")  # automatic selection needs no plan
    g.set_plan(Plan(screws=(screw("L4_left"),), frame="Reference"))
    g.select("L4_left")
    g.clear_plan("plan/registered rejected: NaN in L4_left")
    with pytest.raises(KeyError, match="rejected: NaN"):
        g.select("L4_left")

# ---- per-level transforms ------------------------------------------------------------------------
def test_per_level_registration_and_failed_level_gives_no_plan():
    preop = Plan(screws=(screw("L4_left"), screw("L5_left", (0, 40, 0), (0, 40, 40))), frame="PreopCT")
    T_l4 = make_transform(Rotation.from_euler("x", 5, degrees=True).as_matrix(), [2.0, -1.0, 3.0])
    g = TrajectoryGuard(GuardConfig(debounce_s=0.0))
    g.set_plan_per_level(preop, {"L4": T_l4, "L5": np.eye(4)}, failed_levels={"L5": "fitness 0.41 < 0.6"})
    entry_ref = (T_l4 @ [0, 0, 0, 1])[:3]
    dir_ref = T_l4[:3, 2]
    g.select("L4_left")
    T = make_transform(T_l4[:3, :3], entry_ref + 10 * dir_ref)  # on the registered line, 10 mm deep
    v = g.evaluate(T, 1.0, 1.0)
    assert v.state == GuardState.ALIGNED and v.screw_id == "L4_left"
    assert v.metrics.lateral_error_mm == pytest.approx(0, abs=1e-9) and v.metrics.depth_mm == pytest.approx(10)
    g.select("L5_left")
    v = g.evaluate(T, 1.001, 1.001)
    assert v.state == GuardState.NO_PLAN and "fitness 0.41 < 0.6" in v.reason and v.screw_id == "L5_left"
    assert math.isnan(v.metrics.lateral_error_mm)


def test_quaternion_fast_path_agrees_with_geometry():
    from spine_nav.geometry import transform_from_quat
    from spine_nav.guard.metrics import tip_and_axis_from_quat
    from spine_nav.nodes.conversions import matrix_mm_to_pose, pose_to_quat_mm

    rng = np.random.default_rng(2)
    for _ in range(100):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * (1 + rng.uniform(-5e-4, 5e-4))  # within the renormalised tolerance
        t = rng.uniform(-100, 100, 3)
        T = transform_from_quat(q, t, order="xyzw")
        tip, axis = tip_and_axis_from_quat(tuple(q), tuple(t))
        assert tip == pytest.approx(tuple(T[:3, 3])) and axis == pytest.approx(tuple(T[:3, 2]), abs=1e-12)
        q_msg, t_msg = pose_to_quat_mm(matrix_mm_to_pose(T))  # metres on the message, mm back
        assert t_msg == pytest.approx(tuple(T[:3, 3]), abs=1e-9)
    for q, match in (((0, 0, 0, 1.01), "norm 1.010000"), ((0, 0, float("nan"), 1), "non-finite"),
                     ((0, 0, 0, 0), "norm 0.000000")):
        with pytest.raises(PoseError, match=match):
            tip_and_axis_from_quat(q, (0, 0, 0))
        with pytest.raises(ValueError):
            transform_from_quat(q, (0, 0, 0), order="xyzw")



def test_metrics_and_verdicts_built_with_tuple_new_are_the_named_tuples_with_every_field():
    """compute_metrics and the verdicts build their NamedTuples with ``tuple.__new__`` (no Python-level __new__ per
    sample): the same type, length and field names as the constructor's, on a judged sample and on bad input."""
    from spine_nav.guard import GuardMetrics, GuardVerdict

    g = ScrewGeometry.from_screw(screw())
    m = compute_metrics(g, (1.0, 0.0, 10.0), (0.0, 0.0, 1.0))
    assert type(m) is GuardMetrics and m == GuardMetrics(*m) and len(m) == len(GuardMetrics._fields)
    assert (m.lateral_error_mm, m.depth_mm, m.remaining_mm, m.tip_to_entry_mm) == pytest.approx(
        (1.0, 10.0, 30.0, math.hypot(1.0, 10.0)))
    guard = TrajectoryGuard()
    guard.set_plan(Plan(frame="Reference", screws=[screw()]))
    for q, t, stamp_s in (((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 5.0), 1.0), ((0.0, 0.0, 0.0, 2.0), (0.0, 0.0, 5.0), 1.1),
                          ((0.0, 0.0, 0.0, 1.0), (math.nan, 0.0, 5.0), 1.2), ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 5.0), 0.5)):
        v = guard.evaluate_quat(q, t, stamp_s, stamp_s + 0.001)
        assert type(v) is GuardVerdict and v == GuardVerdict(*v) and len(v) == len(GuardVerdict._fields)
        assert type(v.metrics) is GuardMetrics and isinstance(v.state, GuardState) and isinstance(v.reason, str)
