"""Stopping a child process politely, then firmly (stdlib only: a root module any layer may import)."""
from __future__ import annotations

import signal
import subprocess


def stop_child(proc: subprocess.Popen, grace_s: float = 10.0, kill_wait_s: float = 5.0,
               first: int = signal.SIGTERM) -> int | None:
    """Send ``first`` (SIGTERM; SIGINT for a command that ends its session on Ctrl-C) to ``proc`` if it
    still runs, wait up to ``grace_s``, then SIGKILL and wait up to ``kill_wait_s``.
    Returns the exit code (None only if even the kill did not reap it in time)."""
    if proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(kill_wait_s)
            except subprocess.TimeoutExpired:
                pass
    return proc.poll()
