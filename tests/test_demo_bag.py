"""The demo's case bag (case.mcap): it holds every guard status and tool sample the report counts, the
mcap library alone reads it (no spine_nav import), and `bag check` reproduces every guard decision."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from spine_nav.bag.check import check_bag
from spine_nav.demo.run import DemoConfig, run_demo
from tests.test_bag import read_with_library_only

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_bag_counts_library_read_and_check(tmp_path: Path):
    lines: list[str] = []
    out = tmp_path / "demo"
    cfg = DemoConfig(out_dir=out, seed=11, voxel_mm=1.0, cbct_voxel_mm=1.0, handeye_poses=12, levels=("L4",),
                     max_screws=1)
    run_demo(cfg, lines.append)
    data = json.loads((out / "report.json").read_text())
    rec = data["case"]["recording"]
    assert not (out / "recording.json").exists()
    assert rec["bag"] == "case.mcap" and rec["complete"] and rec["recorder_dropped"] == 0, rec
    assert rec["counts_equal"], rec
    assert rec["tool_samples"]["bag"] == data["latency"]["sample_to_status_count"] > 100, rec

    lib = read_with_library_only(out / "case.mcap")
    counts = {t.lstrip("/"): n for t, n in lib["counts"].items()}
    assert counts == rec["topics"] and lib["stats"] == lib["counts"]
    for topic in ("tracking/tool_tip", "tracking/reference", "guard/status", "arm/joint_command", "arm/state",
                  "joint_states", "plan/registered", "registration/levels", "diagnostics", "tracking/health"):
        assert counts.get(topic, 0) > 0, (topic, counts)
    assert "ALIGNED" in lib["states"]

    res = check_bag(out / "case.mcap")
    assert res.compared >= rec["tool_samples"]["bag"] - 1 and res.agreed == res.compared, res.first_disagreements
    assert res.max_metric_diff_mm <= 1e-6
