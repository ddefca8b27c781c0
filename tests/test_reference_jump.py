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


def _bumped_stream(order: str, bump_at: int = 100, n: int = 200, shift_mm=(3.0, 0.0, 0.0), rot_deg: float = 2.0):
    """The simulated tracker (no noise, breathing on) encoded as OpenIGTLink, one ``recv()`` chunk per frame,
    the reference bumped from frame ``bump_at`` on (the demo's 3 mm / 2 deg knock by default). ``order``:
    ``ref_first`` / ``tool_first`` (two TRANSFORM messages per frame, either order) or ``tdata`` (one TDATA).
    Returns (chunks [(frame stamp, bytes)], T_reference_tooltip truth, bump stamp, D)."""
    model = TrackerModel(TrackerModelConfig(rate_hz=250.0, noise_mm=0.0, seed=1))
    T_ref_tip = make_transform(None, [5.0, -10.0, 30.0])
    model.set_tool_pose_mm(T_ref_tip)
    D = make_transform(_rot_x(rot_deg), list(shift_mm))
    chunks, bump_stamp = [], None
    for k in range(n):
        if k == bump_at:
            model.bump(D)
        f = model.sample(k)
        if k == bump_at:
            bump_stamp = f.timestamp_s
        poses = [(d, T) for d, T in f.poses.items() if T is not None and d in (REF, "StylusToTracker")]
        poses.sort(key=lambda p: (p[0] != REF) == (order != "tool_first"))
        if order == "tdata":
            data = codec.encode_tdata("Tracker", [codec.TDataElement(d, T) for d, T in poses], f.timestamp_s)
        else:
            data = b"".join(codec.encode_transform(d, T, f.timestamp_s) for d, T in poses)
        chunks.append((f.timestamp_s, data))
    return chunks, T_ref_tip, bump_stamp, D


def _bridge_with_event_log():
    """A BridgeCore whose latch callback and outputs append to ONE event list (their order is the point)."""
    events: list[tuple] = []
    t = [0.0]
    core = BridgeCore(PoseComposer(tools=(ToolDefinition(),)), clock=lambda: t[0],
                      on_output=lambda o, _t: events.append(("out", o)),
                      on_latch=lambda reason: events.append(("latch", reason)),
                      jump_detector=ReferenceJumpDetector(), defer_kinds=frozenset({"reference", "arm_marker"}))

    def feed(chunks) -> None:
        dec = StreamDecoder()
        for stamp, data in chunks:
            t[0] = stamp
            for m in dec.feed(data):
                assert isinstance(m, codec.IgtlMessage), m
                core.handle(m, 0, "sim")
            core.flush()  # end of the recv() chunk, as the transport does
    return core, events, feed


@pytest.mark.parametrize("order", ["ref_first", "tool_first", "tdata"])
def test_no_tool_tip_composed_with_a_bumped_reference_is_ever_emitted(order):
    """Fault attribution: the bump is known (on_latch, health) before anything of the bumped frame is
    emitted, no tool tip composed with the bumped reference leaves the core, and the withheld ones are counted."""
    chunks, T_ref_tip, bump_stamp, _ = _bumped_stream(order)
    core, events, feed = _bridge_with_event_log()
    feed(chunks)
    tips = [e[1] for e in events if e[0] == "out" and e[1].kind == "tool_tip"]
    # every emitted tip is the true one (a tip composed with the bumped reference would be ~3 mm off)
    worst = max(transform_difference(o.matrix, T_ref_tip)[0] for o in tips)
    assert worst < 0.01, worst
    assert all(o.timestamp_s < bump_stamp for o in tips)
    assert len(tips) == 100 and core.withheld == 100  # the 100 frames before the bump out, the 100 after held back
    latch = [i for i, e in enumerate(events) if e[0] == "latch"]
    assert len(latch) == 1, "the latch is reported once"
    reason = events[latch[0]][1]
    assert "reference array moved 3.0 mm / 2.0 deg" in reason and "bumped?" in reason
    # nothing of the bumped frame or later went out before the latch was reported
    assert all(e[1].timestamp_s < bump_stamp for e in events[:latch[0]]), order
    h = {h.tool: h for h in core.check()}["reference"]
    assert h.state == TRACKING_LOST and h.reason == reason


def test_bridge_core_latches_bumped_reference_until_reset_reference():
    """After re-registration (reset) the tips flow again; composed with the moved array they are off by
    inv(D): the navigation error re-registration has to absorb, which the latch kept from the guard."""
    chunks, T_ref_tip, _, D = _bumped_stream("ref_first", shift_mm=(0.0, 3.0, 0.0), rot_deg=0.0, n=220)
    core, events, feed = _bridge_with_event_log()
    feed(chunks[:100])
    assert {h.tool: h for h in core.check()}["reference"].state == OK
    feed(chunks[100:200])
    h = {h.tool: h for h in core.check()}["reference"]
    assert h.state == TRACKING_LOST and "reference array moved 3.0 mm" in h.reason and "bumped?" in h.reason
    assert core.withheld == 100
    events.clear()
    assert "moved 3.0 mm" in core.reset_reference()
    feed(chunks[200:])
    assert {h.tool: h for h in core.check()}["reference"].state == OK and core.reset_reference() == ""
    tips = [e[1] for e in events if e[0] == "out" and e[1].kind == "tool_tip"]
    assert len(tips) == 20 and core.withheld == 100
    lateral_mm, _ = transform_difference(tips[-1].matrix, T_ref_tip)
    assert lateral_mm == pytest.approx(3.0, abs=1e-3)
    np.testing.assert_allclose(tips[-1].matrix, invert(D) @ T_ref_tip, atol=1e-3)  # float32 on the wire


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


@pytest.mark.parametrize("noise_deg", [0.1, 0.17])
def test_rotation_limit_in_cosine_form_agrees_with_the_angle(noise_deg):
    """The detector compares cos(step) with cos(limit) (no acos per sample): it trips exactly when the
    step angle exceeds ``limit_deg``, and reports the largest accepted step in degrees."""
    cfg = ReferenceJumpConfig(noise_deg=noise_deg)
    for step in np.linspace(0.0, 2.0 * cfg.limit_deg, 41):
        if abs(step - cfg.limit_deg) < 1e-6:
            continue  # the boundary itself: rounding either way
        det = ReferenceJumpDetector(cfg)
        det.update(np.eye(4), 0.0)
        jump = det.update(make_transform(_rot_x(step), [0, 0, 0]), 0.004)
        assert (jump is not None) == (step > cfg.limit_deg), step
        if jump is None:
            assert det.max_step_deg == pytest.approx(step, abs=1e-6)
        else:
            assert jump.rotation_deg == pytest.approx(step, abs=1e-6)
