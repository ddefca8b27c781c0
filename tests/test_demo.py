"""End-to-end: a 2-screw version of `spine-nav demo` through the real stack (OpenIGTLink over TCP,
ROS 2 nodes in separate processes over DDS, MuJoCo arm), plus each fault-injection option.

Accuracy targets (issue #8) are asserted on a both-sides level (test_two_screws_meet_the_accuracy_targets):
Gertzbein-Robbins grade A, mean entry error <= 0.5 mm, mean angular error <= 0.5 deg, max tip error
<= 1.0 mm. Latency is reported by the demo, not asserted here (benchmarks report numbers; tests assert
correctness).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_nav.demo.run import DemoConfig, run_demo

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def _run(tmp_path: Path, name: str, **kw):
    lines: list[str] = []
    cfg = DemoConfig(out_dir=tmp_path / name, seed=11, voxel_mm=1.0, cbct_voxel_mm=1.0, handeye_poses=12, **kw)
    report = run_demo(cfg, lines.append)
    data = json.loads((tmp_path / name / "report.json").read_text())
    return report, data, "\n".join(lines)


def test_two_screws_and_bad_level_skipped(tmp_path):
    """L4 registers and its screws are attempted through the whole stack; L5 is cut out of the CBCT's
    view, fails the gate, and its screws are skipped with the reason; the case ends with the arm held.

    The accuracy targets are asserted by test_two_screws_meet_the_accuracy_targets; here the report's
    numbers are checked for sanity."""
    report, data, log = _run(tmp_path, "bad_reg", levels=("L4", "L5"), bad_registration=True)
    by_id = {s["id"]: s for s in data["screws"]}
    placed = [s for s in data["screws"] if s["status"] == "placed"]
    assert placed, log
    for s in placed:
        assert s["gr_grade"] in "ABCDE" and s["entry_error_mm"] >= 0 and s["tip_error_mm"] >= 0, s
        assert 0 <= s["angular_error_deg"] < 90 and s["time_to_align_s"] > 0, s
    first = by_id["L4_left"]
    assert first["status"] == "placed" and first["guide_error_at_drill_mm"] < 1.0, first
    for sid in ("L5_left", "L5_right"):
        assert by_id[sid]["status"] == "skipped" and by_id[sid]["reason"], by_id[sid]
    assert data["registration"]["L5"]["status"] == "failed" and data["registration"]["L4"]["status"] == "accepted"
    (fault,) = data["faults"]
    assert fault["name"] == "bad-registration" and fault["detected"] and fault["arm_held"] and "L5" in fault["cause"]
    assert data["latency"]["sample_to_status_count"] > 100 and data["latency"]["sample_to_command_count"] > 100
    for png in ("deviation.png", "guard_states.png", "latency.png", "screws.png"):
        assert (tmp_path / "bad_reg" / png).stat().st_size > 5000, png
    assert "L4_left" in (tmp_path / "bad_reg" / "report.md").read_text()
    assert data["screws"][0]["stops"] is not None and report.summary()["screws_planned"] == 4


def test_two_screws_meet_the_accuracy_targets(tmp_path):
    """Both L4 screws through the whole stack, graded against the phantom's cortex (issue #8 targets)."""
    report, data, log = _run(tmp_path, "accuracy", levels=("L4",))
    screws = data["screws"]
    assert [s["status"] for s in screws] == ["placed", "placed"], log
    assert all(s["gr_grade"] == "A" for s in screws), screws
    assert sum(s["entry_error_mm"] for s in screws) / 2 <= 0.5, screws
    assert sum(s["angular_error_deg"] for s in screws) / 2 <= 0.5, screws
    assert max(s["tip_error_mm"] for s in screws) <= 1.0, screws


@pytest.mark.parametrize("fault, expected_cause", [("occlude", "TRACKING_LOST"), ("bump", "bump")])
def test_fault_ends_with_arm_held_and_cause(tmp_path, fault, expected_cause):
    report, data, log = _run(tmp_path, fault, levels=("L4",), max_screws=1, **{fault: True})
    (f,) = data["faults"]
    assert f["name"] == fault and f["detected"] and f["arm_held"], (f, log)
    assert expected_cause.lower() in (f["cause"] + " " + f["detail"]).lower(), f
    assert data["screws"][0]["status"] == "stopped"
