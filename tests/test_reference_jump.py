"""Bumped-reference detection (tracking core) and the simulator's fault injection, without ROS.

The reference samples come from the simulated tracker (breathing 2 mm @ 0.25 Hz, 4-marker arrays with
Gaussian marker noise re-fitted by Kabsch), so the noise has the real lever-arm structure.
"""
from __future__ import annotations

import numpy as np
import pytest

from spine_nav.geometry import invert, make_transform, transform_difference
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig
from spine_nav.tracking import codec
from spine_nav.tracking.bridge import BridgeCore
from spine_nav.tracking.codec import StreamDecoder
from spine_nav.tracking.reference_jump import ReferenceJumpConfig, ReferenceJumpDetector
from spine_nav.tracking.tools import PoseComposer, ToolDefinition
from spine_nav.tracking.watchdog import OK, TRACKING_LOST, Watchdog

REF = "ReferenceToTracker"


def _rot_x(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _run(model: TrackerModel, det: ReferenceJumpDetector, n: int, start: int = 0):
    """Feed samples start..start+n-1; return (index, jump) of the first jump or None."""
    for k in range(start, start + n):
        f = model.sample(k)
        T = f.poses[REF]
        if T is None:
            continue
        jump = det.update(T, f.timestamp_s)
        if jump is not None:
            return k, jump
    return None


@pytest.mark.parametrize("noise_mm, noise_deg, duration_s", [(0.15, 0.1, 20), (0.25, 0.17, 60)])
def test_no_false_alarm_over_60_s_of_breathing_and_noise_at_250_hz(noise_mm, noise_deg, duration_s):
    """Sim default noise (0.15 mm, default config) over 20 s; worst-case 0.25 mm over 60 s (15000 samples)."""
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=noise_mm, breathing_amplitude_mm=2.0,
                                            breathing_hz=0.25, seed=7))
    det = ReferenceJumpDetector(ReferenceJumpConfig(noise_deg=noise_deg))
    assert _run(model, det, duration_s * 250) is None
    assert det.latched is None
    # the margin is real: largest accepted step well below the limits
    assert det.max_step_mm < 0.7 * det.config.limit_mm(0.004)
    assert det.max_step_deg < det.config.limit_deg


@pytest.mark.parametrize("shift_mm, rot_deg", [(2.0, 0.0), (3.0, 0.0), (2.5, 1.0), (0.0, 2.0)])
def test_bump_detected_on_the_first_bumped_sample_and_latched_until_reset(shift_mm, rot_deg):
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=0.25, seed=3))
    det = ReferenceJumpDetector(ReferenceJumpConfig(noise_deg=0.17))
    assert _run(model, det, 500) is None  # 2 s settled
    direction = np.array([0.3, -0.8, 0.5]) / np.linalg.norm([0.3, -0.8, 0.5])
    D = make_transform(_rot_x(rot_deg), direction * shift_mm)
    start = model.bump(D)
    assert start == pytest.approx(499.5 / 250.0)  # "now" = after the last sample taken
    hit = _run(model, det, 250, start=500)
    assert hit is not None and hit[0] == 500, hit
    jump = hit[1]
    assert jump.translation_mm == pytest.approx(shift_mm, abs=0.7)
    assert jump.rotation_deg == pytest.approx(rot_deg, abs=0.5)
    assert "reference array moved" in jump.reason and "re-register" in jump.reason and "in 4 ms" in jump.reason
    # latched: the following (consistent) samples do not clear it, nor report again
    assert _run(model, det, 250, start=501) is None and det.latched is jump
    det.reset()
    assert det.latched is None and _run(model, det, 500, start=751) is None  # bumped array is the new normal


def test_gap_allowance_is_capped_and_documented():
    cfg = ReferenceJumpConfig()
    assert cfg.limit_mm(0.004) == pytest.approx(1.02)  # max(1.0, 5 mm/s x 4 ms + 4 x 0.25)
    assert cfg.limit_mm(10.0) == pytest.approx(6.0)   # capped drift 5 mm + noise
    assert cfg.limit_deg == pytest.approx(max(0.5, 4 * np.sqrt(2) * 0.1))
    # breathing across a 1 s occlusion of the reference is not a jump
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=0.25, seed=5,
                                            occlusions=((REF, 1.0, 2.0),)))
    assert _run(model, ReferenceJumpDetector(ReferenceJumpConfig(noise_deg=0.17)), 1000) is None
    with pytest.raises(ValueError, match="min_jump_mm"):
        ReferenceJumpConfig(min_jump_mm=0.0)
    with pytest.raises(ValueError, match="noise_deg"):
        ReferenceJumpConfig(noise_deg=-1.0)


