"""Test set-up shared by the whole suite.

* Each pytest session gets its own ROS_DOMAIN_ID and localhost-only discovery,
  so parallel runs on one machine never hear each other.
* Each test gets a ROS domain of its own (from the session's pool of ``DOMAINS_PER_SESSION``), so a
  node or process a test leaves behind cannot answer the next test's service calls (CI saw the guard
  service of another stack answer "no screw 'L4_left' in the plan (have: none)"). A module whose
  module-scoped fixture is a ROS participant sets ``SHARED_ROS_DOMAIN = True``: one domain per module.
* Every process a module starts carries ``SPINE_NAV_TEST_MODULE`` in its environment; any still alive
  when the module ends is reported (``build/test-leaks.log`` and a warning) and killed.
* Plots render offscreen (Agg); MuJoCo renders offscreen.
"""
from __future__ import annotations

import itertools
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 200))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: domains 1-230 (RTPS ports exist up to 232) in 23 pools of 10; the session's pool follows its ROS_DOMAIN_ID
DOMAINS_PER_SESSION = 10
_POOL_START = 1 + (int(os.environ["ROS_DOMAIN_ID"]) % 23) * DOMAINS_PER_SESSION
_next_domain = (str(_POOL_START + i % DOMAINS_PER_SESSION) for i in itertools.count())
LEAK_LOG = REPO / "build" / "test-leaks.log"


def _processes_tagged(tag: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose environment holds ``SPINE_NAV_TEST_MODULE=tag``."""
    needle = f"SPINE_NAV_TEST_MODULE={tag}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes() + b"\0":
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                if cmd:  # not a zombie
                    found.append((int(entry.name), cmd))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def _module_isolation(request):
    """One ROS domain for the module's fixtures; report and kill processes the module leaves behind."""
    tag = f"{os.getpid()}:{request.module.__name__}"  # not another session's
    os.environ["SPINE_NAV_TEST_MODULE"] = tag
    os.environ["ROS_DOMAIN_ID"] = next(_next_domain)
    yield
    leaked = []
    deadline = time.monotonic() + 3.0  # a process stopped at the end of the module may still be exiting
    while time.monotonic() < deadline and (leaked := _processes_tagged(tag)):
        time.sleep(0.2)
    for pid, _cmd in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if leaked:
        text = "".join(f"{tag}: left pid {pid} running: {cmd[:300]}\n" for pid, cmd in leaked)
        LEAK_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(LEAK_LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")
        warnings.warn(f"processes left running (killed):\n{text}", stacklevel=1)


@pytest.fixture(autouse=True)
def _test_domain(request):
    """A fresh ROS domain per test, unless the module shares one with its fixtures (SHARED_ROS_DOMAIN)."""
    if not getattr(request.module, "SHARED_ROS_DOMAIN", False):
        os.environ["ROS_DOMAIN_ID"] = next(_next_domain)
    yield


@pytest.fixture
def ros_context():
    """A fresh rclpy Context, initialised for one test and shut down after it."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)

