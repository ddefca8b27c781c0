"""Issue 17: every latency benchmark measures its floor in the same run. Structure and keys only; the
numbers are the benchmarks' (no timing is asserted here)."""
from __future__ import annotations

import argparse
import json
import os
import time

import pytest

from spine_nav.bench import floor


def test_interleave_runs_floor_then_stack_each_round():
    order = []
    pairs = floor.interleave(3, lambda i: order.append(("floor", i)) or {"p99": 1.0 + i},
                             lambda i: order.append(("stack", i)) or {"p99": 2.0 * (1.0 + i)})
    assert order == [("floor", 0), ("stack", 0), ("floor", 1), ("stack", 1), ("floor", 2), ("stack", 2)]
    r = floor.ratio_rounds(pairs, "p99")
    assert r["rounds"] == 3 and r["ratios"] == [2.0, 2.0, 2.0] and r["median_ratio"] == 2.0
    assert r["spread"] == {"min": 2.0, "max": 2.0} and r["floor"] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="--rounds"):
        floor.interleave(0, dict, dict)


def test_ratio_rounds_skips_rounds_without_values_and_median_of():
    pairs = [({"p": 1.0}, {"p": 3.0}), ({"p": None}, {"p": 2.0}), ({"p": 2.0}, {})]
    r = floor.ratio_rounds(pairs, "p")
    assert r["ratios"] == [3.0] and r["median_ratio"] == 3.0
    assert floor.ratio_rounds([({}, {})], "p")["median_ratio"] is None
    assert floor.median_of([{"a": 1.0}, {"a": 3.0}, {"a": None}, {}], ["a", "b"]) == {"a": 2.0, "b": None}


def test_floor_arguments_and_load_env():
    p = argparse.ArgumentParser()
    floor.add_floor_arguments(p)
    args = p.parse_args(["--rounds", "2", "--busy-core"])
    env = floor.load_env(args, os.getloadavg())
    assert env["rounds"] == 2 and env["busy_core"] is True
    assert {"load_average_before", "load_average_after", "cpu_count", "time_utc"} <= set(env)


def test_busy_core_spawns_a_child_and_ends_it():
    with floor.busy_core(False) as pid:
        assert pid is None
    with floor.busy_core(True) as pid:
        assert pid is not None and os.path.exists(f"/proc/{pid}")
    deadline = time.monotonic() + 5.0  # reaped by the context manager
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")


def test_demo_floor_figures(tmp_path):
    """The demo's floor keys (spine_nav.demo.report.floor_figures: the demo's report, issue 17)."""
    from spine_nav.arm.safety import StopCause
    from spine_nav.demo.report import floor_figures

    log = tmp_path / "arm_guide.log"
    log.write_text(f"arm HOLD at t=1.0 s: {StopCause.CYCLE_WATCHDOG.value} (72 ms)\n"
                   f"arm HOLD at t=2.0 s: {StopCause.GUARD_VIOLATION.value}\n")
    out = floor_figures([0.001] * 10, {"status": 2.0, "command": None}, log)
    assert out["servo_overrun_stops"] == 1 and out["floor_relay_count"] == 10
    assert out["floor_relay_p99_ms"] == 1.0 and out["sample_to_status_p99_vs_floor"] == 2.0
    assert out["sample_to_command_p99_vs_floor"] is None
    empty = floor_figures([], {"status": 1.0}, tmp_path / "missing.log")
    assert empty["servo_overrun_stops"] == 0 and empty["sample_to_status_p99_vs_floor"] is None


def test_pre_packed_status_carries_the_sample_stamp():
    from rclpy.serialization import deserialize_message
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.cdr import PoseStampedPacker, PrePackedStamped, stamp_of_pose_stamped

    packed = PrePackedStamped(GuardStatus(state_name="ALIGNED", active_screw_id="floor"), "tool_sample_stamp")
    msg = deserialize_message(packed.with_stamp(12, 345), GuardStatus)
    assert (msg.tool_sample_stamp.sec, msg.tool_sample_stamp.nanosec) == (12, 345)
    assert msg.state_name == "ALIGNED" and msg.active_screw_id == "floor"
    pose = PoseStampedPacker("Reference").pack(7.25, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    assert stamp_of_pose_stamped(pose) == (7, 250_000_000)


def test_bench_arm_quick_reports_floor_keys(capsys):
    from spine_nav.cli.main import main

    assert main(["bench", "arm", "--json", "--quick", "--rounds", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "servo_jitter_p99_vs_floor" in out["metrics"]
    assert {"rate_hz", "jitter_p99_ms", "overruns", "scheduling"} <= set(out["baselines"]["floor"])
    assert out["details"]["rounds"]["servo_jitter_p99_ms"]["rounds"] == 1
    assert out["env"]["rounds"] == 1 and out["env"]["busy_core"] is False


def test_console_floor_page_measures_like_the_console():
    """The bare page exposes the hook the benchmark reads; the bare server serves it."""
    from spine_nav.bench.console_floor import PAGE

    assert b"window.floorMetrics" in PAGE and b"requestAnimationFrame" in PAGE and b"/ws" in PAGE
