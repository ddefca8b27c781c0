"""`spine-nav bench bridge` runs end to end (short streams) and reports exactly the issue's keys.

Correctness only: no sample may be lost (TCP + a bridge that never drops); timing targets are the
benchmark's job, not asserted here.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_bridge_keys_and_no_loss():
    out = subprocess.run([str(Path(sys.executable).parent / "spine-nav"), "bench", "bridge", "--json",
                          "--duration-s", "1", "--rounds", "1"], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["bench"] == "bridge"
    assert set(res["metrics"]) == {"transform_1khz_lost", "tdata_400hz_lost", "latency_p50_ms", "latency_p99_ms",
                                   "latency_p99_vs_floor"}
    assert set(res["baselines"]["pyigtl"]) == {"delivered_rate_hz", "latency_p99_ms"}
    assert res["baselines"]["floor"]["lost"] == 0 and res["details"]["rounds"]["latency_p99_ms"]["rounds"] == 1
    assert res["metrics"]["transform_1khz_lost"] == 0 and res["metrics"]["tdata_400hz_lost"] == 0
    assert res["details"]["transform_1khz"]["sent"] == 1000 and res["details"]["tdata_400hz"]["sent"] == 400
    assert res["metrics"]["latency_p50_ms"] > 0 and res["baselines"]["pyigtl"]["delivered_rate_hz"] > 0
