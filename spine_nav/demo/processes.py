"""Start stack nodes as separate OS processes (`spine-nav up --nodes ...`), as a deployment would.

Separate processes keep the latency-critical nodes (bridge + guard, the arm's 1 kHz servo) off each
other's Python interpreter lock; they talk over DDS like nodes on separate machines.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence


class NodeProcess:
    """One `spine-nav up --nodes ...` process; its output goes to ``log_path``; always bounded in time."""

    def __init__(self, label: str, nodes: Sequence[str], ros_args: Sequence[str], log_path: Path,
                 max_duration_s: float = 1800.0, rt_priority: int = 0, prefix: Sequence[str] = ()) -> None:
        """``prefix``: put in front of the command, e.g. ``ip netns exec NS`` (``spine-nav demo --hosts``)."""
        self.label = label
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")
        cmd = [*prefix, sys.executable, "-m", "spine_nav.cli.main", "up", "--nodes", *nodes,
               "--duration", str(max_duration_s), "--rt-priority", str(int(rt_priority))]
        if ros_args:
            cmd += ["--ros-args", *ros_args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
        self._log.close()
        return self.proc.returncode

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
