"""Tracking core: composition with skew limits, watchdog timing, pivot calibration, bridge core on malformed poses."""
from __future__ import annotations

import numpy as np
import pytest

from spine_nav.geometry import compose, invert, make_transform, random_transform
from spine_nav.tracking import codec
from spine_nav.tracking.bridge import BridgeCore
from spine_nav.tracking.codec import StreamDecoder
from spine_nav.tracking.pivot import PivotError, pivot_calibration, synthetic_pivot_poses
from spine_nav.tracking.tools import PoseComposer, ToolDefinition, tooltip_transform, validate_pose
from spine_nav.tracking.watchdog import OK, TRACKING_LOST, Watchdog

RNG = np.random.default_rng(3)
T_TR = random_transform(RNG, max_translation_mm=1500)
T_REF_TIP = random_transform(RNG, max_translation_mm=100)
TOOL = ToolDefinition(tip_offset_mm=(1.0, -2.0, 160.0))
T_TT = compose(T_TR, T_REF_TIP, invert(TOOL.T_tool_tooltip))  # T_tracker_tool


def test_tooltip_frame_z_along_shaft():
    T = tooltip_transform((0, 0, 150))
    np.testing.assert_allclose(T[:3, 3], (0, 0, 150))
    np.testing.assert_allclose(T[:3, 2], (0, 0, 1))
    T2 = tooltip_transform((10, 0, 0), shaft_direction=(0, 1, 0))
    np.testing.assert_allclose(T2[:3, 2], (0, 1, 0), atol=1e-12)


def test_compose_tool_tip_in_reference():
    c = PoseComposer(tools=(TOOL,), max_skew_ms=2.0)
    c.add("ReferenceToTracker", T_TR, 10.000)
    out = c.add("StylusToTracker", T_TT, 10.001)
    tip = [o for o in out if o.kind == "tool_tip"]
    assert len(tip) == 1 and tip[0].skew_ms == pytest.approx(1.0)
    np.testing.assert_allclose(tip[0].matrix, T_REF_TIP, atol=1e-9)


def test_tool_before_its_reference_waits_then_composes():
    c = PoseComposer(tools=(TOOL,), max_skew_ms=1.0)
    c.add("ReferenceToTracker", T_TR, 9.983)        # previous frame, 17 ms earlier
    assert c.add("StylusToTracker", T_TT, 10.0) == []  # pending
    out = c.add("ReferenceToTracker", T_TR, 10.0)
    assert [o.kind for o in out] == ["reference", "tool_tip"]
    assert out[1].timestamp_s == 10.0


def test_stale_reference_is_reported_never_published():
    c = PoseComposer(tools=(TOOL,), max_skew_ms=2.0)
    c.add("ReferenceToTracker", T_TR, 10.0)
    c.add("ReferenceToTracker", T_TR, 10.1)
    out = c.add("StylusToTracker", T_TT, 10.05)  # references exist only 50 ms away
    assert [o.kind for o in out] == ["stale"] and out[0].matrix is None and out[0].rows is None
    assert "no reference sample within 2 ms" in out[0].detail
    # tool with no reference ever: bounded pending, overflow reported stale
    c2 = PoseComposer(tools=(TOOL,), max_pending=3)
    kinds = [o.kind for i in range(6) for o in c2.add("StylusToTracker", T_TT, float(i))]
    assert kinds.count("stale") == 3 and kinds.count("tool_tip") == 0 and c2.stale_count == 3


def test_direct_tip_device_used_as_is():
    c = PoseComposer(tools=(TOOL,))
    out = c.add("StylusTipToReference", T_REF_TIP, 1.0)
    assert out[0].kind == "tool_tip" and np.array_equal(out[0].matrix, T_REF_TIP)
    assert out[0].rows == T_REF_TIP[:3].tolist() and out[0].matrix[3].tolist() == [0.0, 0.0, 0.0, 1.0]  # from rows


