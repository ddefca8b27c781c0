"""The 1 kHz servo thread: absolute-deadline sleep, SCHED_FIFO + mlockall when permitted.

Measured on these machines (docs/platform-notes.md): absolute-deadline sleep p99 lateness 155-312 us, with
timer slack 1 ns 93-269 us, with SCHED_FIFO + mlockall 61 us. Never busy-wait under SCHED_FIFO
(kernel RT throttling stalls ~50 ms): every cycle sleeps until its deadline.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

LOG = logging.getLogger("spine_nav.arm.servo")
PR_SET_TIMERSLACK = 29
MCL_CURRENT, MCL_FUTURE = 1, 2


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def warm_blas_buffers() -> list[str]:
    """Make numpy's and scipy's OpenBLAS allocate their work buffers now; returns which were warmed.

    Why: the first call into each OpenBLAS of a process (numpy's bundled scipy-openblas: ``np.linalg.det``,
    ``solve``; scipy's own: the IK's LAPACK ``dposv``) allocates a work buffer (RSS +32 MB each). Once
    :func:`try_realtime` has called ``mlockall(MCL_FUTURE)``, that allocation is populated and locked on the
    spot, inside the call and with the GIL held, so every other thread of the process waits for it: measured
    here 8.6-55 ms of a 1 kHz thread's cycle (and seconds at a load average of 20) against 0.1-1.4 ms when
    warmed first (`/tmp` experiments recorded in docs/performance.md); in the demo it was the arm's one
    332 ms control-cycle overrun at the first align of seed 0. Called before ``mlockall``, the buffers exist
    already and ``MCL_CURRENT`` locks them at start-up, before the first cycle."""
    warmed = []
    np.linalg.det(np.eye(3))
    np.linalg.solve(np.eye(3), np.ones(3))
    warmed.append("numpy")
    try:
        from scipy.linalg.lapack import dposv
    except ImportError:  # scipy is optional for the servo itself
        return warmed
    dposv(2.0 * np.eye(5), np.ones((5, 2)))
    warmed.append("scipy")
    return warmed


def try_realtime(priority: int = 50) -> dict:
    """Ask for SCHED_FIFO (calling thread), mlockall and 1 ns timer slack; report what worked. The BLAS
    buffers are allocated first (:func:`warm_blas_buffers`), so that no later first call allocates and locks
    them in the middle of the control loop."""
    out = {"sched_fifo": False, "mlockall": False, "timer_slack_1ns": False}
    libc = _libc()
    try:
        out["timer_slack_1ns"] = libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0
    except Exception:  # noqa: BLE001 - not Linux
        pass
    out["blas_warmed"] = warm_blas_buffers()
    try:
        out["mlockall"] = libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0
    except Exception:  # noqa: BLE001
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0 = this thread on Linux
        out["sched_fifo"] = True
    except (PermissionError, OSError, AttributeError) as exc:
        LOG.info("SCHED_FIFO refused (%s): absolute-deadline sleep only", exc)
    return out


@dataclass
class ServoStats:
    cycles: int = 0
    overruns: int = 0
    starts_ns: list = field(default_factory=list)
    compute_ns: list = field(default_factory=list)
    realtime: dict = field(default_factory=dict)

    def summary(self) -> dict:
        s = np.diff(np.asarray(self.starts_ns, dtype=np.int64)) * 1e-6 if len(self.starts_ns) > 1 else np.array([])
        if s.size == 0:
            return {"cycles": self.cycles}
        dur_s = (self.starts_ns[-1] - self.starts_ns[0]) * 1e-9
        return {"cycles": self.cycles, "rate_hz": (len(self.starts_ns) - 1) / dur_s,
                "period_p50_ms": float(np.percentile(s, 50)), "period_p99_ms": float(np.percentile(s, 99)),
                "jitter_p99_ms": float(np.percentile(np.abs(s - 1e3 / self.rate_hz_nominal), 99))
                if hasattr(self, "rate_hz_nominal") else float("nan"),
                "compute_p99_ms": float(np.percentile(np.asarray(self.compute_ns) * 1e-6, 99)),
                "overruns": self.overruns, **{f"rt_{k}": v for k, v in self.realtime.items()}}


class ServoLoop:
    """Calls ``cycle(t_s)`` every ``period_s`` in its own thread (``t_s`` = time.monotonic of the cycle).

    A cycle that ends after the next deadline counts as an overrun; the loop then skips to the
    next future deadline (no burst of catch-up cycles). ``realtime=True`` asks for SCHED_FIFO.
    """

    def __init__(self, cycle: Callable[[float], None], period_s: float = 0.001, realtime: bool = True,
                 record: bool = True, max_records: int = 600_000) -> None:
        self.cycle = cycle
        self.period_ns = int(round(period_s * 1e9))
        self.realtime = realtime
        self.record = record
        self.max_records = max_records
        self.stats = ServoStats()
        self.stats.rate_hz_nominal = 1.0 / period_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.min_sleep_ns = 50_000

    def start(self) -> "ServoLoop":
        self._thread = threading.Thread(target=self._run, name="arm_servo", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        if self.realtime:
            self.stats.realtime = try_realtime()
        next_ns = time.monotonic_ns()
        st = self.stats
        try:
            while not self._stop.is_set():
                start = time.monotonic_ns()
                self.cycle(start * 1e-9)
                end = time.monotonic_ns()
                st.cycles += 1
                if self.record and len(st.starts_ns) < self.max_records:
                    st.starts_ns.append(start)
                    st.compute_ns.append(end - start)
                next_ns += self.period_ns
                if end + self.min_sleep_ns > next_ns:
                    # overrun (or too close to the deadline to sleep): skip to the next deadline that
                    # leaves a real sleep, so a SCHED_FIFO thread never runs flat out (RT throttling
                    # would then stall the whole process for ~50 ms)
                    st.overruns += 1
                    next_ns += ((end + self.min_sleep_ns - next_ns) // self.period_ns + 1) * self.period_ns
                time.sleep(max(0.0, (next_ns - time.monotonic_ns()) * 1e-9))
        except BaseException as exc:  # noqa: BLE001 - reported to the owner, who holds the arm
            self.error = exc
            LOG.exception("servo loop stopped by an error")
