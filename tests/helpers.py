"""Small helpers for tests (import as `from tests.helpers import ...`)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterator

from spine_nav.tracking.transport import free_tcp_port  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, period_s: float = 0.01,
               spin: Callable[[], None] | None = None) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (bounded loop). Returns the final value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if spin is not None:
            spin()
        if predicate():
            return True
        time.sleep(period_s)
    return bool(predicate())


@contextlib.contextmanager
def train_page(work_dir: Path, trainee: str, *extra_args: str, ready: Callable[[object], bool],
               up_s: float = 240.0, ready_s: float = 60.0) -> Iterator[dict]:
    """``spine-nav train`` serving trainee mode on a seeded L4 phantom (seed 3, 1.5 mm) in ``work_dir``, and a
    headless Chromium on its page, for a test module's fixture. Waits (bounded) until the server answers,
    then until ``ready(browser)``. Yields {"b", "proc", "db", "case", "dir", "log"}; afterwards closes the
    browser and ends the session with Ctrl-C (the attempt is closed), killing it only after 30 s."""
    import signal
    import subprocess
    import sys

    from spine_nav.children import stop_child
    from spine_nav.console.browser import HeadlessChromium, console_answers
    from spine_nav.training.case import generate_training_case

    def up(port: int) -> bool:
        return console_answers(f"http://127.0.0.1:{port}/")

    case = generate_training_case(work_dir / "case", seed=3, levels=("L4",), voxel_mm=1.5)
    db, log_path, port = work_dir / "sessions.db", work_dir / "train.log", free_tcp_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "train", "--case", str(case.case_dir),
                             "--trainee", trainee, "--db", str(db), *extra_args, "--port", str(port)],
                            stderr=log, stdout=log, cwd=REPO)
    browser = None
    try:
        assert wait_until(lambda: up(port) or proc.poll() is not None, timeout_s=up_s, period_s=0.3) \
            and proc.poll() is None, log_path.read_text()[-3000:]
        browser = HeadlessChromium(page_load_timeout_s=120.0)
        browser.driver.get(f"http://127.0.0.1:{port}/")
        assert wait_until(lambda: ready(browser), timeout_s=ready_s, period_s=0.3), log_path.read_text()[-3000:]
        yield {"b": browser, "proc": proc, "db": db, "case": case, "dir": work_dir, "log": log_path}
    finally:
        if browser is not None:
            browser.close()
        stop_child(proc, grace_s=30.0, first=signal.SIGINT)
        log.close()


def drain(executor, *received: list, max_callbacks: int = 100) -> None:
    """Spin ``executor`` until a spin takes no new message into the ``received`` lists (at most
    ``max_callbacks`` callbacks: one per ``spin_once``), then once more with a 2 ms wait."""
    for _ in range(max_callbacks):
        n = sum(len(r) for r in received)
        executor.spin_once(timeout_sec=0.0)
        if sum(len(r) for r in received) == n:
            break
    executor.spin_once(timeout_sec=0.002)


def arm_command(cli, spin: Callable[[], None], command: str, screw_id: str = "", timeout_s: float = 10.0):
    """Call ``arm/command`` through ``cli`` and spin until it answers (bounded; asserts an answer)."""
    from spine_nav_interfaces.srv import ArmCommand

    fut = cli.call_async(ArmCommand.Request(command=command, screw_id=screw_id))
    assert wait_until(fut.done, timeout_s=timeout_s, spin=spin), f"arm/command {command}: no answer"
    return fut.result()


#: ``arm/command`` refusals that only mean the arm guide has not heard an input yet (joint feedback, plan,
#: patient reference, guard): spine_nav.arm.commands.execute and ArmGuide.align/_guard_refusal word them so
NOT_HEARD_YET = ("no joint_states from the arm yet", "no plan on plan/registered yet",
                 "no tracker sample of the patient reference yet", "no guard/status")


def arm_command_once_heard(cli, spin: Callable[[], None], command: str, screw_id: str = "",
                           timeout_s: float = 30.0):
    """``arm_command``, asked again every 0.1 s (bounded by ``timeout_s``) while the answer is a refusal
    for an input the arm guide has not discovered/heard yet (``NOT_HEARD_YET``): on a loaded machine its
    DDS discovery of the test's publishers (or a restarted node) lags the test's own. Any other answer,
    success or refusal, is returned at once for the test to judge."""
    deadline = time.monotonic() + timeout_s
    res = arm_command(cli, spin, command, screw_id)
    while res.message.startswith(NOT_HEARD_YET) and time.monotonic() < deadline:
        wait_until(lambda: False, 0.1, spin=spin)
        res = arm_command(cli, spin, command, screw_id)
    return res


def perfect_arm_cycles(guide, T_tracker_reference, t0: float, n: int,
                       on_cycle: Callable[[int, float], None] | None = None) -> float:
    """``n`` servo cycles of 1 ms of the core ``ArmGuide`` with a perfect arm (measured = commanded): a
    reference sample every 10 ms, then ``on_cycle(k, t)`` (e.g. a guard verdict), then the step. Returns
    the last cycle's time (s)."""
    import numpy as np

    q = guide.q_command
    t = t0
    for k in range(n):
        t = t0 + (k + 1) * 1e-3
        if k % 10 == 0:
            guide.on_reference(T_tracker_reference, t)
        if on_cycle is not None:
            on_cycle(k, t)
        q = guide.step(t, q, np.zeros_like(q), t).q_rad
    return t