@pytest.mark.parametrize("bad,kind", [
    (np.full((4, 4), np.nan), "non-finite pose"),
    (np.diag([2.0, 1.0, 1.0, 1.0]), "non-rigid pose"),
    (np.diag([-1.0, 1.0, 1.0, 1.0]), "non-rigid pose"),
])
def test_validate_pose_rejects(bad, kind):
    with pytest.raises(codec.MalformedMessage) as e:
        validate_pose(bad, "StylusToTracker")
    assert e.value.kind == kind and "StylusToTracker" in str(e.value)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_watchdog_timing_and_missing():
    clock = FakeClock()
    wd = Watchdog({"stylus": "StylusToTracker"}, timeout_ms=50.0, timeout_periods=3.0)
    assert wd.check(clock())[0].state == TRACKING_LOST  # no sample yet
    for k in range(60):  # 60 Hz stream
        wd.sample("stylus", clock.t, 5.0 + k / 60.0)
        clock.t += 1 / 60.0
    h = wd.check(clock.t)[0]
    assert h.state == OK and h.changed and h.rate_hz == pytest.approx(60.0, rel=1e-6)
    assert wd.effective_timeout_ms("stylus") == pytest.approx(50.0)
    assert wd.check(clock.t + 0.049 - 1 / 60.0)[0].state == OK
    h = wd.check(clock.t + 0.051 - 1 / 60.0)[0]
    assert h.state == TRACKING_LOST and h.reason.startswith("sample age 51 ms > 50 ms") and h.changed
    wd.sample("stylus", clock.t, 7.0)
    assert wd.check(clock.t)[0].state == OK
    wd.set_visible("stylus", False, "tracker reports tool missing (STATUS 16)")
    h = wd.check(clock.t)[0]
    assert h.state == TRACKING_LOST and "STATUS 16" in h.reason


def test_watchdog_slow_tracker_uses_three_periods():
    wd = Watchdog({"s": "S"})
    for k in range(20):
        wd.sample("s", k * 0.1, k * 0.1)  # 10 Hz
    assert wd.effective_timeout_ms("s") == pytest.approx(300.0)
    assert wd.check(1.9 + 0.25)[0].state == OK
    assert wd.check(1.9 + 0.31)[0].state == TRACKING_LOST


def test_bridge_core_counts_bad_poses_status_and_metadata():
    clock = FakeClock()
    outs = []
    core = BridgeCore(PoseComposer(tools=(TOOL,)), on_output=lambda o, t: outs.append(o), clock=clock)
    data = b"".join([
        codec.encode_transform("ReferenceToTracker", T_TR, 1.0),
        codec.encode_transform("StylusToTracker", np.diag([1.0, 2.0, 1.0, 1.0]), 1.0),  # non-rigid
        codec.encode_transform("StylusToTracker", T_TT, 1.0),
        codec.encode_transform("Unknown", T_TT, 1.0),
        codec.encode_status("StylusToTracker", 16, 1.01, "hidden"),
    ])
    for m in StreamDecoder().feed(data):
        core.handle(m, 0, "test-peer")
    assert core.rejected["non-rigid pose"] == 1 and core.ignored_devices["Unknown"] == 1
    assert [o.kind for o in outs] == ["reference", "tool_tip"]
    health = {h.tool: h for h in core.check()}
    assert health["stylus"].state == TRACKING_LOST and "STATUS 16" in health["stylus"].reason
    assert health["stylus"].samples_rejected == 1 and health["stylus"].samples_received == 1
    # PLUS v3 metadata TransformStatus=MISSING: not published, reported missing
    outs.clear()
    for m in StreamDecoder().feed(codec.encode_transform("ReferenceToTracker", T_TR, 2.0, header_version=2,
                                                         metadata={"TransformStatus": "MISSING"})):
        core.handle(m, 0, "p")
    assert outs == [] and {h.tool: h for h in core.check()}["reference"].state == TRACKING_LOST


def test_pivot_calibration_synthetic_within_0_1_mm():
    rng = np.random.default_rng(11)
    tip, pivot = np.array([3.0, -1.5, 152.0]), np.array([20.0, -40.0, -1400.0])
    res = pivot_calibration(synthetic_pivot_poses(rng, tip, pivot, n=300, cone_deg=30, noise_mm=0.1))
    assert np.linalg.norm(res.tip_offset_mm - tip) < 0.1
    assert np.linalg.norm(res.pivot_point_mm - pivot) < 0.1
    assert 0.05 < res.rms_residual_mm < 0.3
    exact = pivot_calibration(synthetic_pivot_poses(rng, tip, pivot, n=50, noise_mm=0.0))
    assert exact.rms_residual_mm < 1e-6


def test_pivot_rejects_static_and_small_motion():
    rng = np.random.default_rng(2)
    T = make_transform(np.eye(3), [0, 0, 100])
    with pytest.raises(PivotError, match="too small"):
        pivot_calibration([T] * 50)
    with pytest.raises(PivotError, match="too small"):
        pivot_calibration(synthetic_pivot_poses(rng, (0, 0, 150), (0, 0, 0), n=100, cone_deg=5))
    with pytest.raises(PivotError, match="at least 10 poses"):
        pivot_calibration([T] * 3)


