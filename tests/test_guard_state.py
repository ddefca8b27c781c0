"""Guard state machine: scripted scenario (exact sequence and timing), hysteresis, debounce, input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spine_nav.geometry import make_transform
from spine_nav.guard import GuardConfig, GuardState, TrajectoryGuard
from spine_nav.plan import Plan, Screw
from scipy.spatial.transform import Rotation

S = GuardState
LATENCY_S = 0.0005  # judged 0.5 ms after the tracker's sample time


def make_guard(**cfg) -> TrajectoryGuard:
    g = TrajectoryGuard(GuardConfig(**cfg))
    g.set_plan(Plan(screws=(Screw(id="L4_left", level="L4", side="left", entry_mm=(0, 0, 0),
                                  target_mm=(0, 0, 40), diameter_mm=6.5, length_mm=45),), frame="Reference"))
    return g


def pose(x=0.0, z=0.0, tilt_deg=0.0):
    return make_transform(Rotation.from_euler("y", tilt_deg, degrees=True).as_matrix(), [x, 0.0, z])


def test_scripted_scenario_exact_state_sequence_and_timing():
    """approach -> aligned -> drilling (with a WARN excursion) -> depth stop -> violation ->
    tracking lost (samples stop) -> recovery, at 1 kHz with debounce 30 ms, stale after 50 ms."""
    g = make_guard()
    script = []  # (start ms, end ms exclusive, pose function of ms)
    script.append((0, 100, lambda k: pose(0.0, -25.0)))                      # far: APPROACH
    script.append((100, 200, lambda k: pose(0.3, -5.0)))                     # near entry, aligned
    script.append((200, 300, lambda k: pose(0.3, (k - 200) * 0.3)))          # drilling 0 -> 29.7 mm
    script.append((300, 350, lambda k: pose(1.3, 30.0)))                     # lateral 1.3: WARN (immediate)
    script.append((350, 400, lambda k: pose(0.3, 30.0 + (k - 350) * 0.2)))   # back in: ALIGNED after 30 ms
    script.append((400, 450, lambda k: pose(0.3, 40.5)))                     # past the depth stop (40 mm)
    script.append((450, 500, lambda k: pose(0.3, 39.9)))                     # still latched (hysteresis 0.2)
    script.append((500, 550, lambda k: pose(0.3, 39.0)))                     # cleared: ALIGNED after 30 ms
    script.append((550, 600, lambda k: pose(0.3, 39.0, tilt_deg=5.0)))       # angle 5 > 4: VIOLATION
    # 600..700: no samples at all -> the watchdog (run every 1 ms) reports TRACKING_LOST
    script.append((700, 800, lambda k: pose(0.3, 39.0)))                     # samples back: recovery
    timeline: list[tuple[int, GuardState]] = []

    def record(k, v):
        if v is not None and (not timeline or timeline[-1][1] != v.state):
            timeline.append((k, v.state))

    segments = {k: f for a, b, f in script for k in range(a, b)}
    for k in range(0, 800):
        t = k / 1000.0
        if k in segments:
            record(k, g.evaluate(segments[k](k), t, t + LATENCY_S))
        record(k, g.watchdog(t + LATENCY_S))
    assert timeline == [
        (0, S.APPROACH),
        (130, S.ALIGNED),        # near entry from 100 ms; debounce 30 ms
        (300, S.WARN),           # escalation: immediate
        (380, S.ALIGNED),        # de-escalation: 30 ms
        (400, S.VIOLATION),      # depth stop: immediate
        (530, S.ALIGNED),        # 39.9 mm keeps the latch (clears below 39.8); 39.0 from 500 ms + 30 ms
        (550, S.VIOLATION),      # angle: immediate
        (650, S.TRACKING_LOST),  # last sample at 599 ms; 650.5 - 599.5 = 51 ms > 50 ms
        (730, S.ALIGNED),        # recovery waits the debounce: samples back at 700 ms
    ]


def test_watchdog_reason_and_quiet_while_samples_flow():
    g = make_guard()
    v = g.watchdog(10.0)
    assert v.state == S.TRACKING_LOST and "no tool sample received yet" in v.reason
    g.evaluate(pose(0.3, 5.0), 10.0, 10.001)
    assert g.watchdog(10.04) is None
    v = g.watchdog(10.2)
    assert v.state == S.TRACKING_LOST and "no tool sample for 199 ms" in v.reason


def test_watchdog_reason_leads_with_the_trackers_when_samples_stop_because_of_it():
    """The bridge withholds tool tips after a bumped reference: the guard's watchdog then names the bump first."""
    g = make_guard()
    g.evaluate(pose(0.3, 5.0), 10.0, 10.001)
    g.set_tracking_health("reference: reference array moved 3.0 mm / 2.0 deg in 4 ms: bumped?", tool="reference")
    v = g.watchdog(10.2)
    assert v.state == S.TRACKING_LOST and v.reason.startswith("tracker: reference: reference array moved"), v.reason
    assert "watchdog: no tool sample for 199 ms" in v.reason
    g.set_tracking_health("", tool="reference")
    assert g.watchdog(10.3).reason.startswith("watchdog: ")


