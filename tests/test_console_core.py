"""Console server core (no browser): slices, file refusal, training grades, HTTP and WebSocket
robustness over real TCP, and the ROS bridge over real DDS."""
from __future__ import annotations

import json
import struct
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from spine_nav.console import CaseData, CaseError, ConsoleServer, ConsoleState, gertzbein_robbins_grade
from spine_nav.console.state import TrainingTracker
from spine_nav.console.server import LIVE_KINDS
from spine_nav.imaging.volume import Volume
from spine_nav.imaging.volume_io import save_volume
from tests.helpers import wait_until

SHAPE = (8, 6, 5)
#: socket/WebSocket waits on the in-process console server: each returns as soon as its data is there;
#: 20 s because the server's thread shares 2 loaded cores with the suite (5 s was a guess a stall can beat)
IO_S = 20.0


@pytest.fixture
def case_dir(tmp_path):
    """A tiny case: cbct.nii.gz whose voxel value encodes its index (v = i + 10 j + 100 k),
    with a flipped x axis (affine column 0 negative) to exercise display orientation."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    data = (i + 10 * j + 100 * k).astype(np.int16)
    affine = np.array([[-2.0, 0, 0, 20.0], [0, 1.5, 0, -5.0], [0, 0, 3.0, 100.0], [0, 0, 0, 1]])
    d = tmp_path / "case"
    d.mkdir()
    save_volume(Volume(data, affine, frame="Reference"), d / "cbct.nii.gz")
    (d / "plan.json").write_text("{}")
    (tmp_path / "secret.nii.gz").write_bytes((d / "cbct.nii.gz").read_bytes())
    (d / "link.nii.gz").symlink_to(tmp_path / "secret.nii.gz")
    return d


def _value(i, j, k):
    return i + 10 * j + 100 * k


def test_slices_are_oriented_for_display_and_carry_exact_geometry(case_dir):
    case = CaseData(case_dir)
    assert case.info()["slice_volume"] == "cbct.nii.gz"
    vol = case.volume("cbct.nii.gz")
    p = vol.index_to_lps(np.array([[3, 2, 4]]))[0]
    ax = case.slice("cbct.nii.gz", "axial", p)
    assert ax.index == 4 and ax.pixels.shape == (SHAPE[1], SHAPE[0])
    # columns advance toward patient Left (+x), rows toward Posterior (+y)
    assert ax.col_mm[0] > 0 and ax.row_mm[1] > 0
    for r in range(ax.pixels.shape[0]):
        for c in range(ax.pixels.shape[1]):
            pt = ax.origin_mm + r * ax.row_mm + c * ax.col_mm
            ijk = np.rint(vol.lps_to_index(pt[None])[0]).astype(int)
            assert ax.pixels[r, c] == _value(*ijk)
    sag = case.slice("cbct.nii.gz", "sagittal", p)
    assert sag.index == 3 and sag.row_mm[2] < 0 and sag.col_mm[1] > 0  # inferior down, posterior right
    cor = case.slice("cbct.nii.gz", "coronal", p)
    assert cor.index == 2 and cor.row_mm[2] < 0 and cor.col_mm[0] > 0
    pt = cor.origin_mm + 1 * cor.row_mm + 2 * cor.col_mm
    assert cor.pixels[1, 2] == _value(*np.rint(vol.lps_to_index(pt[None])[0]).astype(int))
    # the distance to the next plane (the page asks for a new slice only past half of it)
    assert (ax.step_mm, sag.step_mm, cor.step_mm) == pytest.approx((3.0, 2.0, 1.5))
    # a point outside the volume clamps to the nearest slice
    assert case.slice("cbct.nii.gz", "axial", p + [0, 0, 1e4]).index == SHAPE[2] - 1
    blob = ax.to_bytes()
    n = struct.unpack("<I", blob[:4])[0]
    head = json.loads(blob[4:4 + n])
    assert (head["rows"], head["cols"]) == ax.pixels.shape and head["step_mm"] == pytest.approx(3.0)
    assert np.array_equal(np.frombuffer(blob[4 + n:], "<i2").reshape(ax.pixels.shape), ax.pixels)


@pytest.mark.parametrize("name,status", [
    ("../secret.nii.gz", 403), ("/etc/passwd", 403), ("link.nii.gz", 403), ("..", 403),
    ("plan.json", 404), ("missing.nii.gz", 404),
])
def test_files_outside_the_case_or_not_volumes_are_refused(case_dir, name, status):
    with pytest.raises(CaseError) as err:
        CaseData(case_dir).resolve(name)
    assert err.value.status == status


def test_bad_slice_requests_name_the_problem(case_dir):
    case = CaseData(case_dir)
    with pytest.raises(CaseError, match="axis 'oblique'"):
        case.slice("cbct.nii.gz", "oblique", [0, 0, 0])
    with pytest.raises(CaseError, match="finite"):
        case.slice("cbct.nii.gz", "axial", [0, float("nan"), 0])
    with pytest.raises(CaseError, match="case directory not found"):
        CaseData(case_dir / "nope")


def test_surface_mesh_is_in_the_volume_frame(case_dir):
    blob = CaseData(case_dir).surface("cbct.nii.gz", iso_hu=250.0, step=1)
    nv, nf = struct.unpack("<II", blob[:8])
    verts = np.frombuffer(blob[8:8 + nv * 12], "<f4").reshape(nv, 3)
    faces = np.frombuffer(blob[8 + nv * 12:], "<u4").reshape(nf, 3)
    assert nv > 0 and nf > 0 and faces.max() < nv
    # v = i + 10 j + 100 k crosses 250 between k=1 and k=3 (z = 100 + 3 k mm: 103-109 mm)
    assert np.all((verts[:, 2] > 102.9) & (verts[:, 2] < 109.1))
    assert verts[:, 0].min() >= 20.0 - 2.0 * (SHAPE[0] - 1) - 1e-3 and verts[:, 0].max() <= 20.0 + 1e-3


def test_gertzbein_robbins_grades_and_training_results():
    assert [gertzbein_robbins_grade(b) for b in (0.0, 1.9, 2.0, 3.9, 4.0, 5.9, 6.0, 9.0)] == \
        ["A", "B", "C", "C", "D", "D", "E", "E"]
    t = TrainingTracker()
    g = {"t": "guard", "active_screw_id": "L4_left", "state_name": "ALIGNED", "lateral_error_mm": 3.5,
         "angular_error_deg": 2.0, "entry_offset_mm": 1.0, "depth_mm": 30.0, "remaining_mm": 10.0}
    assert t.on_guard(g) is None  # not at depth yet
    res = t.on_guard({**g, "depth_mm": 39.8, "remaining_mm": 0.2})
    assert res["screw_id"] == "L4_left" and res["grade"] == "C" and res["breach_proxy_mm"] == pytest.approx(2.5)
    assert t.on_guard({**g, "remaining_mm": 0.0}) is None  # counted once
    assert t.on_guard({**g, "active_screw_id": "L5_left", "state_name": "TRACKING_LOST", "remaining_mm": 0}) is None


def test_state_snapshot_and_unknown_update():
    s = ConsoleState(case={"volumes": []})
    s.apply({"t": "plan", "screws": []})
    s.apply({"t": "health", "tool": "stylus", "state_name": "OK"})
    kinds = [u["t"] for u in s.snapshot()]
    assert kinds[0] == "case" and "plan" in kinds and "health" in kinds and kinds[-1] == "training"
    with pytest.raises(ValueError, match="unknown update kind"):
        s.apply({"t": "bogus"})


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=IO_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_server_http_and_websocket_survive_bad_input(case_dir):
    from websockets.sync.client import connect

    with ConsoleServer(CaseData(case_dir), port=0) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, body = _get(f"{base}/api/case")
        assert status == 200 and json.loads(body)["volumes"] == ["cbct.nii.gz", "link.nii.gz"]
        status, body = _get(f"{base}/api/status")  # no page yet, no stream heard
        assert status == 200 and json.loads(body) == {"pages": 0, "ages_s": dict.fromkeys(LIVE_KINDS)}
        status, body = _get(f"{base}/api/slice?vol=cbct.nii.gz&axis=axial&x=0&y=0&z=110")
        assert status == 200 and struct.unpack("<I", body[:4])[0] > 0
        for bad, code in [("vol=..%2Fsecret.nii.gz", 403), ("vol=%2Fetc%2Fpasswd", 403),
                          ("vol=link.nii.gz", 403), ("vol=plan.json", 404)]:
            assert _get(f"{base}/api/slice?{bad}&axis=axial&x=0&y=0&z=0")[0] == code, bad
        assert _get(f"{base}/api/slice?vol=cbct.nii.gz&axis=axial&x=nan&y=0&z=0")[0] == 400
        assert _get(f"{base}/api/slice?vol=cbct.nii.gz&axis=axial")[0] == 400
        assert _get(f"{base}/../../etc/passwd")[0] == 404
        assert _get(f"{base}/no/such/page")[0] == 404
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=IO_S) as ws:
            first = json.loads(ws.recv(timeout=IO_S))
            assert first[0]["t"] == "case"
            replies = []
            for raw in ("not json {", json.dumps([1, 2]), json.dumps({"req": "format_disk"}),
                        b"\xff\xfe binary", json.dumps({"req": "select_screw"}), json.dumps({"req": "ping"})):
                ws.send(raw)
                deadline = time.monotonic() + IO_S
                while time.monotonic() < deadline:  # skip heartbeats (bounded: they keep coming)
                    msg = json.loads(ws.recv(timeout=IO_S))
                    if msg[0]["t"] != "beat":
                        replies.append(msg[0])
                        break
            assert [r["t"] for r in replies] == ["error"] * 5 + ["pong"]
            assert "unknown request 'format_disk'" in replies[2]["error"]
            # still serving: a published update reaches the page
            server.publish({"t": "tool", "stamp_s": 1.0, "frame": "Reference", "T_mm": list(np.eye(4).ravel())})
            got = []
            assert wait_until(lambda: got.extend(json.loads(ws.recv(timeout=IO_S))) or any(u["t"] == "tool" for u in got),
                              timeout_s=IO_S)
            tool = next(u for u in got if u["t"] == "tool")
            assert tool["sent_s"] >= tool["stamp_s"]
            st = json.loads(_get(f"{base}/api/status")[1])  # one page connected, the tool stream heard
            assert st["pages"] == 1 and st["ages_s"]["tool"] >= 0 and st["ages_s"]["guard"] is None, st
            # NaN (the guard's errors when tracking is lost) arrives as null, not as invalid JSON
            server.publish({"t": "guard", "state_name": "TRACKING_LOST", "lateral_error_mm": float("nan")})
            got.clear()
            assert wait_until(lambda: got.extend(json.loads(ws.recv(timeout=IO_S))) or any(u["t"] == "guard" for u in got),
                              timeout_s=IO_S)
            assert next(u for u in got if u["t"] == "guard")["lateral_error_mm"] is None
        assert server.stats["client_errors"] == 5
        assert _get(f"{base}/api/case")[0] == 200


def test_updates_are_coalesced_and_every_tool_sample_is_accounted_for(case_dir):
    """A burst becomes a few WebSocket frames holding the latest update per stream; the tool samples a
    newer one replaced travel in ``covers_s`` (the page's latency measurement counts each of them)."""
    from websockets.sync.client import connect

    with ConsoleServer(CaseData(case_dir), port=0, send_interval_s=0.05) as server:
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=IO_S) as ws:
            assert json.loads(ws.recv(timeout=IO_S))[0]["t"] == "case"
            T = list(np.eye(4).ravel())
            t0 = time.monotonic()
            for i in range(50):
                server.publish({"t": "tool", "stamp_s": 100.0 + i, "frame": "Reference", "T_mm": T})
                server.publish({"t": "guard", "state_name": "ALIGNED", "depth_mm": float(i)})
            publish_s = time.monotonic() - t0  # a few ms; a loaded machine can stretch it
            frames, stamps, depths = [], [], []
            deadline = time.monotonic() + IO_S
            while (149.0 not in stamps or 49.0 not in depths) and time.monotonic() < deadline:  # (beats keep coming)
                frame = [u for u in json.loads(ws.recv(timeout=IO_S)) if u["t"] != "beat"]
                if frame:
                    frames.append(frame)
                    stamps += [s for u in frame if u["t"] == "tool" for s in (u["stamp_s"], *u.get("covers_s", []))]
                    depths += [u["depth_mm"] for u in frame if u["t"] == "guard"]
    assert sorted(stamps) == [100.0 + i for i in range(50)]  # each sample exactly once
    # at most one frame per send interval (50 ms) while publishing, plus the first and the last (and one
    # spare): 3 when the 100 updates take a few ms, more only when the machine stretched the publishing itself
    assert len(frames) <= 3 + publish_s / 0.05, ([[u["t"] for u in f] for f in frames], publish_s)
    for frame in frames:  # at most one update per stream in a frame, the latest
        kinds = [u["t"] for u in frame]
        assert len(kinds) == len(set(kinds)), kinds
    assert depths == sorted(depths)  # in order, the latest last
    assert server.stats["published"] == 100 and server.stats["frames_sent"] == len(frames)


