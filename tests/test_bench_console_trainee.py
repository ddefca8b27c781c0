"""`spine-nav bench console --trainee --json` (issue #21): the console in trainee mode in a real headless
Chromium, input -> tool drawn and sample -> frame, each against its floor measured in the same run.
Checks the JSON's shape and that every measured number is a real measurement (no timing assertion:
timing targets belong to the benchmark on a quiet machine, docs/training.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and v > 0


def test_bench_console_trainee_json_shape(tmp_path):
    res = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "bench", "console", "--trainee", "--quick",
                          "--rounds", "1", "--json"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert set(out) >= {"bench", "metrics", "baselines", "env"} and out["bench"] == "console"
    m = out["metrics"]
    assert set(m) == {"input_to_tool_drawn_p95_ms", "input_to_tool_drawn_p50_ms", "sample_to_frame_p95_ms", "fps",
                      "server_cpu_cores", "input_to_tool_drawn_p95_vs_floor", "sample_to_frame_p95_vs_floor"}
    for k in ("input_to_tool_drawn_p95_ms", "input_to_tool_drawn_p50_ms", "sample_to_frame_p95_ms", "fps",
              "server_cpu_cores", "input_to_tool_drawn_p95_vs_floor", "sample_to_frame_p95_vs_floor"):
        assert _positive(m[k]), (k, m)
    assert m["input_to_tool_drawn_p50_ms"] <= m["input_to_tool_drawn_p95_ms"]
    f = out["baselines"]["floor"]
    for k in ("input_to_drawn_p50_ms", "input_to_drawn_p95_ms", "sample_to_frame_p50_ms", "sample_to_frame_p95_ms",
              "fps"):
        assert _positive(f[k]), (k, f)
    assert out["env"]["mode"] == "trainee" and out["env"]["rounds"] == 1 and "load_average_before" in out["env"]
    d = out["details"]
    assert d["target_input_to_tool_drawn_p95_ms"] == 50.0 and d["tracker_rate_hz"] == 100.0
    [t] = d["rounds"]["trainee"]
    [fl] = d["rounds"]["floor"]
    assert t["inputs_drawn"] >= t["inputs"] // 2 and fl["inputs_drawn"] >= 1 and t["samples_drawn"] > 0, (t, fl)
    # the headline ratio is the round's trainee p95 over its floor p95
    r = d["rounds"]["input_to_tool_drawn_p95_ms"]
    assert r["median_ratio"] == m["input_to_tool_drawn_p95_vs_floor"]
    assert abs(r["median_ratio"] - t["input_to_tool_drawn_p95_ms"] / fl["input_to_drawn_p95_ms"]) < 0.01