def feed(g, values, make, t0=0.0):
    out = []
    for i, val in enumerate(values):
        t = t0 + i * 0.001
        out.append(g.evaluate(make(val), t, t + LATENCY_S).state)
    return out


def test_hysteresis_on_lateral_warn_threshold():
    g = make_guard(debounce_s=0.0)
    states = feed(g, [0.5, 1.05, 0.95, 1.05, 0.85, 0.81, 0.79, 0.95], lambda x: pose(x, 10.0))
    assert states == [S.ALIGNED, S.WARN, S.WARN, S.WARN, S.WARN, S.WARN, S.ALIGNED, S.ALIGNED]


def test_hysteresis_on_angle_violation_threshold_and_reason():
    g = make_guard(debounce_s=0.0)
    states = feed(g, [1.0, 4.1, 3.9, 3.7, 3.5], lambda a: pose(0.0, 10.0, a))
    assert states == [S.ALIGNED, S.VIOLATION, S.VIOLATION, S.VIOLATION, S.WARN]
    v = g.evaluate(pose(0.0, 10.0, 4.2), 1.0, 1.0)
    assert v.reason == "angular_error_deg 4.20 > 4"
    v = g.evaluate(pose(0.0, 10.0, 3.8), 1.001, 1.001)
    assert v.state == S.VIOLATION and "latched (hysteresis: clears below 3.6)" in v.reason


def test_hysteresis_on_approach_distance():
    g = make_guard(debounce_s=0.0)
    states = feed(g, [-15.1, -14.9, -14.81, -14.79, -14.9, -15.1], lambda z: pose(0.0, z))
    assert states == [S.APPROACH, S.APPROACH, S.APPROACH, S.ALIGNED, S.ALIGNED, S.APPROACH]


def test_depth_stop_with_margin_and_during_approach_zone():
    g = make_guard(debounce_s=0.0, depth_margin_mm=1.0)
    assert feed(g, [40.5, 41.01, 40.9, 40.79], lambda z: pose(0.3, z)) == [S.ALIGNED, S.VIOLATION, S.VIOLATION,
                                                                           S.ALIGNED]


def test_debounce_never_delays_violation_or_tracking_lost():
    g = make_guard(debounce_s=1.0)  # long: only the way back to a less severe state may wait
    assert g.evaluate(pose(0.0, -25.0), 0.0, 0.0).state == S.APPROACH
    assert g.evaluate(pose(0.3, 5.0), 0.001, 0.001).state == S.APPROACH      # held
    assert g.evaluate(pose(3.0, 5.0), 0.002, 0.002).state == S.VIOLATION     # immediate
    bad = pose(0.3, 5.0)
    bad[0, 3] = float("nan")
    assert g.evaluate(bad, 0.003, 0.003).state == S.TRACKING_LOST  # immediate
    v = g.evaluate(pose(0.3, 5.0), 0.004, 0.004)
    assert v.state == S.TRACKING_LOST and "pending" in v.reason  # one good sample never clears it