def test_stream_ages_grow_when_producers_stop(case_dir):
    with ConsoleServer(CaseData(case_dir), port=0) as server:
        assert server.stream_ages_s()["tool"] is None
        server.publish({"t": "tool", "stamp_s": 0.0, "frame": "Reference", "T_mm": list(np.eye(4).ravel())})
        assert wait_until(lambda: server.stream_ages_s()["tool"] is not None, timeout_s=IO_S)
        assert wait_until(lambda: server.stream_ages_s()["tool"] > 0.3, timeout_s=IO_S)


def test_bridge_forwards_stack_topics_over_dds(ros_context):
    """Real DDS: a feeder node publishes plan/tool/guard/arm/health/levels/diagnostics; the bridge
    turns them into the console's dicts (mm)."""
    from spine_nav.bench.console import make_feeder, tool_pose_on_screw
    from spine_nav.nodes.console_bridge import ConsoleBridgeNode
    from spine_nav.nodes.lifecycle import bring_up
    from spine_nav.nodes.runner import make_executor
    from spine_nav.plan import Plan, Screw

    got: list[dict] = []
    bridge = ConsoleBridgeNode(sink=got.append, context=ros_context)
    bring_up(bridge)  # a lifecycle node: configure -> activate
    feeder = make_feeder(ros_context)
    ex = make_executor("single", context=ros_context)
    ex.add_node(bridge)
    screw = Screw(id="L4_left", level="L4", side="left", entry_mm=np.array([20.0, 30.0, -150.0]),
                  target_mm=np.array([8.0, -10.0, -150.0]), diameter_mm=6.5, length_mm=45.0)
    plan = Plan(screws=(screw,), frame="Reference", case_id="t")
    try:
        feeder.plan(plan, {"L4_left": "level L4 registration failed"})
        T = tool_pose_on_screw(screw, 10.0, 0.5)

        def pump() -> bool:
            feeder.tool(T, 123.25)
            feeder.guard(123.25, "L4_left", "WARN", lateral_error_mm=0.5, depth_mm=10.0, remaining_mm=31.8,
                         reason="lateral_error_mm 0.5")
            feeder.arm("HOLD", "L4_left", stop_cause="guard VIOLATION", holding=True)
            feeder.health("stylus", False, 0.0, reason="tracker reports tool missing")
            feeder.level("L4", False, 0.2, 1.8, reason="fitness 0.20 < 0.6")
            feeder.diag("spine_nav/guard", False, "no plan")
            ex.spin_once(timeout_sec=0.05)
            return {"plan", "tool", "guard", "arm", "health", "levels", "diag"} <= {u["t"] for u in got}

        # (30 s: DDS discovery of the feeder is slower under load; returns as soon as every stream arrived)
        assert wait_until(pump, timeout_s=30, period_s=0.0), {u["t"] for u in got}
        by = {u["t"]: u for u in got}
        assert by["plan"]["screws"][0]["entry_mm"] == pytest.approx([20.0, 30.0, -150.0])
        assert by["plan"]["screws"][0]["navigable"] is False
        assert "registration failed" in by["plan"]["screws"][0]["status_reason"]
        assert np.allclose(np.array(by["tool"]["T_mm"]).reshape(4, 4), T, atol=1e-6)
        assert by["tool"]["stamp_s"] == pytest.approx(123.25)
        assert by["guard"]["state_name"] == "WARN" and by["guard"]["tool_sample_stamp_s"] == pytest.approx(123.25)
        assert by["arm"]["stop_cause"] == "guard VIOLATION" and by["arm"]["holding"] is True
        assert by["health"]["state_name"] == "TRACKING_LOST"
        assert by["levels"]["accepted"] is False and by["diag"]["level"] == 2
        # no guard service in this graph: the page's request gets a clear answer
        assert bridge.handle_request({"screw_id": "L4_left"})["ok"] is False
    finally:
        ex.shutdown()
        feeder.destroy_node()
        bridge.destroy_node()


