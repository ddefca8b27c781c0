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


def test_profile_breakdown_has_every_stage_and_the_floor():
    """`bench bridge --profile` (details.profile): every stage of the hot path and the floor's work, as
    numbers, with their ratio; structure only, nothing about how fast."""
    from spine_nav.bench.bridge_profile import profile_bridge

    prof = profile_bridge(50)
    assert prof["frames"] == 50
    assert set(prof["stages"]) == {"decode", "core_reference", "core_tool", "to_cdr", "publish", "tool_tip_total",
                                   "reference_after", "floor_total"}
    for stats in prof["stages"].values():
        assert set(stats) == {"p50_us", "p90_us"} and all(isinstance(v, float) and v >= 0 for v in stats.values())
    assert prof["tool_tip_total_vs_floor_p50"] is None or prof["tool_tip_total_vs_floor_p50"] > 0
    assert "paced" not in prof  # only when asked (it sleeps ~2 ms per frame)
    from spine_nav.nodes import direct_publish

    assert prof["node_publishes_through"] == ("rcl from C" if direct_publish._native is not None
                                              else f"rclpy ({direct_publish.WHY_RCLPY})")


def test_profile_paced_times_every_steady_frame_cold_next_to_the_floor():
    """``paced``: the node's steady path and the floor's work, one frame per ~1 ms; every frame after the warm-up
    tenth is timed (its tool tip was published), with p50/p90/p99 and their ratios; structure only."""
    from spine_nav.bench.bridge_profile import profile_bridge

    paced = profile_bridge(50, paced=60)["paced"]
    assert paced["frames"] == 54  # 60 minus the first tenth
    for key in ("tool_tip_total", "floor_total", "floor_total_direct"):  # the floor also with the node's publish
        assert set(paced[key]) == {"p50_us", "p90_us", "p99_us"} and all(v > 0 for v in paced[key].values())
    assert all(paced[f"tool_tip_total_vs_floor{d}_p{q}"] > 0 for q in (50, 90, 99) for d in ("", "_direct"))
