"""The process supervisor (spine_nav.demo.processes.Supervisor) on toy processes: a killed process is
reported at once, respawned after the backoff, and the backoff doubles for a crash loop up to its cap.
Bounded waits only; no ROS."""
from __future__ import annotations

import signal
import sys

from spine_nav.demo.processes import ProcessEvent, Supervisor, SupervisedProcess, exit_text
from tests.helpers import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def test_killed_process_is_reported_and_respawned(tmp_path):
    p = SupervisedProcess("toy", SLEEPER, tmp_path / "toy.log")
    lost, respawned = [], []
    # backoff 2 s: "not healthy while waiting for the respawn" is read after the loss was seen; with 0.2 s a
    # stall of this thread on a loaded machine let the respawn happen first (healthy again)
    sup = Supervisor([p], on_lost=lost.append, on_respawn=respawned.append, backoff_s=2.0).start()
    try:
        assert wait_until(sup.healthy, 15.0)
        first_pid = p.proc.pid
        p.kill(signal.SIGKILL)
        assert wait_until(lambda: bool(lost), 10.0)
        assert lost[0].label == "toy" and lost[0].returncode == -signal.SIGKILL
        assert "toy" in lost[0].message and "SIGKILL" in lost[0].message
        assert not sup.healthy()  # waiting for its respawn
        assert wait_until(lambda: bool(respawned), 15.0)
        assert respawned[0].delay_s == 2.0 and respawned[0].t_mono - lost[0].t_mono >= 2.0
        assert p.proc.pid != first_pid and p.starts == 2
        assert wait_until(sup.healthy, 15.0)
    finally:
        sup.stop()
        p.stop(timeout_s=5.0)
    assert "restart 1" in (tmp_path / "toy.log").read_text()


def test_crash_loop_backoff_doubles_to_the_cap(tmp_path):
    p = SupervisedProcess("crasher", CRASHER, tmp_path / "crash.log")
    sup = Supervisor([p], backoff_s=0.05, max_backoff_s=0.2, stable_s=30.0).start()
    try:
        assert wait_until(lambda: len(sup.events_since(0.0, "respawned")) >= 4, 30.0)
    finally:
        sup.stop()
        p.stop(timeout_s=5.0)
    delays = [e.delay_s for e in sup.events_since(0.0, "respawned")][:4]
    assert delays == [0.05, 0.1, 0.2, 0.2], delays
    lost = sup.events_since(0.0, "lost")
    assert lost[0].returncode == 3 and exit_text(3) == "exited with code 3"


def test_callback_error_does_not_stop_supervision(tmp_path):
    p = SupervisedProcess("toy", SLEEPER, tmp_path / "toy.log")

    def broken(_event):
        raise ValueError("boom")

    sup = Supervisor([p], on_lost=broken, backoff_s=0.05).start()
    try:
        p.kill()
        assert wait_until(lambda: bool(sup.events_since(0.0, "respawned")), 15.0)
    finally:
        sup.stop()
        p.stop(timeout_s=5.0)


def test_not_safety_relevant_process_is_respawned_but_only_reported(tmp_path):
    """A process the arm does not depend on (registration, the floor relay): its death is an event marked
    not safety-relevant, it is respawned, and the demo's publisher puts it on /diagnostics (WARN) but not
    on supervisor/process_lost (which holds the arm); a safety-relevant one goes to both (ERROR)."""
    from types import SimpleNamespace

    from builtin_interfaces.msg import Time

    from spine_nav.demo.process_faults import process_lost_publisher

    p = SupervisedProcess("aid", SLEEPER, tmp_path / "aid.log", safety_relevant=False)
    lost = []
    sup = Supervisor([p], on_lost=lost.append, backoff_s=0.05).start()
    try:
        assert wait_until(sup.healthy, 15.0)
        p.kill()
        assert wait_until(lambda: bool(sup.events_since(0.0, "respawned")), 15.0)
    finally:
        sup.stop()
        p.stop(timeout_s=5.0)
    assert lost and lost[0].safety_relevant is False
    assert sup.events_since(0.0, "respawned")[0].safety_relevant is False

    published: dict[str, list] = {}

    class FakeNode:  # records what process_lost_publisher publishes, per topic
        def create_publisher(self, _type, topic, _qos):
            return SimpleNamespace(publish=published.setdefault(topic, []).append)

        def get_clock(self):
            return SimpleNamespace(now=lambda: SimpleNamespace(to_msg=Time))

    publish = process_lost_publisher(FakeNode())
    publish(lost[0])
    assert published["supervisor/process_lost"] == []
    (diag,) = published["/diagnostics"]
    assert diag.status[0].level == diag.status[0].WARN and "aid" in diag.status[0].message
    publish(ProcessEvent("lost", "tracker_bridge", ("tracker_bridge",), 0.0, -9))
    assert len(published["supervisor/process_lost"]) == 1
    assert published["/diagnostics"][-1].status[0].level == diag.status[0].ERROR


def test_floor_relay_and_registration_are_not_safety_relevant(tmp_path, monkeypatch):
    import spine_nav.demo.processes as processes
    from spine_nav.demo import process_faults

    made = []

    class Recorder:
        def __init__(self, label, cmd, log_path, nodes=(), safety_relevant=True, **_kw):
            made.append((label, safety_relevant))

    monkeypatch.setattr(processes, "SupervisedProcess", Recorder)
    processes.floor_relay_process(tmp_path / "f.json", tmp_path / "f.log")
    assert made == [("floor_relay", False)]
    monkeypatch.setattr(process_faults, "NodeProcess",
                        lambda label, nodes, args, log, rt_priority=0, safety_relevant=True: (label, safety_relevant))
    for split in (False, True):
        procs = dict(process_faults.stack_processes([], tmp_path, 0, 0, split=split))
        assert procs.pop("registration") is False and all(procs.values()), procs
