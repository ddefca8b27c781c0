"""Stack nodes as separate OS processes (`spine-nav up --nodes ...`), as a deployment would, and the
small supervisor that watches them.

Separate processes keep the latency-critical nodes (bridge + guard, the arm's 1 kHz servo) off each
other's Python interpreter lock; they talk over DDS like nodes on separate machines.

:class:`Supervisor` does for these processes what launch's ``respawn=True`` does, plus what launch does
not: it *tells the stack* at once. It waits on every process's pidfd (woken the moment one exits) and
polls them every ``poll_s`` (10 ms) anyway, on a thread of its own SCHED_FIFO ``priority`` (above the
stack's: a supervisor that waits behind the processes it watches detects late); a dead one is
reported through ``on_lost`` immediately (the demo publishes it on ``supervisor/process_lost``, which
holds the arm guide) and restarted after a backoff of 0.5 s doubling to 8 s (reset once the process
has stayed up for ``stable_s``), through ``on_respawn``. Everything is bounded in time.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


class SupervisedProcess:
    """One OS process running ``cmd``; output appended to ``log_path``; restartable; own process group.

    ``safety_relevant``: its death stops the arm (the demo publishes it on ``supervisor/process_lost``).
    False for processes the arm does not depend on while guiding (the registration node, measurement
    aids such as the floor relay): their death is reported (``/diagnostics``, the report) and they are
    restarted, but the arm keeps guiding (docs/safety.md, section "Which inputs and processes are
    safety-relevant")."""

    def __init__(self, label: str, cmd: Sequence[str], log_path: Path, nodes: Sequence[str] = (),
                 safety_relevant: bool = True) -> None:
        self.label = label
        self.safety_relevant = safety_relevant
        self.nodes = tuple(nodes) or (label,)
        self.cmd = list(cmd)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")
        self.starts = 0
        #: how the last :meth:`stop` went ("" before it): exit code and time after SIGINT, or killed
        self.stop_note = ""
        #: time.monotonic() of the last (re)start (set by _spawn)
        self.started_mono = 0.0
        self.proc: subprocess.Popen = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        self.starts += 1
        self.started_mono = time.monotonic()
        return subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=dict(os.environ),
                                start_new_session=True)

    def poll(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def restart(self) -> None:
        """Start the command again (the previous process must have exited)."""
        if self.proc.poll() is None:
            raise RuntimeError(f"{self.label}: still running (pid {self.proc.pid}); not restarted")
        self._log.write(f"\n----- restart {self.starts} ({time.strftime('%H:%M:%S')}) -----\n")
        self._log.flush()
        self.proc = self._spawn()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Fault injection: send ``sig`` to the whole process group (the node process and any children)."""
        os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT, wait up to ``timeout_s``, then SIGKILL the process group; :attr:`stop_note` says which."""
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
                self.stop_note = (f"exited with code {self.proc.returncode} {time.monotonic() - t0:.1f} s "
                                  f"after SIGINT")
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5.0)
                self.stop_note = f"still running {timeout_s:g} s after SIGINT: killed (SIGKILL)"
        elif not getattr(self, "stop_note", ""):
            self.stop_note = f"had already exited (code {self.proc.returncode}) when the stop came"
        self._log.close()
        return self.proc.returncode

    def output_since_start(self) -> str:
        """This run's output so far (after the last restart marker): e.g. a node's "ready" line."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        marker = f"----- restart {self.starts - 1} "
        return text[text.rfind(marker):] if self.starts > 1 and marker in text else text

    def failure_reason(self) -> str:
        """Why this run did not come up, as ``spine-nav up`` said it (e.g. "stack not started: tracker_bridge:
        configure failed: parameter port: ... in use"): its last error line, or "" when there is none."""
        errors = [line.split("error: ", 1)[1] for line in self.output_since_start().splitlines()
                  if line.startswith("spine-nav: error: ")]
        return errors[-1] if errors else ""

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class NodeProcess(SupervisedProcess):
    """One `spine-nav up --nodes ...` process; always bounded in time (``--duration``).

    `spine-nav up` brings its nodes up itself (the lifecycle nodes configured, linked in process, activated:
    :mod:`spine_nav.nodes.lifecycle`); a node that cannot configure ends the process with code 1 and the
    reason on its last ``spine-nav: error:`` line (:meth:`failure_reason`, carried by the supervisor's
    "lost" event)."""

    def __init__(self, label: str, nodes: Sequence[str], ros_args: Sequence[str], log_path: Path,
                 max_duration_s: float = 1800.0, rt_priority: int = 0, prefix: Sequence[str] = (),
                 safety_relevant: bool = True) -> None:
        """``prefix``: put in front of the command, e.g. ``ip netns exec NS`` (``spine-nav demo --hosts``)."""
        cmd = [*prefix, sys.executable, "-m", "spine_nav.cli.main", "up", "--nodes", *nodes,
               "--duration", str(max_duration_s), "--rt-priority", str(int(rt_priority))]
        if ros_args:
            cmd += ["--ros-args", *ros_args]
        super().__init__(label, cmd, log_path, nodes, safety_relevant=safety_relevant)


def exit_text(returncode: int | None) -> str:
    """``-9`` -> "killed by SIGKILL", ``1`` -> "exited with code 1"."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass(frozen=True)
class ProcessEvent:
    """``kind`` "lost" (``t_mono``: when the supervisor saw it; ``reason``: the process's own last error line,
    e.g. a node that failed to configure) or "respawned" (``delay_s``: the backoff)."""

    kind: str
    label: str
    nodes: tuple[str, ...]
    t_mono: float
    returncode: int | None = None
    delay_s: float = 0.0
    safety_relevant: bool = True   # the process's (SupervisedProcess.safety_relevant)
    reason: str = ""

    @property
    def message(self) -> str:
        if self.kind == "lost":
            why = f": {self.reason}" if self.reason else ""
            return f"process {self.label} ({', '.join(self.nodes)}) {exit_text(self.returncode)}{why}"
        return f"process {self.label} ({', '.join(self.nodes)}) respawned after {self.delay_s:.1f} s"


class Supervisor:
    """Watch ``procs`` from a background thread; report deaths at once, respawn with backoff.

    Backoff (like launch's ``respawn_delay``, but growing so a crash loop does not hog 2 cores):
    ``backoff_s`` after the first death, doubled after every death within ``stable_s`` of the last
    start, capped at ``max_backoff_s``. Callbacks run on the supervisor thread and must be short.
    """

    def __init__(self, procs: Sequence[SupervisedProcess], on_lost: Callable[[ProcessEvent], None] | None = None,
                 on_respawn: Callable[[ProcessEvent], None] | None = None, poll_s: float = 0.01,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, stable_s: float = 30.0,
                 priority: int = 0) -> None:
        self.procs = list(procs)
        self.priority = priority
        self.on_lost, self.on_respawn = on_lost, on_respawn
        self.poll_s, self.backoff_s, self.max_backoff_s, self.stable_s = poll_s, backoff_s, max_backoff_s, stable_s
        self.events: list[ProcessEvent] = []
        self._delay = {p.label: 0.0 for p in self.procs}
        self._due: dict[str, tuple[float, float]] = {}  # label -> (respawn at, delay)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> "Supervisor":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (bounded); the processes themselves are the caller's to stop."""
        self._stop.set()
        if self._thread.is_alive():  # the loop checks the flag before every respawn: no respawn after this returns
            self._thread.join(timeout=10.0)

    def healthy(self) -> bool:
        """Every process running and none waiting for its respawn."""
        with self._lock:
            return not self._due and all(p.alive() for p in self.procs)

    def events_since(self, t_mono: float, kind: str | None = None, label: str | None = None) -> list[ProcessEvent]:
        with self._lock:
            return [e for e in self.events if e.t_mono >= t_mono and (kind is None or e.kind == kind)
                    and (label is None or e.label == label)]

    def _record(self, event: ProcessEvent, callback) -> None:
        with self._lock:
            self.events.append(event)
        if callback is not None:
            try:
                callback(event)
            except Exception as exc:  # a callback must not stop the supervision
                print(f"supervisor: callback failed: {exc}", file=sys.stderr)

    def _wait(self, pidfds: dict) -> None:
        """Sleep up to ``poll_s``, woken early when a watched process exits (its pidfd turns readable)."""
        for p in self.procs:
            if p.label not in self._due and pidfds.get(p.label, (None,))[0] != p.proc.pid:
                old = pidfds.pop(p.label, None)
                if old is not None:
                    os.close(old[1])
                try:
                    pidfds[p.label] = (p.proc.pid, os.pidfd_open(p.proc.pid))
                except (AttributeError, OSError):  # no pidfd (old kernel, process gone): polling only
                    pass
        fds = [fd for label, (_pid, fd) in pidfds.items() if label not in self._due]
        if fds:
            select.select(fds, [], [], self.poll_s)
        else:
            self._stop.wait(self.poll_s)

    def _run(self) -> None:
        if self.priority > 0:
            try:  # this thread only (Linux: sched_setscheduler(0) is the calling thread)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.priority))
            except (PermissionError, OSError, AttributeError):
                pass
        pidfds: dict[str, tuple[int, int]] = {}
        try:
            self._loop(pidfds)
        finally:
            for _pid, fd in pidfds.values():
                os.close(fd)

    def _loop(self, pidfds: dict) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for p in self.procs:
                due = self._due.get(p.label)
                if due is None:
                    rc = p.poll()
                    if rc is None:
                        continue
                    up_s = now - p.started_mono
                    prev = self._delay[p.label]
                    delay = self.backoff_s if prev == 0.0 or up_s >= self.stable_s else min(2 * prev, self.max_backoff_s)
                    self._delay[p.label] = delay
                    with self._lock:
                        self._due[p.label] = (now + delay, delay)
                    reason = p.failure_reason() if rc > 0 else ""  # a kill has no last words
                    self._record(ProcessEvent("lost", p.label, p.nodes, now, rc, safety_relevant=p.safety_relevant,
                                              reason=reason), self.on_lost)
                elif now >= due[0]:
                    if self._stop.is_set():  # stopping: a respawn now would outlive the caller's stop of the stack
                        return
                    try:
                        p.restart()
                    except (OSError, RuntimeError) as exc:
                        print(f"supervisor: {p.label}: restart failed: {exc}", file=sys.stderr)
                        with self._lock:
                            self._due[p.label] = (now + self.max_backoff_s, due[1])
                        continue
                    with self._lock:
                        del self._due[p.label]
                    self._record(ProcessEvent("respawned", p.label, p.nodes, time.monotonic(), delay_s=due[1],
                                              safety_relevant=p.safety_relevant), self.on_respawn)
            self._wait(pidfds)


def floor_relay_process(latency_out, log_path, out_topic: str = "bench/floor_status",
                        rt_priority: int = 0) -> SupervisedProcess:
    """The bare relay node (:mod:`spine_nav.nodes.floor_relay`) as its own OS process (``alive``,
    ``stop``, ``tail``, ``label``, restartable by the supervisor): the demo runs it next to the stack's
    processes, at their priority, and reads its record like theirs."""
    cmd = [sys.executable, "-m", "spine_nav.nodes.floor_relay", "--latency-out", str(latency_out),
           "--out-topic", out_topic, "--rt-priority", str(int(rt_priority))]
    # a measurement aid: restarted when it dies, but its death is no reason to stop the arm
    return SupervisedProcess("floor_relay", cmd, Path(log_path), safety_relevant=False)


def read_node_latency_record(path: Path, node: str, procs: Sequence[SupervisedProcess]) -> tuple[list[float], str]:
    """A node's latency record (:mod:`spine_nav.nodes.latency_record`) after its process was stopped:
    ``(latencies in s, "")``, or ``([], why)`` when there is none or it is unusable - ``why`` names the node,
    the file and what its process did (:attr:`SupervisedProcess.stop_note`, restarts), for the demo's log
    and report instead of an empty figure."""
    from spine_nav.nodes.latency_record import read_latency_record

    host = next((p for p in procs if node in p.nodes), None)
    if host is None:
        what = "no process of this run hosts it"
    else:
        what = f"its process '{host.label}' {host.stop_note or 'was not stopped'}"
        if host.starts > 1:
            what += f" (started {host.starts} times)"
    if not Path(path).is_file():
        return [], f"no latency record from {node} ({path}): {what}"
    try:
        return read_latency_record(path), ""
    except ValueError as exc:
        return [], f"latency record from {node} unusable: {exc}; {what}"