@pytest.mark.parametrize("kind, match", [
    ("nan", "non-finite"), ("scaled", "not orthonormal"), ("reflection", "reflection"),
    ("stale", "stale sample, age 200.0 ms > 50 ms"), ("backwards", "time went backwards"),
    ("nan_time", "sample time is not finite"),
])
def test_input_checks_give_tracking_lost_with_reason(kind, match):
    g = make_guard()
    ok = g.evaluate(pose(0.3, 5.0), 1.0, 1.0005)
    assert ok.state == S.ALIGNED
    T, t, now = pose(0.3, 5.0), 1.001, 1.0015
    if kind == "nan":
        T[0, 3] = np.nan
    elif kind == "scaled":
        T[:3, :3] *= 1.01
    elif kind == "reflection":
        T[:3, 0] *= -1
    elif kind == "stale":
        t, now = 1.001, 1.201
    elif kind == "backwards":
        t = 0.999
    elif kind == "nan_time":
        t = float("nan")
    v = g.evaluate(T, t, now)
    assert v.state == S.TRACKING_LOST and match in v.reason
    assert math.isnan(v.metrics.lateral_error_mm)  # no numbers from a sample that cannot be judged


def test_tracker_health_lost_and_no_plan():
    g = TrajectoryGuard()
    v = g.evaluate(pose(0.3, 5.0), 1.0, 1.0)
    assert v.state == S.NO_PLAN and v.reason == "no plan received"
    g = make_guard()
    g.set_tracking_health("tracker reports tool missing")
    v = g.evaluate(pose(0.3, 5.0), 1.0, 1.0)
    assert v.state == S.TRACKING_LOST and "tracker reports tool missing" in v.reason
    g.set_tracking_health("")
    v = g.evaluate(pose(0.0, -200.0), 1.1, 1.1)
    assert v.state == S.NO_PLAN and "capture radius" in v.reason


def test_tracker_health_per_tool_one_ok_never_clears_another_lost():
    g = make_guard()
    g.set_tracking_health("reference: reference array moved 3.0 mm / 0.1 deg in 4 ms: bumped?", tool="reference")
    g.set_tracking_health("", tool="stylus")  # the stylus's OK arrives after: must not clear the reference
    for k in range(5):  # every sample while lost
        v = g.evaluate(pose(0.3, 5.0), 1.0 + k * 0.01, 1.0 + k * 0.01)
        assert v.state == S.TRACKING_LOST and "reference array moved" in v.reason
    g.set_tracking_health("stylus: tracker reports tool missing", tool="stylus")
    assert g.lost_tools == ("reference", "stylus")
    assert "reference array moved" in g.health_lost_reason and "tool missing" in g.health_lost_reason
    g.set_tracking_health("", tool="reference")
    assert g.evaluate(pose(0.3, 5.0), 1.1, 1.1).state == S.TRACKING_LOST  # stylus still lost
    g.set_tracking_health("", tool="stylus")
    assert g.health_lost_reason == "" and g.lost_tools == ()
    v = g.evaluate(pose(0.3, 5.0), 1.2, 1.2)
    assert v.state == S.TRACKING_LOST and "pending debounce" in v.reason  # leaving LOST is debounced
    assert g.evaluate(pose(0.3, 5.0), 1.3, 1.3).state == S.ALIGNED


def test_non_navigable_screw_reports_no_plan_with_reason():
    g = TrajectoryGuard()
    g.set_plan(Plan(screws=(Screw(id="L3_right", level="L3", side="right", entry_mm=(0, 0, 0),
                                  target_mm=(0, 0, 40), diameter_mm=6.5, length_mm=45),), frame="Reference"),
               not_navigable={"L3_right": "L3: registration failed (rmse 2.1 mm > 1.0 mm)"})
    v = g.evaluate(pose(0.3, 5.0), 1.0, 1.0)
    assert v.state == S.NO_PLAN and v.screw_id == "L3_right" and "rmse 2.1 mm" in v.reason
