"""The guard's compiled per-sample geometry (spine_nav/guard/_judge.c) and its node's decode (spine_nav/nodes/_pose_cdr.c)
against their pure-Python twins, which define the results: the same bits on the same input, bad input first; then the
whole guard (verdict sequences with latches, debounce, selection, bad samples) and its GuardStatus bytes, with the C on
and off.

- ``_judge.tip_axis_quat`` == ``metrics.tip_and_axis_from_quat_py`` (with ``geometry.unit_quat_xyzw``); anything it
  declines (None) the twin judges, and raises its PoseError with its own message
- ``_judge.metrics``       == ``metrics.compute_metrics_py`` (built as the GuardMetrics NamedTuple)
- ``_pose_cdr.pose_fields_mm`` == ``conversions.pose_cdr_fields_mm_py`` (the guard node's decode of a tool sample;
  anything but the stack's own layout in an exact bytes object is declined and the twin decodes it or raises)

Floats are compared by their bits (``float.hex``), so -0.0 vs 0.0 or a last-bit difference would fail.
"""
from __future__ import annotations

import copy
import gc
import math
import os
import pickle
import sys

import numpy as np
import pytest

from spine_nav.geometry import QUAT_NORM_TOL, rotation_rows_to_quat_xyzw
from spine_nav.guard import GuardConfig, GuardMetrics, PoseError, ScrewGeometry, TrajectoryGuard, metrics, native
from spine_nav.guard.metrics import PARALLEL_EPS, compute_metrics_py, tip_and_axis_from_quat_py
from spine_nav.plan import Plan, Screw

judge = native.judge


def test_the_extension_is_built_by_the_set_up_and_configured():
    """`make` builds it (setup.py ext_modules); a missing build step must show, not fall back in silence."""
    if os.environ.get("SPINE_NAV_NATIVE") == "0":
        pytest.skip("SPINE_NAV_NATIVE=0 asks for the Python twins")
    assert judge is not None, native.WHY_PYTHON
    assert native.describe() == "C"
    # configured by spine_nav.guard.metrics at import: a good sample is not declined
    assert judge.tip_axis_quat((0.0, 0.0, 0.0, 1.0), (1.0, 2.0, 3.0)) == ((1.0, 2.0, 3.0), (0.0, 0.0, 1.0))
    g = ScrewGeometry.from_screw(_screw())
    assert type(judge.metrics(g.packed, (0.0, 0.0, 1.0), (0.0, 0.0, 1.0))) is GuardMetrics


needs_c = pytest.mark.skipif(judge is None, reason=f"no C to compare: {native.WHY_PYTHON} "
                                                   "(test_the_extension_is_built_by_the_set_up... fails unless "
                                                   "SPINE_NAV_NATIVE=0)")


