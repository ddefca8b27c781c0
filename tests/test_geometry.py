"""Geometry core: bad input first, then the happy paths, then property-based round trips."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from spine_nav import geometry as g

# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize("bad, match", [
    (np.eye(3), "expected a 4x4"),
    (np.eye(4)[:3], "expected a 4x4"),
    ("identity", "not numeric"),
    (np.full((4, 4), np.nan), "non-finite"),
    (np.diag([1.0, 1.0, np.inf, 1.0]), "non-finite"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "not orthonormal"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "reflection"),
    (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "bottom row"),
])
def test_validate_transform_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        g.validate_transform(bad, name="T_reference_tool")


def test_error_message_names_the_input():
    with pytest.raises(ValueError, match="T_reference_tool"):
        g.validate_transform(np.full((4, 4), np.nan), name="T_reference_tool")


def test_sheared_rotation_rejected():
    T = np.eye(4)
    T[0, 1] = 0.01  # shear
    with pytest.raises(ValueError, match="not orthonormal"):
        g.invert(T)


@pytest.mark.parametrize("q", [[0, 0, 0, 0], [1, 1, 0, 0], [np.nan, 0, 0, 1], [0, 0, 1]])
def test_quat_rejects_bad(q):
    with pytest.raises(ValueError):
        g.quat_to_matrix(q, order="xyzw")


def test_quat_order_must_be_explicit_and_known():
    with pytest.raises(ValueError, match="order"):
        g.quat_to_matrix([0, 0, 0, 1], order="zyxw")  # type: ignore[arg-type]


def test_points_shape_checked():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        g.transform_points(np.eye(4), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        g.transform_points(np.eye(4), [0.0, np.nan, 0.0])


def test_angle_between_zero_vector():
    with pytest.raises(ValueError, match="zero-length"):
        g.angle_between_deg([0, 0, 0], [1, 0, 0])


def test_compose_needs_argument():
    with pytest.raises(ValueError):
        g.compose()

# ---------------------------------------------------------------- happy paths


def test_convention_T_a_b_maps_b_to_a():
    # Tool frame is the tracker frame shifted +10 mm in x: a point at the tool origin is at x=10 in tracker.
    T_tracker_tool = g.make_transform(translation_mm=[10.0, 0.0, 0.0])
    assert np.allclose(g.transform_points(T_tracker_tool, [0.0, 0.0, 0.0]), [10.0, 0.0, 0.0])
    # Compose right to left: T_reference_tool = inv(T_tracker_reference) @ T_tracker_tool
    T_tracker_reference = g.make_transform(Rotation.from_euler("z", 90, degrees=True).as_matrix(), [0, 5, 0])
    T_reference_tool = g.compose(g.invert(T_tracker_reference), T_tracker_tool)
    p_tool = np.array([1.0, 2.0, 3.0])
    via_tracker = g.transform_points(g.invert(T_tracker_reference), g.transform_points(T_tracker_tool, p_tool))
    assert np.allclose(g.transform_points(T_reference_tool, p_tool), via_tracker)


def test_quaternion_orders_agree():
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    xyzw = g.matrix_to_quat(R, order="xyzw")
    wxyz = g.matrix_to_quat(R, order="wxyz")
    assert np.allclose(wxyz, [xyzw[3], *xyzw[:3]])
    import transforms3d

    assert np.allclose(transforms3d.quaternions.quat2mat(wxyz), R)


def test_units_boundary():
    assert g.mm_to_m(1500.0) == 1.5
    assert np.allclose(g.m_to_mm([0.001, 0.002, 0.0]), [1.0, 2.0, 0.0])


def test_angle_between_small_angles_accurate():
    u = np.array([0.0, 0.0, 1.0])
    v = np.array([np.sin(np.radians(1e-4)), 0.0, np.cos(np.radians(1e-4))])
    assert g.angle_between_deg(u, v) == pytest.approx(1e-4, rel=1e-6)


def test_float32_igtl_matrix_accepted():
    T = g.random_transform(np.random.default_rng(0)).astype(np.float32)
    assert g.is_rigid(T)


def test_average_transforms():
    A = g.make_transform(translation_mm=[0, 0, 0])
    B = g.make_transform(translation_mm=[2, 0, 0])
    assert np.allclose(g.average_transforms([A, B])[:3, 3], [1, 0, 0])

# ---------------------------------------------------------------- properties

rotations = st.builds(
    lambda v: Rotation.from_rotvec(np.asarray(v)).as_matrix(),
    st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=3, max_size=3),
)
translations = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=3, max_size=3)


@settings(max_examples=200, deadline=None)
@given(rotations, translations)
def test_invert_round_trip(R, t):
    T = g.make_transform(R, t)
    assert np.allclose(g.compose(T, g.invert(T)), np.eye(4), atol=1e-9)
    assert np.allclose(g.invert(g.invert(T)), T, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(rotations, translations, st.sampled_from(["xyzw", "wxyz"]))
def test_quaternion_round_trip(R, t, order):
    T = g.make_transform(R, t)
    q, trans = g.transform_to_quat(T, order=order)
    assert np.allclose(g.transform_from_quat(q, trans, order=order), T, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(rotations, translations, rotations, translations)
def test_transform_difference_of_composition(R1, t1, R2, t2):
    A = g.make_transform(R1, t1)
    B = g.make_transform(R2, t2)
    d_mm, d_deg = g.transform_difference(A, A)
    assert d_mm == pytest.approx(0.0, abs=1e-9) and d_deg == pytest.approx(0.0, abs=1e-6)
    p = np.array([1.0, -2.0, 3.0])
    assert np.allclose(g.transform_points(g.compose(A, B), p), g.transform_points(A, g.transform_points(B, p)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=3, max_size=3))
def test_mm_m_round_trip(v):
    assert np.allclose(g.m_to_mm(g.mm_to_m(np.asarray(v))), v)


def test_plain_float_quaternion_forms_agree_with_the_checked_ones():
    """The hot-path forms (no checks) give what quat_to_matrix / matrix_to_quat give, incl. near 180 deg."""
    from scipy.spatial.transform import Rotation

    from spine_nav.geometry import matrix_to_quat, quat_to_matrix, rotation_rows_to_quat_xyzw, unit_quat_xyzw_to_rows

    rotations = list(Rotation.random(300, random_state=3).as_matrix())
    rotations += [Rotation.from_rotvec(np.radians(179.9) * np.array(a) / np.linalg.norm(a)).as_matrix()
                  for a in ([1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0])]
    for R in rotations:
        q = rotation_rows_to_quat_xyzw(np.hstack([R, np.ones((3, 1))]).tolist())  # a 3x4's rows: translation ignored
        np.testing.assert_allclose(q, matrix_to_quat(R, order="xyzw"), atol=1e-9)
        np.testing.assert_allclose(unit_quat_xyzw_to_rows(*q), quat_to_matrix(q, order="xyzw"), atol=1e-12)
        np.testing.assert_allclose(unit_quat_xyzw_to_rows(*q), R, atol=1e-9)


@pytest.mark.parametrize("bad,kind", [
    (np.full((4, 4), np.nan), "non-finite"),
    (np.eye(3), "non-finite"),  # wrong shape
    ([[1.0, 0.0], [0.0, 1.0]], "non-finite"),  # not 4x4, as a list
    (np.diag([1.0, 1.0, 1.0, np.inf]), "non-finite"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "non-rigid"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "non-rigid"),  # reflection
    (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]]), "non-rigid"),  # bottom row
])
def test_rigid_rows_refuses_what_validate_transform_refuses(bad, kind):
    from spine_nav.geometry import NotRigidError, rigid_rows

    with pytest.raises(NotRigidError, match="T_probe") as e:
        rigid_rows(bad, "T_probe")
    assert e.value.kind == kind
    with pytest.raises(ValueError):
        g.validate_transform(bad, "T_probe")


def test_rigid_rows_returns_the_top_rows_of_rigid_transforms():
    from spine_nav.geometry import rigid_rows

    rng = np.random.default_rng(4)
    for _ in range(100):
        T = g.random_transform(rng, max_translation_mm=500.0)
        assert rigid_rows(T) == T[:3].tolist()
        assert rigid_rows(T.astype(np.float32).astype(float))  # float32 wire precision is rigid enough


def test_unit_quat_xyzw_checks_like_transform_from_quat():
    from spine_nav.geometry import unit_quat_xyzw

    for bad, match in (((0, 0, 0, 1.01), "norm 1.010000"), ((0, 0, float("nan"), 1), "non-finite"),
                       ((0, 0, 0, 0), "norm 0.000000"), ((0, 0, 1), "4 numbers"), ("abcd", "4 numbers")):
        with pytest.raises(ValueError, match=match):
            unit_quat_xyzw(bad, "q_probe")
        with pytest.raises(ValueError):
            g.transform_from_quat(bad, (0, 0, 0), order="xyzw")
    q = unit_quat_xyzw((0.0, 0.0, 0.6, 0.8004))
    assert abs(sum(v * v for v in q) - 1.0) < 1e-12


def _verdict(check, m) -> str | None:
    from spine_nav.geometry import NotRigidError

    try:
        check(m)
    except NotRigidError as exc:
        return exc.kind
    return None


def test_one_rigidity_check_fast_path_agrees_with_validate_transform():
    """rigid_rows is the plain-float fast path of validate_transform: same tolerance (ORTHONORMAL_TOL),
    same verdict and error kind, on rigid, float32, sheared/scaled around the tolerance, reflected,
    bad-bottom-row and non-finite matrices."""
    from spine_nav.geometry import ORTHONORMAL_TOL, rigid_rows

    rng = np.random.default_rng(16)
    verdicts = {None: 0, "non-rigid": 0, "non-finite": 0}
    for i in range(3000):
        T = g.random_transform(rng, max_translation_mm=500.0)
        case = i % 6
        if case == 1:
            T = T.astype(np.float32).astype(float)
        elif case == 2:  # shear/scale with a size log-uniform around the tolerance (1e-6 .. 1e-2)
            T[:3, :3] += rng.normal(size=(3, 3)) * 10.0 ** rng.uniform(-6, -2)
        elif case == 3:  # bottom row off by a size around the tolerance
            T[3, rng.integers(4)] += rng.choice([-1, 1]) * 10.0 ** rng.uniform(-6, -2)
        elif case == 4:
            T[:3, rng.integers(3)] *= -1.0
        elif case == 5:
            T[rng.integers(4), rng.integers(4)] = rng.choice([np.nan, np.inf, -np.inf])
        slow = _verdict(g.validate_transform, T)
        assert _verdict(rigid_rows, T) == slow, (i, T)
        assert g.is_rigid(T) == (slow is None)
        verdicts[slow] += 1
    assert min(verdicts.values()) > 300  # every verdict was exercised, borderline ones included
    assert ORTHONORMAL_TOL == 1e-4
    for bad in (np.eye(3), [[1.0, 0.0], [0.0, 1.0]], "not a matrix"):
        assert _verdict(g.validate_transform, bad) == _verdict(rigid_rows, bad) == "non-finite"
