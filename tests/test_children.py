"""spine_nav.children.stop_child: terminate, then kill a child that ignores SIGTERM."""
import subprocess
import sys

from spine_nav.children import stop_child


def test_stop_child_terminates_a_polite_child():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert stop_child(proc, grace_s=10.0) == -15


def test_stop_child_kills_a_child_that_ignores_sigterm():
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # the handler is installed before we signal
    assert stop_child(proc, grace_s=0.5) == -9
    proc.stdout.close()


def test_stop_child_of_an_exited_child_returns_its_code():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(30)
    assert stop_child(proc) == 3
