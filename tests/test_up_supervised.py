"""`spine-nav up --respawn` (issue #14): the stack's processes are supervised like the demo's: a killed
child is reported and respawned, Ctrl-C stops every child; launch/spine_nav.launch.py respawns its nodes.
Bounded waits on conditions only."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.ros
def test_up_respawn_restarts_a_killed_node_and_stops_all(tmp_path):
    log = tmp_path / "up.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as fh:
        up = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "up", "--respawn", "--split",
                               "--nodes", "plan_publisher", "registration", "--duration", "300",
                               "--log-dir", str(tmp_path / "logs")],
                              stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        def pids(label: str) -> list[int]:
            text = log.read_text()
            return [int(p) for p in re.findall(rf"(?:started {label} \(.*?\)|process {label} \(.*?\) respawned "
                                               rf"after [\d.]+ s,) pid (\d+)", text)]

        assert wait_until(lambda: pids("plan_publisher") and pids("registration"), 240.0), log.read_text()
        first = pids("plan_publisher")[0]
        os.killpg(first, signal.SIGKILL)  # the child runs in its own process group
        assert wait_until(lambda: "process plan_publisher (plan_publisher) killed by SIGKILL" in log.read_text(),
                          30.0), log.read_text()
        assert wait_until(lambda: len(pids("plan_publisher")) >= 2, 30.0), log.read_text()
        second = pids("plan_publisher")[-1]
        assert second != first and _alive(second)
        os.killpg(pids("registration")[0], signal.SIGKILL)  # not safety-relevant: reported only
        assert wait_until(lambda: "not safety-relevant: reported only" in log.read_text(), 30.0), log.read_text()
        assert wait_until(lambda: len(pids("registration")) >= 2, 30.0), log.read_text()
        children = [pids("plan_publisher")[-1], pids("registration")[-1]]
        up.send_signal(signal.SIGINT)
        up.wait(timeout=120.0)
        assert up.returncode == 0, log.read_text()
        assert wait_until(lambda: not any(_alive(p) for p in children), 15.0), children
        assert "spine-nav up: stopped" in log.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=10.0)


def test_split_needs_respawn():
    res = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "up", "--split", "--duration", "1"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2 and "--split: only with --respawn" in res.stderr


def test_launch_file_respawns_every_stack_node(monkeypatch, tmp_path):
    """launch/ on a machine without ros2 launch: the launch modules are stand-ins that record the Node
    arguments; every node of config/stack.yaml must be started with respawn and a delay."""
    import yaml

    made = []
    fake_launch = types.SimpleNamespace(LaunchDescription=lambda actions: list(actions))
    fake_actions = types.SimpleNamespace(Node=lambda **kw: made.append(kw) or kw)
    fake_ament = types.SimpleNamespace(get_package_share_directory=lambda _pkg: str(tmp_path))
    (tmp_path / "config").symlink_to(REPO / "config")
    monkeypatch.setitem(sys.modules, "launch", fake_launch)
    monkeypatch.setitem(sys.modules, "launch_ros", types.SimpleNamespace(actions=fake_actions))
    monkeypatch.setitem(sys.modules, "launch_ros.actions", fake_actions)
    monkeypatch.setitem(sys.modules, "ament_index_python", types.SimpleNamespace(packages=fake_ament))
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", fake_ament)
    ns: dict = {}
    exec(compile((REPO / "launch" / "spine_nav.launch.py").read_text(), "spine_nav.launch.py", "exec"), ns)
    ld = ns["generate_launch_description"]()
    nodes = yaml.safe_load((REPO / "config" / "stack.yaml").read_text())["nodes"]
    assert [n["name"] for n in ld] == nodes
    assert all(n["respawn"] is True and n["respawn_delay"] > 0 for n in ld), made
