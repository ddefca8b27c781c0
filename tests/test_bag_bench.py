"""`spine-nav bench recording --json`: the JSON shape on a tiny run (one round, 1 s per run; no timing asserted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_bench_recording_json_shape(tmp_path):
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "bench", "recording", "--json", "--rounds", "1",
                          "--duration-s", "1", "--rt-priority", "0", "--work-dir", str(work)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert set(data) >= {"bench", "metrics", "baselines", "env"} and data["bench"] == "recording"
    m = data["metrics"]
    assert set(m) >= {"sample_to_status_p99_overhead_ratio", "dropped_messages", "sample_to_status_p99_ms"}
    runs = data["details"]["rounds"]["bag"] + data["details"]["rounds"]["no_bag"]
    assert m["failed_runs"] == 0, [r.get("error") for r in runs]
    rounds = data["details"]["rounds"]["sample_to_status_p99_ms"]
    assert rounds["rounds"] == 1 and len(rounds["bag"]) == len(rounds["no_bag"]) == 1
    # the headline is the per-round ratio's median: with one round, that round's bag / no_bag
    assert m["sample_to_status_p99_overhead_ratio"] == rounds["median_ratio"] == rounds["ratios"][0]
    assert rounds["ratios"][0] == pytest.approx(rounds["bag"][0] / rounds["no_bag"][0], abs=2e-3)
    assert rounds["spread"] == {"min": rounds["ratios"][0], "max": rounds["ratios"][0]}
    assert data["baselines"]["no_bag"]["sample_to_status_p99_ms"] == rounds["no_bag"][0]
    bag_run, no_bag_run = data["details"]["rounds"]["bag"][0], data["details"]["rounds"]["no_bag"][0]
    # both configurations measured the guard on samples; only the bag run had a recorder, which wrote a bag
    assert bag_run["samples"] > 0 and no_bag_run["samples"] > 0
    assert "recorder" in bag_run and "recorder" not in no_bag_run
    assert m["dropped_messages"] == bag_run["recorder"]["dropped"]
    assert bag_run["recorder"]["messages"] > 0
    assert (work / "round1_bag" / "case.mcap").is_file() and not (work / "round1_no_bag" / "case.mcap").exists()
    assert data["env"]["rounds"] == 1 and data["env"]["interleaved"].startswith("bag, no_bag")
