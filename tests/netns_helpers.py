"""Talker/listener processes in network namespaces, for tests/test_dds_profiles.py and tests/test_netns.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spine_nav.sim.netns import NetnsNotPermitted, VirtualLan, check_permitted

REPO = Path(__file__).resolve().parents[1]

TALKER = """
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init(); n = rclpy.create_node('talker_' + sys.argv[1]); p = n.create_publisher(String, 'netcheck', 10)
t0 = time.monotonic()
while time.monotonic() - t0 < float(sys.argv[2]):
    p.publish(String(data=sys.argv[1])); rclpy.spin_once(n, timeout_sec=0.05)
"""

LISTENER = """
import collections, json, sys, time, rclpy
from std_msgs.msg import String
rclpy.init(); n = rclpy.create_node('listener'); got = collections.Counter()
n.create_subscription(String, 'netcheck', lambda m: got.update([m.data]), 10)
min_s, max_s, need = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
expect = [e for e in sys.argv[4].split(',') if e]
t0 = time.monotonic()
while time.monotonic() - t0 < max_s:
    rclpy.spin_once(n, timeout_sec=0.05)
    if time.monotonic() - t0 >= min_s and all(got[e] >= need for e in expect):
        break
print(json.dumps(dict(got)))
"""


def require_netns() -> None:
    try:
        check_permitted()
    except NetnsNotPermitted as exc:
        pytest.skip(f"network namespaces not permitted here: {exc}")


def domain_id() -> int:
    return int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)


def lan_for_test(hosts, suffix: str) -> VirtualLan:
    d = domain_id()
    return VirtualLan(hosts, tag=f"t{d}{suffix}", subnet=(201, d % 256))


def dds_env(domain: int, profile: str | None = None, discovery_range: str = "SUBNET",
            static_peers: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "FASTRTPS_DEFAULT_PROFILES_FILE",
                        "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_LOCALHOST_ONLY")}
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE=discovery_range,
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    if profile:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = profile
    if static_peers:
        env["ROS_STATIC_PEERS"] = static_peers
    return env


def start_talker(lan: VirtualLan, host: str, name: str, env: dict, duration_s: float = 600.0) -> subprocess.Popen:
    """A talker publishing its ``name`` on ``netcheck`` in ``host`` every 50 ms, until :func:`stop_all` (or
    ``duration_s``, a bound: a listener may take minutes to start on a loaded machine)."""
    return subprocess.Popen(lan.exec_prefix(host) + [sys.executable, "-c", TALKER, name, str(duration_s)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def listen(lan: VirtualLan, host: str, env: dict, duration_s: float = 10.0, expect=(), need: int = 30,
           max_s: float = 180.0) -> dict[str, int]:
    """Messages heard on ``netcheck`` in ``host``, per talker name: for ``duration_s`` (counted from its
    node's creation) and then until every name in ``expect`` has been heard ``need`` times (bound
    ``max_s``). So a 0 for an outsider is counted over a window in which the expected talkers were
    demonstrably delivering, however slowly a loaded machine discovers and publishes. Start-up on a
    loaded 2-core machine took > 60 s (load 32): the process is bounded at ``max_s`` + 5 minutes."""
    args = [str(duration_s), str(max(max_s, duration_s)), str(need), ",".join(expect)]
    res = subprocess.run(lan.exec_prefix(host) + [sys.executable, "-c", LISTENER, *args], env=env,
                         capture_output=True, text=True, timeout=max(max_s, duration_s) + 300.0)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def stop_all(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5.0)