def test_tool_pose_conversion_matches_the_checked_conversion():
    """The bridge's per-sample float conversion gives pose_to_matrix_mm's matrix and refuses what it refuses."""
    from geometry_msgs.msg import PoseStamped

    from spine_nav.nodes.console_bridge import tool_to_dict
    from spine_nav.nodes.conversions import pose_to_matrix_mm

    rng = np.random.default_rng(7)
    m = PoseStamped()
    for _ in range(50):
        q = rng.normal(size=4)
        q *= (1.0 + rng.uniform(-5e-4, 5e-4)) / np.linalg.norm(q)  # within the norm tolerance
        m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = map(float, q)
        m.pose.position.x, m.pose.position.y, m.pose.position.z = map(float, rng.uniform(-0.5, 0.5, 3))
        T = np.array(tool_to_dict(m)["T_mm"]).reshape(4, 4)
        assert np.allclose(T, pose_to_matrix_mm(m.pose), atol=1e-12, rtol=0)
    for bad in (float("nan"), float("inf"), 1.5):
        m.pose.orientation.w = bad
        with pytest.raises(ValueError):
            pose_to_matrix_mm(m.pose)
        with pytest.raises(ValueError):
            tool_to_dict(m)


def test_console_core_does_not_import_ros():
    """The server core stays ROS-free (the ROS side is spine_nav.nodes.console_bridge)."""
    import subprocess
    import sys

    code = ("import sys, spine_nav.console, spine_nav.console.browser; "
            "bad = [m for m in sys.modules if m.startswith(('rclpy', 'spine_nav_interfaces'))]; "
            "sys.exit(f'imports {bad}' if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