def bits(x):
    """Every float replaced by its exact hex form, recursively (the container and scalar types kept)."""
    if type(x) is float:
        return x.hex()
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # NamedTuple: its type and fields
        return (type(x).__name__, tuple(bits(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(bits(v) for v in x)
    return (type(x).__name__, repr(x))


def _screw(sid="L4_left", entry=(0.0, 0.0, 0.0), target=(0.0, 0.0, 40.0)):
    return Screw(id=sid, level=sid.split("_")[0], side=sid.split("_")[1], entry_mm=entry, target_mm=target,
                 diameter_mm=6.5, length_mm=45)


def _twin(fn, *args):
    """fn(*args) -> ("ok", bits of the result) or ("raise", exception type, message)."""
    try:
        return "ok", bits(fn(*args))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return "raise", type(exc).__name__, str(exc)


class F(float):
    """A float subclass: not an exact float, so the C declines it (the twin's arithmetic decides)."""


NAN, INF = math.nan, math.inf
ONE_PAST = 1.0 + QUAT_NORM_TOL * (1.0 + 1e-9)
BAD_POSES = {  # (q_xyzw, t_mm): each makes the twin raise PoseError
    "q NaN": ((0.0, 0.0, NAN, 1.0), (0.0, 0.0, 0.0)),
    "q inf": ((INF, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    "q -inf": ((0.0, 0.0, 0.0, -INF), (0.0, 0.0, 0.0)),
    "q norm overflows": ((1e200, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "t NaN": ((0.0, 0.0, 0.0, 1.0), (0.0, NAN, 0.0)),
    "t inf": ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, INF)),
    "t -inf and inf": ((0.0, 0.0, 0.0, 1.0), (-INF, INF, 0.0)),
    "t sum overflows": ((0.0, 0.0, 0.0, 1.0), (1e308, 1e308, 0.0)),
    "zero quaternion": ((0.0, 0.0, 0.0, 0.0), (1.0, 2.0, 3.0)),
    "norm 1.01": ((0.0, 0.0, 0.0, 1.01), (0.0, 0.0, 0.0)),
    "norm just past the tolerance": ((0.0, 0.0, 0.0, ONE_PAST), (0.0, 0.0, 0.0)),
    "norm just below 1 - tolerance": ((0.0, 0.0, 0.0, 2.0 - ONE_PAST), (0.0, 0.0, 0.0)),
    "q of 3": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    "q of 5": ((0.0, 0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0)),
    "q empty": ((), (0.0, 0.0, 0.0)),
    "q None": (None, (0.0, 0.0, 0.0)),
    "q a string of 4": ("abcd", (0.0, 0.0, 0.0)),
    "q with a string": ((0.0, 0.0, 0.0, "1"), (0.0, 0.0, 0.0)),
    "t of 2": ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0)),
    "t of 4": ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0, 0.0)),
    "t None": ((0.0, 0.0, 0.0, 1.0), None),
    "t a string of 3": ((0.0, 0.0, 0.0, 1.0), "abc"),
    "t with None": ((0.0, 0.0, 0.0, 1.0), (0.0, None, 0.0)),
    "t numpy NaN": ((0.0, 0.0, 0.0, 1.0), np.array([0.0, np.nan, 0.0])),
    "q numpy not unit": (np.array([0.0, 0.0, 0.0, 2.0]), (0.0, 0.0, 0.0)),
}


def _declined_then_twin(q, t):
    """The C declines (q, t) and the dispatcher gives the Python twin's outcome (result or raise); returns it."""
    assert judge.tip_axis_quat(q, t) is None
    expected = _twin(tip_and_axis_from_quat_py, q, t)
    assert _twin(metrics.tip_and_axis_from_quat, q, t) == expected
    return expected


@needs_c
@pytest.mark.parametrize("name", list(BAD_POSES))
def test_tip_axis_declines_what_the_twin_refuses_and_the_error_text_is_the_twins(name):
    q, t = BAD_POSES[name]
    expected = _declined_then_twin(q, t)
    assert expected[:2] == ("raise", "PoseError")
    # and through the guard: the same TRACKING_LOST verdict (reason "input: <the twin's message>")
    verdicts = []
    for c in (judge, None):
        native.judge = c
        try:
            verdicts.append(bits(TrajectoryGuard().evaluate_quat(q, t, 1.0, 1.001)))
        finally:
            native.judge = judge
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][1][1] == ("str", repr(f"input: {expected[2]}"))  # (GuardVerdict, (state, reason, ...))


ODD_BUT_GOOD = {  # the twin accepts them; the C declines what is not exact floats, so the twin's result stands
    "ints": ((0, 0, 0, 1), (1, 2, 3)),
    "numpy scalars": (tuple(np.float64(v) for v in (0.0, 0.6, 0.0, 0.8)), tuple(np.float64(v) for v in (1, 2, 3))),
    "numpy arrays": (np.array([0.0, 0.6, 0.0, 0.8]), np.array([1.0, 2.0, 3.0])),
    "float subclass": ((F(0.0), 0.0, 0.0, 1.0), (0.0, F(2.0), 0.0)),
    "generator-free iterables: range": ((0.0, 0.0, 0.0, 1.0), range(3)),
    "bools": ((False, False, False, True), (0.0, 0.0, 0.0)),
}


@needs_c
@pytest.mark.parametrize("name", list(ODD_BUT_GOOD))
def test_odd_input_types_are_left_to_the_twin_with_its_result(name):
    q, t = ODD_BUT_GOOD[name]
    assert _declined_then_twin(q, t)[0] == "ok"


@needs_c
def test_tip_axis_accepts_lists_and_keeps_the_translation_objects():
    t = [1.5, -2.25, 3.0]
    tip, axis = judge.tip_axis_quat([0.0, 0.6, 0.0, 0.8], t)
    assert all(a is b for a, b in zip(tip, t)) and type(tip) is tuple and type(axis) is tuple
    assert bits((tip, axis)) == bits(tip_and_axis_from_quat_py([0.0, 0.6, 0.0, 0.8], t))