def test_bridge_core_defers_reference_until_the_chunk_is_done():
    """The tool tip of a frame goes out before the frame's reference that arrived ahead of it."""
    outs = []
    core = BridgeCore(PoseComposer(tools=(TOOL,)), on_output=lambda o, t: outs.append((o.kind, t)),
                      clock=FakeClock(), defer_kinds=frozenset({"reference", "arm_marker"}))
    chunk = codec.encode_transform("ReferenceToTracker", T_TR, 1.0) + codec.encode_transform("StylusToTracker", T_TT, 1.0)
    for m in StreamDecoder().feed(chunk):
        core.handle(m, 7, "p")
    assert [k for k, _ in outs] == ["tool_tip"]  # reference held back
    core.flush()
    assert outs == [("tool_tip", 7), ("reference", 7)]  # nothing lost, receive time kept
    core.flush()
    assert len(outs) == 2  # flushing twice emits nothing twice


def _cases_for_rigidity():
    """Matrices on both sides of the rigid check: rigid, float32-rounded, orthonormality error just
    inside / outside geometry.ORTHONORMAL_TOL, a reflection, a scaling, NaN, inf, a bad bottom row."""
    from spine_nav.geometry.transforms import ORTHONORMAL_TOL as RIGID_ROWS_TOL  # the one rigidity tolerance

    rng = np.random.default_rng(11)
    out = [random_transform(rng, max_translation_mm=1500.0) for _ in range(5)]
    out.append(random_transform(rng).astype(np.float32).astype(float))
    for eps in (0.3 * RIGID_ROWS_TOL, 3.0 * RIGID_ROWS_TOL):
        m = random_transform(rng)
        m[0, 1] += eps
        out.append(m)
    out += [np.diag([-1.0, 1.0, 1.0, 1.0]), np.diag([1.0, 1.002, 1.0, 1.0]), np.diag([1.0, 1.0, 1.0, 1.01])]
    for v in (np.nan, np.inf):
        m = random_transform(rng)
        m[2, 3] = v
        out.append(m)
    return out


@pytest.mark.parametrize("M", _cases_for_rigidity())
def test_hot_path_rows_and_ndarray_get_the_same_rigid_verdict(M):
    """One rigid check, one tolerance: the codec's hot-path form (TransformRows' four rows of plain floats)
    and the ndarray form give the same rows or the same error (kind and message)."""
    from spine_nav.tracking.tools import validate_rows

    def verdict(m):
        try:
            return validate_rows(m, "StylusToTracker")
        except codec.MalformedMessage as exc:
            return (exc.kind, str(exc))

    rows = tuple(tuple(float(x) for x in r) for r in M)
    assert verdict(rows) == verdict(M)


def test_bridge_core_hot_path_and_general_path_give_the_same_outputs():
    """The same samples as TransformRows (the codec's 1 kHz form) and as general IgtlMessages give the same
    outputs (kinds, rows, stamps), rejections, latch and health."""
    from spine_nav.tracking.reference_jump import ReferenceJumpDetector

    rng = np.random.default_rng(5)
    seq = []
    for k in range(40):
        t = 10.0 + k * 1e-3
        seq.append(("ReferenceToTracker", T_TR if k < 30 else compose(T_TR, make_transform(np.eye(3), [3, 0, 0])), t))
        seq.append(("StylusToTracker", compose(T_TT, random_transform(rng, max_translation_mm=1.0, max_angle_deg=1.0))
                    if k != 7 else np.diag([1.0, 2.0, 1.0, 1.0]), t))
    runs = []
    for fast in (True, False):
        outs = []
        core = BridgeCore(PoseComposer(tools=(TOOL,)), on_output=lambda o, t: outs.append(o), clock=FakeClock(),
                          jump_detector=ReferenceJumpDetector(), defer_kinds=frozenset({"reference"}))
        for dev, M, t in seq:
            if fast:
                msg = codec.TransformRows(dev, t, tuple(tuple(r) for r in M.tolist()))
            else:
                msg = codec.IgtlMessage(type="TRANSFORM", device=dev, timestamp_s=t, poses=[(dev, M)])
            core.handle(msg, 0, "p")
            core.flush()
        runs.append(([(o.kind, o.timestamp_s, o.rows) for o in outs], dict(core.rejected), core.withheld,
                     [(h.tool, h.state, h.reason, h.samples_received, h.samples_rejected) for h in core.check()]))
    assert runs[0] == runs[1]
    assert runs[0][1] == {"non-rigid pose": 1} and runs[0][2] > 0  # the cases were exercised
