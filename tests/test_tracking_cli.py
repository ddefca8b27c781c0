"""record -> replay -> record round trip over real TCP (every message type), and pivot calibration from the sim tracker."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from spine_nav.cli.main import main as cli
from spine_nav.cli.sim_tracker import pivot_motion
from spine_nav.geometry import random_transform, transform_to_quat
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig
from spine_nav.sim.tracker_server import SimTrackerServer
from spine_nav.tracking import codec
from spine_nav.tracking.codec import TDataElement
from spine_nav.tracking.record import read_case
from spine_nav.tracking.transport import IgtlServer
from tests.helpers import free_tcp_port, wait_until


def _stream() -> list[bytes]:
    rng = np.random.default_rng(4)
    out = []
    for k in range(40):
        t = 1000.0 + k * 0.01
        T = random_transform(rng, max_translation_mm=500)
        q, p = transform_to_quat(T, order="xyzw")
        out += [codec.encode_transform("StylusToTracker", T, t),
                codec.encode_position("ReferenceToTracker", p, q, t),
                codec.encode_tdata("Tracker", [TDataElement(f"Tool{i}ToTracker", random_transform(rng))
                                               for i in range(4)], t, header_version=2)]
        if k % 10 == 0:
            out += [codec.encode_status("StylusToTracker", 16, t, "not visible"), codec.encode_string("Msg", f"s{k}", t)]
    return out


def _record_in_thread(argv, result):
    result["rc"] = cli(argv)


def _strip(records):
    return [{k: v for k, v in r.items() if k != "received_s"} for r in records]


#: Recording windows below: `record --duration` counts from the recorder's start, before it has connected, and
#: every message must arrive within it; on a loaded 2-core machine connecting alone can take seconds (3 s / 4 s
#: windows could close before the stream ended). `calibrate pivot` likewise needs its >= 100 poses in its window.
def test_record_replay_round_trip(tmp_path):
    port = free_tcp_port()
    src = IgtlServer(port, host="127.0.0.1").start()
    case1, case2 = tmp_path / "case1.jsonl", tmp_path / "case2.jsonl"
    res: dict = {}
    th = threading.Thread(target=_record_in_thread, args=(["record", "--connect", f"127.0.0.1:{port}", "--out",
                                                           str(case1), "--duration", "8"], res))
    th.start()
    try:
        assert wait_until(lambda: src.client_count == 1, timeout_s=10)
        for data in _stream():
            src.broadcast(data)
        th.join(60)
    finally:
        src.close()
    assert not th.is_alive() and res["rc"] == 0
    rec1 = read_case(case1)
    assert len(rec1) == 40 * (1 + 1 + 4) + 4 * 2  # TDATA: one line per tool entry
    assert {r["type"] for r in rec1} == {"TRANSFORM", "POSITION", "TDATA", "STATUS", "STRING"}
    first = rec1[0]
    assert set(first) == {"type", "device", "timestamp_s", "received_s", "matrix"}
    assert np.asarray(first["matrix"]).shape == (4, 4)
    # the file is refused as an output again (recorded data never overwritten silently)
    assert cli(["record", "--listen", "0", "--out", str(case1), "--duration", "0.1"]) == 2

    port2 = free_tcp_port()
    res2: dict = {}
    rep = threading.Thread(target=_record_in_thread,
                           args=(["replay", str(case1), "--serve", str(port2), "--speed", "4", "--host", "127.0.0.1"],
                                 res2))
    rep.start()
    res3: dict = {}
    rec = threading.Thread(target=_record_in_thread, args=(["record", "--connect", f"127.0.0.1:{port2}", "--out",
                                                            str(case2), "--duration", "10"], res3))
    rec.start()
    rep.join(60)
    rec.join(60)
    assert not rep.is_alive() and not rec.is_alive() and res2["rc"] == 0 and res3["rc"] == 0
    rec2 = read_case(case2)
    s1, s2 = _strip(rec1), _strip(rec2)
    assert len(s2) == len(s1)
    for a, b in zip(s1, s2):
        assert a["type"] == b["type"] and a["device"] == b["device"]
        assert a["timestamp_s"] == pytest.approx(b["timestamp_s"], abs=1e-9)
        if "matrix" in a:
            np.testing.assert_allclose(a["matrix"], b["matrix"], atol=1e-5)  # float32 wire, POSITION via quaternion
        assert a.get("text") == b.get("text") and a.get("code") == b.get("code")


def test_replay_rejects_bad_case_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "TRANSFORM", "device": "X", "timestamp_s": 1, "received_s": 1, "matrix": [[1]]}\n')
    assert cli(["replay", str(bad), "--serve", "0"]) == 2


def test_calibrate_pivot_live_from_sim_tracker(tmp_path, capsys):
    tip = (2.0, -1.0, 160.0)
    from spine_nav.tracking.tools import ToolDefinition

    cfg = TrackerModelConfig(rate_hz=100.0, noise_mm=0.05, tremor_mm=0.0, seed=9,
                             tool=ToolDefinition(tip_offset_mm=tip, shaft_direction=(0.0, 0.0, 1.0)))
    sim = SimTrackerServer(TrackerModel(cfg, tool_pose_provider=pivot_motion((10.0, 20.0, 30.0))), port=0).start()
    out = tmp_path / "pivot.json"
    try:
        rc = cli(["calibrate", "pivot", "--connect", f"127.0.0.1:{sim.port}", "--duration", "6", "--out", str(out)])
    finally:
        sim.close()
    assert rc == 0
    res = json.loads(out.read_text())
    assert np.linalg.norm(np.subtract(res["tip_offset_mm"], tip)) < 0.1
    assert np.linalg.norm(np.subtract(res["pivot_point_mm"], (10.0, 20.0, 30.0))) < 0.1  # Reference frame
    assert res["rms_residual_mm"] < 0.3 and res["n_poses"] >= 100


def test_calibrate_pivot_rejects_static_tool(tmp_path):
    sim = SimTrackerServer(TrackerModel(TrackerModelConfig(rate_hz=100.0, seed=1)), port=0)
    sim.model.set_tool_pose_mm(np.eye(4))
    sim.start()
    try:
        rc = cli(["calibrate", "pivot", "--connect", f"127.0.0.1:{sim.port}", "--duration", "1"])
    finally:
        sim.close()
    assert rc == 1