@needs_c
@pytest.mark.parametrize("scale", [1.0 - 1e-12, 1.0, 1.0 + 1e-12])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_norm_at_the_tolerance_gives_the_same_verdict(scale, sign):
    """|n - 1| at, just inside and just past QUAT_NORM_TOL (both sides of 1): accepted by both or by neither."""
    for w in (1.0 + sign * QUAT_NORM_TOL * scale, math.nextafter(1.0 + sign * QUAT_NORM_TOL, 2.0),
              math.nextafter(1.0 + sign * QUAT_NORM_TOL, 0.0)):
        q, t = (0.0, 0.0, 0.0, w), (1.0, 2.0, 3.0)
        c, expected = judge.tip_axis_quat(q, t), _twin(tip_and_axis_from_quat_py, q, t)
        if c is None:
            assert expected[:2] == ("raise", "PoseError"), w
        else:
            assert ("ok", bits(c)) == expected, w
        assert (c is None) == (abs(abs(w) - 1.0) > QUAT_NORM_TOL), w


@needs_c
def test_tip_axis_gives_the_same_bits_on_random_poses_over_many_decades():
    rng = np.random.default_rng(1717)
    accepted = 0
    for k in range(5000):
        q = rng.normal(size=4)
        q = q / np.linalg.norm(q) * (1.0 + rng.uniform(-1.2, 1.2) * QUAT_NORM_TOL)  # some just outside
        if k % 7 == 0:
            q = q * 10.0 ** rng.uniform(-8, 8)  # far from unit: refused
        t = rng.normal(size=3) * 10.0 ** rng.uniform(-6, 6, 3)
        q, t = tuple(float(v) for v in q), tuple(float(v) for v in t)
        c, expected = judge.tip_axis_quat(q, t), _twin(tip_and_axis_from_quat_py, q, t)
        if c is None:
            assert expected[:2] == ("raise", "PoseError"), (k, q, t)
        else:
            accepted += 1
            assert ("ok", bits(c)) == expected, (k, q, t)
    assert 3000 < accepted < 5000  # both kinds were met


def _unit(v):
    v = np.asarray(v, dtype=float)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _geometry(entry, direction, depth_mm):
    e = tuple(float(v) for v in entry)
    d = tuple(float(v) for v in direction)
    t = tuple(e[i] + depth_mm * d[i] for i in range(3))
    return ScrewGeometry("S1_left", e, t, d, float(depth_mm))


AXIS_Z = {  # the tool axis's z with the screw along +z: cos_a is exactly this (PARALLEL_EPS's branches)
    "perpendicular": 0.0, "-0.0": -0.0, "tiny +": 1e-10, "tiny -": -1e-10, "at +eps": PARALLEL_EPS,
    "at -eps": -PARALLEL_EPS, "just past +eps": math.nextafter(PARALLEL_EPS, 1.0),
    "just past -eps": math.nextafter(-PARALLEL_EPS, -1.0), "just inside +eps": math.nextafter(PARALLEL_EPS, 0.0),
    "aligned": 1.0, "backwards": -1.0, "tilted": 0.5, "tilted backwards": -0.5,
}


@needs_c
@pytest.mark.parametrize("name", list(AXIS_Z))
def test_metrics_parallel_branches_give_the_same_bits(name):
    az = AXIS_Z[name]
    g = _geometry((1.0, -2.0, 3.0), (0.0, 0.0, 1.0), 40.0)
    axis = (math.sqrt(1.0 - az * az), 0.0, az)
    for tip in ((1.0, -2.0, 3.0), (2.5, 0.0, -10.0), (1.0, -2.0, 50.0), (-7.0, 3.0, 20.0)):
        c = judge.metrics(g.packed, tip, axis)
        assert bits(c) == bits(compute_metrics_py(g, tip, axis)), (name, tip)
    m = judge.metrics(g.packed, (2.5, 0.0, -10.0), axis)
    assert math.isinf(m.entry_offset_mm) == (abs(az) < PARALLEL_EPS)
    assert math.isinf(m.predicted_tip_error_mm) == (az <= PARALLEL_EPS)