def test_watchdog_latch_holds_lost_while_samples_arrive():
    wd = Watchdog({"reference": REF})
    for k in range(10):
        wd.sample("reference", k * 0.01, k * 0.01)
    assert wd.check(0.095)[0].state == OK
    wd.latch_lost("reference", "reference array moved 3.0 mm")
    for k in range(10, 20):
        wd.sample("reference", k * 0.01, k * 0.01)
    h = wd.check(0.195)[0]
    assert h.state == TRACKING_LOST and h.reason == "reference array moved 3.0 mm" and h.changed
    assert wd.clear_latch("reference") and not wd.clear_latch("reference")
    assert wd.check(0.195)[0].state == OK
    with pytest.raises(KeyError):
        wd.latch_lost("nope", "x")


def test_bridge_core_latches_bumped_reference_until_reset_reference():
    """Encoded OpenIGTLink stream from the simulator -> BridgeCore: health and the wrong tool tip after a bump."""
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=0.0, seed=1))
    T_ref_tip = make_transform(None, [5.0, -10.0, 30.0])
    model.set_tool_pose_mm(T_ref_tip)
    tool = ToolDefinition()
    outs = []
    t = [0.0]
    core = BridgeCore(PoseComposer(tools=(tool,)), on_output=lambda o, _t: outs.append(o), clock=lambda: t[0],
                      jump_detector=ReferenceJumpDetector())

    def feed(k0: int, n: int) -> None:
        dec = StreamDecoder()
        for k in range(k0, k0 + n):
            f = model.sample(k)
            t[0] = f.timestamp_s
            data = b"".join(codec.encode_transform(d, T, f.timestamp_s) for d, T in f.poses.items() if T is not None)
            for m in dec.feed(data):
                assert isinstance(m, codec.IgtlMessage), m
                core.handle(m, 0, "sim")

    def ref_health():
        return {h.tool: h for h in core.check()}["reference"]

    feed(0, 100)
    assert ref_health().state == OK
    D = make_transform(None, [0.0, 3.0, 0.0])
    model.bump(D)
    outs.clear()
    feed(100, 100)
    h = ref_health()
    assert h.state == TRACKING_LOST and "reference array moved 3.0 mm" in h.reason and "bumped?" in h.reason
    # the navigation error the latch protects against: the tool tip is now off by inv(D)
    tip = [o.matrix for o in outs if o.kind == "tool_tip"][-1]
    lateral_mm, _ = transform_difference(tip, T_ref_tip)
    assert lateral_mm == pytest.approx(3.0, abs=1e-3)
    np.testing.assert_allclose(tip, invert(D) @ T_ref_tip, atol=1e-3)  # float32 on the wire
    assert "moved 3.0 mm" in core.reset_reference()
    feed(200, 20)
    assert ref_health().state == OK and core.reset_reference() == ""


def test_sim_occlude_from_now_and_bump_keeps_tool_truth_and_true_reference():
    model = TrackerModel(TrackerModelConfig(rate_hz=100.0, noise_mm=0.0, seed=2), t0_s=1000.0)
    T_ref_tip = make_transform(None, [1.0, 2.0, 3.0])
    model.set_tool_pose_mm(T_ref_tip)
    for k in range(50):
        model.sample(k)
    a, b = model.occlude("StylusToTracker", 0.2)
    assert (a, b) == pytest.approx((0.495, 0.695))
    assert [model.sample(k).poses["StylusToTracker"] is None for k in (50, 69, 70)] == [True, True, False]
    with pytest.raises(ValueError, match="duration_s"):
        model.occlude("StylusToTracker", 0.0)
    before = model.sample(80)
    D = make_transform(_rot_x(2.0), [2.0, 0.0, 0.0])
    assert model.bump(D) == pytest.approx(0.805)
    f = model.sample(81)
    t = 0.81
    np.testing.assert_allclose(f.poses[REF], model.T_tracker_reference_true(t) @ D, atol=1e-9)
    np.testing.assert_allclose(model.T_tracker_reference_array(t), f.poses[REF], atol=1e-12)
    np.testing.assert_allclose(f.T_reference_tooltip, T_ref_tip)  # anatomy/tool truth in the patient frame
    # the stylus the camera sees did not move (only the array did)
    T_tool_expected = model.T_tracker_reference_true(t) @ T_ref_tip @ invert(model.config.tool.T_tool_tooltip)
    np.testing.assert_allclose(f.poses["StylusToTracker"], T_tool_expected, atol=1e-9)
    assert not np.allclose(before.poses[REF], f.poses[REF], atol=1.0)
    model.bump(D)  # bumps accumulate
    np.testing.assert_allclose(model.sample(90).poses[REF], model.T_tracker_reference_true(0.9) @ D @ D, atol=1e-9)
    assert model.model_time_s(1000.25) == pytest.approx(0.25)
    model.clear_faults()
    np.testing.assert_allclose(model.sample(91).poses[REF], model.T_tracker_reference_true(0.91), atol=1e-12)
    with pytest.raises(ValueError, match="bump T_delta"):
        model.bump(np.diag([2.0, 1.0, 1.0, 1.0]))
