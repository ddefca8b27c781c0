"""The nodes' latency records survive a slow stop (issue 17): `spine-nav up` writes them as soon as it is
asked to stop, before the teardown; the demo names a missing record and says what its process did.
Bounded waits on conditions only; nothing here asserts a timing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]


def _stamp(ns: int):
    return types.SimpleNamespace(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def test_flush_writes_atomically_to_its_path_and_nothing_without_one(tmp_path):
    from spine_nav.nodes.latency_record import LatencyRecord, flush_latency_records, read_latency_record

    path = tmp_path / "logs" / "guard_latency.json"
    rec = LatencyRecord("trajectory_guard", "test", path=path)
    rec.add(_stamp(1_000_000_000))
    assert rec.flush() == path
    assert len(read_latency_record(path)) == 1
    rec.add(_stamp(2_000_000_000))
    nodes = [types.SimpleNamespace(latency=rec), types.SimpleNamespace(latency=LatencyRecord("x", "no path")),
             types.SimpleNamespace()]
    assert flush_latency_records(nodes) == [path]  # only the record with a path
    data = json.loads(path.read_text())
    assert data["node"] == "trajectory_guard" and data["sample_stamp_ns"] == [1_000_000_000, 2_000_000_000]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    assert LatencyRecord("x", "no path").flush() is None


def test_missing_record_is_named_with_what_its_process_did(tmp_path):
    from spine_nav.demo.processes import SupervisedProcess, read_node_latency_record

    # a process that ignores SIGINT (as a node process stuck in a slow teardown): the stop kills it
    stuck = SupervisedProcess("arm", [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                                      "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                              tmp_path / "arm.log", nodes=["arm_guide"])
    assert wait_until(lambda: "ready" in stuck.log_path.read_text(), 30.0)
    stuck.stop(timeout_s=0.5)
    missing = tmp_path / "arm_guide_latency.json"
    values, why = read_node_latency_record(missing, "arm_guide", [stuck])
    assert values == []
    assert "arm_guide" in why and str(missing) in why and "'arm'" in why and "killed (SIGKILL)" in why, why

    values, why = read_node_latency_record(missing, "floor_relay", [stuck])
    assert values == [] and "floor_relay" in why and "no process of this run hosts it" in why, why

    quick = SupervisedProcess("navigation", [sys.executable, "-c", "pass"], tmp_path / "nav.log",
                              nodes=["tracker_bridge", "trajectory_guard"])
    assert wait_until(lambda: quick.poll() is not None, 30.0)
    quick.stop()
    broken = tmp_path / "trajectory_guard_latency.json"
    broken.write_text("{not json")
    values, why = read_node_latency_record(broken, "trajectory_guard", [stuck, quick])
    assert values == [] and "unusable" in why and "'navigation' had already exited (code 0)" in why, why


def test_report_says_which_record_is_missing(tmp_path):
    from spine_nav.demo.report import CaseReport, write_report

    why = "no latency record from arm_guide (x.json): its process 'arm' still running 10 s after SIGINT: killed"
    json_path, md_path = write_report(CaseReport(screws=[], latency={"missing_records": {"arm_guide": why}},
                                                 duration_s=1.0), tmp_path)
    assert f"**No latency figures from arm_guide**: {why}." in md_path.read_text()
    assert json.loads(json_path.read_text())["latency"]["missing_records"] == {"arm_guide": why}


@pytest.mark.ros
def test_composed_stack_writes_records_before_its_teardown(tmp_path):
    from spine_nav.nodes.latency_record import read_latency_record
    from spine_nav.nodes.runner import ComposedStack

    path = tmp_path / "guard_latency.json"
    stack = ComposedStack(["trajectory_guard"], extra_ros_args=["-p", f"trajectory_guard:latency_record_path:={path}"])
    try:
        guard = stack.nodes["trajectory_guard"]
        guard.latency.add(_stamp(1_000_000_000))
        assert stack.flush_latency_records() == [path]
        assert len(read_latency_record(path)) == 1  # on disk while the stack still runs
        guard.latency.add(_stamp(2_000_000_000))
    finally:
        stack.close()
    assert len(read_latency_record(path)) == 2  # and again at destroy, with what came in meanwhile


@pytest.mark.ros
def test_up_writes_the_record_on_sigint_before_tearing_down(tmp_path):
    from spine_nav.nodes.latency_record import read_latency_record

    path = tmp_path / "guard_latency.json"
    log = tmp_path / "up.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as fh:
        up = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "up", "--nodes", "trajectory_guard",
                               "--duration", "300", "--ros-args", "-p",
                               f"trajectory_guard:latency_record_path:={path}"],
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        assert wait_until(lambda: "trajectory_guard active" in log.read_text(), 120.0), log.read_text()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60.0)
        text = log.read_text()
        assert up.returncode == 0, text
        assert read_latency_record(path) == []  # a valid record (no tool sample came in)
        written, stopping = text.find(f"latency record written: {path}"), text.find("spine-nav up: stopping")
        assert 0 <= written < stopping, text  # written first, then the teardown
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=10.0)