@needs_c
def test_metrics_of_non_finite_values_are_the_twins():
    """The twin never raises on floats (inf, NaN flow through); the C gives the same bits, NaN where it does."""
    g = _geometry((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), 40.0)
    cases = [((NAN, 0.0, 0.0), (0.0, 0.0, 1.0)), ((INF, 0.0, 0.0), (0.0, 0.0, 1.0)),
             ((1e308, -1e308, 1e308), (0.0, 0.0, 1.0)), ((0.0, 0.0, 1.0), (INF, 0.0, 1.0)),
             ((0.0, 0.0, 1.0), (0.0, NAN, 1.0)), ((0.0, 0.0, 1.0), (0.0, 0.0, -INF)), ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
             ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((-0.0, -0.0, -0.0), (-0.0, -0.0, -1.0))]
    for tip, axis in cases:
        assert bits(judge.metrics(g.packed, tip, axis)) == bits(compute_metrics_py(g, tip, axis)), (tip, axis)


BAD_METRICS_INPUT = {
    "screw of 9": ((0.0,) * 9, (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)),
    "screw with an int": ((0.0,) * 9 + (40,), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)),
    "screw not a sequence": (None, (0.0, 0.0, 1.0), (0.0, 0.0, 1.0)),
    "tip of 2": ((0.0,) * 5 + (1.0,) + (0.0,) * 3 + (40.0,), (0.0, 1.0), (0.0, 0.0, 1.0)),
    "tip with a string": ((0.0,) * 5 + (1.0,) + (0.0,) * 3 + (40.0,), (0.0, "1", 2.0), (0.0, 0.0, 1.0)),
    "axis numpy": ((0.0,) * 5 + (1.0,) + (0.0,) * 3 + (40.0,), (0.0, 1.0, 2.0), np.array([0.0, 0.0, 1.0])),
    "axis ints": ((0.0,) * 5 + (1.0,) + (0.0,) * 3 + (40.0,), (0.0, 1.0, 2.0), (0, 0, 1)),
}


@needs_c
@pytest.mark.parametrize("name", list(BAD_METRICS_INPUT))
def test_metrics_declines_what_is_not_floats_and_the_dispatcher_gives_the_twins_answer(name):
    packed, tip, axis = BAD_METRICS_INPUT[name]
    assert judge.metrics(packed, tip, axis) is None
    if packed is not None and len(packed) == 10:  # a ScrewGeometry with those values: the dispatcher's answer
        g = ScrewGeometry("S1_left", packed[0:3], packed[6:9], packed[3:6], packed[9])
        assert g.packed == packed
        assert _twin(metrics.compute_metrics, g, tip, axis) == _twin(compute_metrics_py, g, tip, axis)


@needs_c
def test_metrics_checks_its_arguments():
    with pytest.raises(TypeError):
        judge.metrics((0.0,) * 10, (0.0, 0.0, 0.0))
    with pytest.raises(TypeError):
        judge.tip_axis_quat((0.0, 0.0, 0.0, 1.0))
    with pytest.raises(TypeError):
        judge.configure(1e-3, 1e-9, float)  # not a tuple subclass
    with pytest.raises(ValueError):
        judge.configure(-1.0, 1e-9, GuardMetrics)


@needs_c
def test_metrics_give_the_same_bits_on_random_screws_over_many_decades():
    rng = np.random.default_rng(42)
    for k in range(5000):
        scale = 10.0 ** rng.uniform(-6, 6)
        g = _geometry(rng.normal(size=3) * scale, _unit(rng.normal(size=3)), float(rng.uniform(1e-3, 2.0) * scale))
        tip = tuple(float(v) for v in np.asarray(g.entry) + rng.normal(size=3) * 10.0 ** rng.uniform(-8, 6, 3))
        if k % 3 == 0:  # near the planned direction, forwards or backwards, as a tool on the screw is
            axis = _unit(np.asarray(g.direction) * rng.choice([1.0, -1.0]) + rng.normal(size=3) * 10.0 ** rng.uniform(-9, 0))
        else:
            axis = _unit(rng.normal(size=3))
        c = judge.metrics(g.packed, tip, axis)
        assert type(c) is GuardMetrics
        assert bits(c) == bits(compute_metrics_py(g, tip, axis)), (k, g, tip, axis)


