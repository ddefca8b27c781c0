"""Simulated tracker model: determinism, breathing, noise level, occlusions, composition; TDATA mode over TCP."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from spine_nav.geometry import invert, random_transform
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig, parse_occlusions
from spine_nav.sim.tracker_server import SimTrackerServer
from spine_nav.tracking import codec
from spine_nav.tracking.transport import IgtlClient
from tests.helpers import wait_until

T_REF_TIP = random_transform(np.random.default_rng(0), max_angle_deg=40, max_translation_mm=80)


def _model(**kw) -> TrackerModel:
    m = TrackerModel(TrackerModelConfig(**kw))
    m.set_tool_pose_mm(T_REF_TIP)
    return m


def test_deterministic_for_seed():
    a, b, c = _model(seed=3, tremor_mm=0.2), _model(seed=3, tremor_mm=0.2), _model(seed=4, tremor_mm=0.2)
    for k in (0, 17, 999):
        np.testing.assert_array_equal(a.sample(k).poses["StylusToTracker"], b.sample(k).poses["StylusToTracker"])
    assert not np.allclose(a.sample(5).poses["StylusToTracker"], c.sample(5).poses["StylusToTracker"])


def test_noise_free_composition_gives_the_commanded_tip_pose():
    m = _model(noise_mm=0.0, rate_hz=100.0)
    f = m.sample(42)
    T_tool_tip = m.config.tool.T_tool_tooltip
    got = invert(f.poses["ReferenceToTracker"]) @ f.poses["StylusToTracker"] @ T_tool_tip
    np.testing.assert_allclose(got, T_REF_TIP, atol=1e-9)
    assert f.timestamp_s == pytest.approx(0.42)


def test_breathing_amplitude_frequency_and_direction():
    m = _model(noise_mm=0.0, rate_hz=100.0, breathing_amplitude_mm=2.0, breathing_hz=0.25)
    p = np.array([m.sample(k).poses["ReferenceToTracker"][:3, 3] for k in range(0, 800)])  # 8 s = 2 cycles
    d = p - m.config.T_tracker_reference[:3, 3]
    amp = np.linalg.norm(d, axis=1).max()
    assert amp == pytest.approx(2.0, abs=0.01)
    in_ref = d @ m.config.T_tracker_reference[:3, :3]  # displacement in Reference axes
    main_axis = np.abs(in_ref).max(axis=0)
    assert main_axis[1] > 3 * max(main_axis[0], main_axis[2])  # mostly anterior-posterior (Reference y)
    np.testing.assert_allclose(d[0], 0, atol=1e-9)
    np.testing.assert_allclose(d[400], 0, atol=1e-6)  # period 4 s


def test_marker_noise_level():
    m = _model(noise_mm=0.2, rate_hz=100.0, breathing_amplitude_mm=0.0)
    truth = m.sample(0).truth["ReferenceToTracker"]
    errs = [np.linalg.norm(m.sample(k).poses["ReferenceToTracker"][:3, 3] - truth[:3, 3]) for k in range(400)]
    rms = float(np.sqrt(np.mean(np.square(errs))))
    assert 0.03 < rms < 0.25  # origin error from 4 noisy markers (0.2 mm RMS each), Kabsch fit


def test_occlusion_windows_and_no_tool():
    m = _model(rate_hz=100.0, occlusions=parse_occlusions("StylusToTracker:1:1.5"))
    assert m.sample(99).poses["StylusToTracker"] is not None
    assert m.sample(100).poses["StylusToTracker"] is None and m.sample(149).poses["StylusToTracker"] is None
    assert m.sample(150).poses["StylusToTracker"] is not None
    m.set_tool_pose_mm(None)
    assert m.sample(10).poses["StylusToTracker"] is None
    with pytest.raises(ValueError, match="Device:start_s:end_s"):
        parse_occlusions("StylusToTracker:1")
    with pytest.raises(ValueError, match="rate_hz"):
        TrackerModelConfig(rate_hz=0.0)


def test_server_tdata_after_stt_and_status_for_occluded_tool():
    # model time runs from the server's start and frames go only to connected clients: the occlusion must
    # outlast the client's connection (0.5 s could pass before a loaded machine connected: no STATUS seen)
    m = _model(rate_hz=200.0, noise_mm=0.0, occlusions=(("StylusToTracker", 0.0, 5.0),))
    sim = SimTrackerServer(m, port=0).start()
    got, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        with lock:
            got.append(msg)

    client = IgtlClient("127.0.0.1", sim.port, on_msg, on_connect=lambda c: c.send(codec.encode_stt_tdata(5))).start()
    try:
        assert wait_until(lambda: any(g.type == "TDATA" and len(g.poses) == 2 for g in list(got)), timeout_s=30)
    finally:
        client.close()
        sim.close()
    with lock:
        types = {g.type for g in got}
        status = [g for g in got if g.type == "STATUS"]
    assert "TDATA" in types  # (a TRANSFORM or two may precede STT_TDATA)
    assert status and status[0].device == "StylusToTracker" and status[0].status_code == codec.STATUS_NOT_PRESENT


def test_server_stamp_at_send_is_the_transmission_time_and_lateness_is_recorded():
    import time

    m = _model(rate_hz=200.0, noise_mm=0.0)
    sim = SimTrackerServer(m, port=0, stamp_at_send=True).start()
    got, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        with lock:
            got.append((msg, time.time()))

    client = IgtlClient("127.0.0.1", sim.port, on_msg).start()
    try:
        assert wait_until(lambda: len(got) >= 100, timeout_s=10)
    finally:
        client.close()
        sim.close()
    with lock:
        pairs = list(got)
    frames = {}
    for msg, received in pairs:
        frames.setdefault(msg.timestamp_s, []).append((msg.device, received))
    stamps = sorted(frames)
    assert np.all(np.diff(stamps) > 0)  # one stamp per frame, increasing
    for t in stamps:  # every message of a frame carries its transmission time, received just after it
        assert {d for d, _ in frames[t]} == {"ReferenceToTracker", "StylusToTracker"}
        # (the upper bound only says "this transmission, not some later one": a loaded machine can stall the
        # client's receive thread for 0.5-1 s, which is timing, not the stamp's correctness)
        assert all(0.0 <= r - t < 5.0 for _, r in frames[t])
    assert len(sim.send_delay_s) >= len(stamps) - 1 and min(sim.send_delay_s) >= 0.0
