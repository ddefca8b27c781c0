"""The demo's case bag: `spine-nav bag record` as its own low-priority process, and the report's
``recording`` entry (the bag's counts next to the counts the report is built from).

A separate process keeps the recorder's work (callbacks, zstd chunks) off the stack's and the
simulators' interpreters; it subscribes like any other ROS consumer. Its priority: SCHED_FIFO 10, below
the stack (30) and the simulators (20) so it never delays them, above every normal process: at nice 10
on this shared 2-core machine (load average ~10) it lost 157 of 3016 best-effort tool samples in one
demo run (DDS delivery buffers overflow while the reader is starved); the recorder's own queue dropped 0.
"""
from __future__ import annotations

import json
import os
import struct
import signal
import subprocess
import sys
import time
from pathlib import Path

from spine_nav.bag.check import GUARD_CONFIG_METADATA

BAG_NAME = "case.mcap"
_STAMP = struct.Struct("<iI")


class BagRecorderProcess:
    def __init__(self, out_dir: Path, guard_config: dict, log_path: Path, rt_priority: int = 10) -> None:
        self.path = out_dir / BAG_NAME
        self.ready = out_dir / ".bag_ready"
        self.ready.unlink(missing_ok=True)
        self._log = open(log_path, "w")
        self.result: dict = {}
        cmd = [sys.executable, "-m", "spine_nav.cli.main", "bag", "record", "--out", str(self.path), "--force",
               "--rt-priority", str(rt_priority), "--ready-file", str(self.ready),
               "--wait-for-publishers", "tracking/tool_tip", "guard/status",
               "--metadata", f"{GUARD_CONFIG_METADATA}={json.dumps(guard_config)}"]
        # UDP only for the recorder: over Fast DDS's shared-memory transport a writer pushes into each
        # reader's port under that port's interprocess lock, so a recorder preempted while holding it
        # stalls the stack's publish() (priority inversion; seen as 20 ms sample->status p99 and 50 ms arm
        # control-cycle overruns with a nice-10 recorder). Over UDP the kernel takes the datagram.
        env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS="UDPv4")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env,
                                     start_new_session=True, text=True)

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready.exists():
                self.ready.unlink(missing_ok=True)
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 60.0) -> dict:
        """SIGINT, wait (bounded) for the bag to be closed; the recorder's JSON line (counts, dropped)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=5.0)
        self._log.close()
        for line in reversed((out or "").splitlines()):
            try:
                self.result = json.loads(line)
                break
            except ValueError:
                continue
        return self.result


def recording_summary(bag_path: Path, recorder: dict, status_stamps_s: list[float], samples_judged: int) -> dict:
    """The report's ``recording`` entry: counts in the bag vs. the report's own counts.

    Guard statuses: the report holds those the conductor received (``status_stamps_s``: their
    header.stamp); the bag's statuses are counted over the same window (the recorder starts before and
    stops after the conductor, and the guard keeps publishing watchdog statuses until it is stopped).
    Tool samples: every tool_tip the guard judged (its own latency record) against the bag's tool_tip."""
    from spine_nav.bag.reader import BagContents, BagError, iter_bag

    info = BagContents(bag_path)
    # the report's stamps are float seconds: +-1 us covers their rounding (statuses are >= 1 ms apart)
    lo = int(round(min(status_stamps_s) * 1e9)) - 1000 if status_stamps_s else 0
    hi = int(round(max(status_stamps_s) * 1e9)) + 1000 if status_stamps_s else -1
    status_bag = 0
    try:
        for m in iter_bag(bag_path, ["guard/status"], info):
            sec, nsec = _STAMP.unpack_from(m.data, 4)  # header.stamp right after the CDR encapsulation
            status_bag += lo <= sec * 1_000_000_000 + nsec <= hi
    except BagError as exc:
        return {"bag": bag_path.name, "error": str(exc)}
    statuses_received = len(status_stamps_s)
    counts = {t.lstrip("/"): n for t, n in info.counts.items()}
    tool_bag = counts.get("tracking/tool_tip", 0)
    return {"bag": bag_path.name, "complete": not info.truncated, "messages": sum(counts.values()),
            "topics": counts, "recorder_dropped": recorder.get("dropped"),
            "guard_status": {"bag": status_bag, "report": statuses_received},
            "tool_samples": {"bag": tool_bag, "report": samples_judged},
            "counts_equal": status_bag == statuses_received and tool_bag == samples_judged}