@needs_c
def test_the_named_tuple_built_in_c_is_a_guard_metrics_like_any_other():
    g = ScrewGeometry.from_screw(_screw())
    tip, axis = (1.0, 0.5, 10.0), _unit([0.1, 0.0, 1.0])
    c, py = judge.metrics(g.packed, tip, axis), compute_metrics_py(g, tip, axis)
    ctor = GuardMetrics(*py)
    assert type(c) is GuardMetrics and c == py == ctor and hash(c) == hash(ctor)
    assert c._asdict() == ctor._asdict() and repr(c) == repr(ctor) and len(c) == 7
    assert sys.getsizeof(c) == sys.getsizeof(ctor) and gc.is_tracked(c) == gc.is_tracked(ctor)
    assert c.lateral_error_mm == ctor[0] and c.tip_to_entry_mm == ctor[6] and c[-1] == ctor[-1]
    assert pickle.loads(pickle.dumps(c)) == ctor and copy.deepcopy(c) == ctor and c._replace(depth_mm=1.0)[3] == 1.0
    refs = sys.getrefcount(c)
    del py, ctor
    assert sys.getrefcount(c) == refs  # c owns its items; nothing borrowed from the twin's
    gc.collect()
    assert [type(v) for v in c] == [float] * 7


# ---- the whole guard, C on and off -----------------------------------------------------------------------------
def _samples(n: int, seed: int = 3):
    """(q_xyzw, t_mm, sample_time_s, now_s, health) along the bench's tool path over its 20-screw plan, with tilts
    and lateral drifts that cross the WARN / VIOLATION thresholds and back (latches, hysteresis, debounce), bad
    quaternions, NaN translations, a stale sample, time going backwards, a tracker-lost stretch and one far from
    every screw."""
    from spine_nav.bench.guard import tool_path

    rng = np.random.default_rng(seed)
    plan = _bench_plan()
    out = []
    t = 100.0
    for i, T in enumerate(tool_path(plan, n, seed=seed)):
        wobble = 3.0 * math.sin(i / 60.0)  # deg (and half as many mm): through the thresholds and back
        R = T[:3, :3] @ _rot_x(math.radians(wobble * rng.uniform(0.5, 1.5)))
        q = tuple(float(v) for v in rotation_rows_to_quat_xyzw(R.tolist()))
        tip = T[:3, 3] + np.array([0.5 * wobble, 0.0, 0.0])
        if 3 * n // 4 <= i < 3 * n // 4 + 50:
            tip = tip + np.array([0.0, 0.0, -200.0])  # away from every screw: no active screw (NO_PLAN)
        t_mm = tuple(float(v) for v in tip)
        t += 1e-3
        now = t + 2e-4
        health = None
        if i % 97 == 5:
            q = (q[0], q[1], q[2], q[3] * 1.5)  # not unit
        elif i % 131 == 7:
            t_mm = (t_mm[0], math.nan, t_mm[2])
        elif i % 211 == 11:
            now = t + 1.0  # stale
        elif i % 307 == 13:
            out.append((q, t_mm, t - 0.5, now, None))  # time went backwards
        if i == n // 2:
            health = ("stylus", True)
        elif i == n // 2 + 30:
            health = ("stylus", False)
        out.append((q, t_mm, t, now, health))
    return plan, out


def _bench_plan():
    from spine_nav.bench.guard import bench_plan

    return bench_plan()


def _rot_x(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _run(plan, samples, config, selection_method="plain"):
    guard = TrajectoryGuard(config, selection_method)
    guard.set_plan(plan)
    out = []
    for i, (q, t_mm, stamp_s, now_s, health) in enumerate(samples):
        if health is not None:
            guard.set_tracking_health("stylus lost" if health[1] else "", tool=health[0])
        if i == len(samples) // 4:
            guard.select("T11_left")
        elif i == len(samples) // 4 + 100:
            guard.select(None)
        out.append(bits(guard.evaluate_quat(q, t_mm, stamp_s, now_s)))
        out.append(bits(guard.last_tip_axis))
    return out


@needs_c
@pytest.mark.parametrize("config", [GuardConfig(), GuardConfig(debounce_s=0.05, hysteresis_mm=0.5, hysteresis_deg=1.0),
                                    GuardConfig(debounce_s=0.0, hysteresis_mm=0.0, hysteresis_deg=0.0)],
                         ids=["default", "debounce_hysteresis", "no_debounce"])
def test_the_guard_gives_the_same_verdicts_with_the_c_and_with_the_twins(config):
    from spine_nav.nodes.cdr import GuardStatusPacker
    from spine_nav.nodes.conversions import verdict_to_status_cdr

    plan, samples = _samples(4000)
    runs = {}
    for name, c in (("c", judge), ("python", None)):
        native.judge = c
        try:
            runs[name] = _run(plan, samples, config)
        finally:
            native.judge = judge
    assert runs["c"] == runs["python"]
    states = {v[1][0][1].split(":")[0].removeprefix("<GuardState.") for v in runs["c"][::2]}
    assert {"WARN", "VIOLATION", "APPROACH", "TRACKING_LOST", "NO_PLAN"} <= states, states
    reasons = " | ".join(v[1][1][1] for v in runs["c"][::2])
    assert "ALIGNED" in states or "ALIGNED pending debounce" in reasons  # (held by a long debounce)
    assert "norm 1.48" in reasons and "non-finite" in reasons and "stale sample" in reasons
    assert "time went backwards" in reasons and "tracker: stylus lost" in reasons
    assert ("latched (hysteresis" in reasons) == (config.hysteresis_mm > 0)
    assert ("pending debounce" in reasons) == (config.debounce_s > 0)
    # the GuardStatus bytes of the two runs' verdicts (re-judged: bits() above is not a verdict)
    packer = GuardStatusPacker("Reference")
    statuses = {}
    for name, c in (("c", judge), ("python", None)):
        native.judge = c
        try:
            guard = TrajectoryGuard(config)
            guard.set_plan(plan)
            statuses[name] = [verdict_to_status_cdr(guard.evaluate_quat(q, t, s, n), packer, 123, (1, 2))
                              for q, t, s, n, _ in samples[:1500]]
        finally:
            native.judge = judge
    assert statuses["c"] == statuses["python"]


def test_the_dispatchers_run_the_twins_when_the_c_is_off():
    """native.judge None (SPINE_NAV_NATIVE=0 or not built): the public functions are the twins' results."""
    g = ScrewGeometry.from_screw(_screw())
    tip, axis = (1.0, 0.5, 10.0), _unit([0.1, 0.0, 1.0])
    saved = native.judge
    native.judge = None
    try:
        assert bits(metrics.compute_metrics(g, tip, axis)) == bits(compute_metrics_py(g, tip, axis))
        assert bits(metrics.tip_and_axis_from_quat((0.0, 0.6, 0.0, 0.8), tip)) == bits(
            tip_and_axis_from_quat_py((0.0, 0.6, 0.0, 0.8), tip))
        with pytest.raises(PoseError, match="norm 2.000000"):
            metrics.tip_and_axis_from_quat((0.0, 0.0, 0.0, 2.0), tip)
        v = TrajectoryGuard().evaluate_quat((0.0, 0.0, 0.0, 2.0), tip, 1.0, 1.0)
        assert v.reason.startswith("input: tool pose quaternion: norm 2.000000 is not 1")
    finally:
        native.judge = saved


def test_screw_geometry_packs_its_floats_once():
    g = ScrewGeometry.from_screw(_screw(entry=(1.0, 2.0, 3.0), target=(1.0, 2.0, 43.0)))
    assert g.packed == (1.0, 2.0, 3.0, 0.0, 0.0, 1.0, 1.0, 2.0, 43.0, 40.0)
    assert g.packed is g.packed and all(type(v) is float for v in g.packed)
    assert g == ScrewGeometry.from_screw(_screw(entry=(1.0, 2.0, 3.0), target=(1.0, 2.0, 43.0)))  # not compared
    plan = Plan(frame="Reference", screws=[_screw()])
    assert len(plan) == 1


# ---- the guard node's decode: serialized PoseStamped -> stamp, frame, quaternion, mm (spine_nav/nodes/_pose_cdr.c) --
def _pose_c():
    from spine_nav.native import load

    return load("_pose_cdr", "spine_nav.nodes")[0]


def _fields_bits(r):
    """pose_cdr_fields_mm's result with every float as its 8 bytes (NaN payloads and signs compared too)."""
    import struct

    if r is None:
        return None
    sec, nanosec, frame, q, t = r
    return ((type(sec), sec), (type(nanosec), nanosec), (type(frame), frame), type(q), type(t),
            struct.pack("<4d", *q), struct.pack("<3d", *t), [type(v) for v in (*q, *t)])


def _pose_bytes(frame="Reference", sec=7, nanosec=250_000_000, vals=(0.1, -0.2, 0.3, 0.0, 0.0, 0.6, 0.8)):
    import struct

    name = frame.encode("utf-8") if isinstance(frame, str) else frame
    n = len(name) + 1
    pad = (-(12 + n)) % 8
    return struct.pack(f"<4siII{n}s{pad}x7d", b"\x00\x01\x00\x00", sec, nanosec, n, name, *vals)


def _bad_pose_bytes():
    good = _pose_bytes()
    return {
        "empty": b"", "15 bytes": good[:15], "one byte short": good[:-1], "one byte long": good + b"\x00",
        "big-endian encapsulation": b"\x00\x00\x00\x00" + good[4:], "string length 0": good[:12] + b"\0\0\0\0" + good[16:],
        "string length 4097": good[:12] + (4097).to_bytes(4, "little") + good[16:],
        "string length past the end": good[:12] + (200).to_bytes(4, "little") + good[16:],
        "bytearray": bytearray(good), "memoryview": memoryview(good), "text": "not bytes",
    }


@needs_c
@pytest.mark.parametrize("name", list(_bad_pose_bytes()))
def test_pose_decode_declines_what_is_not_the_fixed_layout_and_the_twin_answers_as_before(name):
    from spine_nav.nodes import conversions

    data = _bad_pose_bytes()[name]
    pose_c = _pose_c()
    assert pose_c is not None
    assert pose_c.pose_fields_mm(data, 1000.0) is None
    py = _twin(conversions.pose_cdr_fields_mm_py, data)
    assert _twin(conversions.pose_cdr_fields_mm, data) == py  # the dispatcher: the twin's result or its ValueError
    if name in ("bytearray", "memoryview"):
        assert py[0] == "ok"  # (rclpy's decoder, or the struct path, decides for the rest: some it decodes)
    elif name in ("empty", "15 bytes", "one byte short", "string length past the end"):
        assert py[:2] == ("raise", "ValueError"), py


@needs_c
def test_pose_decode_gives_the_same_fields_bit_for_bit():
    import struct

    from rclpy.serialization import serialize_message

    from spine_nav.nodes import conversions

    pose_c = _pose_c()
    rng = np.random.default_rng(99)
    frames = ["Reference", "", "R", "x" * 7, "y" * 12, "Référence", "a" * 4095, b"\xff\xfe bad utf-8", b"ends in x"]
    cases = []
    for k in range(3000):
        frame = frames[k % len(frames)]
        if k % 3 == 0:  # any 64-bit pattern: NaN payloads, infinities, subnormals, -0.0
            vals = struct.unpack("<7d", rng.integers(0, 2**63, 7, dtype=np.int64).astype("<i8").tobytes())
            vals = tuple(-v if rng.random() < 0.5 else v for v in vals)
        else:
            vals = tuple(float(v) for v in rng.normal(size=7) * 10.0 ** rng.uniform(-8, 8, 7))
        sec, nanosec = int(rng.integers(-2**31, 2**31)), int(rng.integers(0, 2**32))
        cases.append(_pose_bytes(frame, sec, nanosec, vals))
    # the frame's last byte is dropped whatever it is (the twin's name[:-1])
    raw = bytearray(_pose_bytes("Reference"))
    raw[16 + 9] = ord("!")
    cases.append(bytes(raw))
    cases.append(serialize_message(conversions.matrix_mm_to_pose_stamped(np.eye(4), "Reference", 1733486400.5)))
    for k, data in enumerate(cases):
        c = pose_c.pose_fields_mm(data, 1000.0)
        assert c is not None, k
        assert _fields_bits(c) == _fields_bits(conversions.pose_cdr_fields_mm_py(data)), k
    assert pose_c.pose_fields_mm(bytes(raw), 1000.0)[2] == "Reference"[:-1] + "e"  # (the '!' replaced the NUL)


@needs_c
def test_pose_decode_checks_its_arguments():
    pose_c = _pose_c()
    with pytest.raises(TypeError):
        pose_c.pose_fields_mm(_pose_bytes())
    with pytest.raises(TypeError):
        pose_c.pose_fields_mm(_pose_bytes(), "1000")
