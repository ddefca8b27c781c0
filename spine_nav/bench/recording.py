"""recording: what the case bag recorder adds to the sample -> guard status p99 (issue 20's <= 5 % target).

The pipeline is the demo's, without the arm: the simulated tracker (``sim_tracker``, OpenIGTLink server
over TCP at ``--rate-hz``, 100 Hz as in the demo, stamping at transmission) in this process under the
simulators' SCHED_FIFO 20; ``tracker_bridge`` + ``trajectory_guard`` composed in one process (the demo's
``navigation`` process, :func:`spine_nav.demo.process_faults.stack_processes`) under SCHED_FIFO 30; the
demo's conductor (:class:`spine_nav.demo.conductor.Conductor`) in this process: it publishes a one-screw
plan on ``plan/registered``, selects the screw and moves the simulated drill along it (approach, drill
down, drift sideways, back out) at 100 Hz, and subscribes to ``guard/status`` like the demo. The demo's
watchdog overrides (:data:`spine_nav.demo.run.DEMO_WATCHDOGS`) apply.

Two configurations, interleaved ``with, without, with, without, ...`` for ``--rounds`` rounds of
``--duration-s`` each, each a fresh start of the whole pipeline:

* ``bag``: plus the demo's recorder (:class:`spine_nav.demo.bag.BagRecorderProcess`: ``spine-nav bag
  record`` of every stack topic in its own process, SCHED_FIFO 10, Fast DDS over UDP only);
* ``no_bag``: without it.

Figure per run: the guard's own latency record (:mod:`spine_nav.nodes.latency_record`) of sample stamp -> status ``publish()``
returned, the demo's ``sample_to_status_p99_ms``, over the samples stamped inside the measured window
(after the warm-up, before the stop). ``metrics.sample_to_status_p99_overhead_ratio`` = median over the
rounds of (bag p99 / no_bag p99) of the same round; ``details.rounds`` holds every round's values, their
ratios and spread (min, max); ``baselines.no_bag`` the no-bag figures (median over the rounds);
``metrics.dropped_messages`` = the recorder's own dropped-message count summed over the bag runs (its
write queue full: counted, never silent). The target (<= 1.05) is met when the median ratio is <= 1.05;
on a loaded machine read it with the spread.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from spine_nav.bench import BenchResult, info
from spine_nav.bench.floor import busy_core, load_env, median_of, ratio_rounds
from spine_nav.resources import share_path

RATE_HZ = 100.0
TARGET_RATIO = 1.05
WARMUP_S = 2.0
#: start-up bound (recorder ready, first judged sample): generous, processes start slowly on a loaded machine
STARTUP_TIMEOUT_S = 180.0
SIM_RT = 20  # the demo's DemoConfig.sim_rt_priority (simulators and conductor)
PARAMS_FILE = share_path("config", "nodes.yaml")  # as spine_nav.demo.run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per run (default 20)")
    p.add_argument("--rate-hz", type=float, default=RATE_HZ, help="simulated tracker rate, Hz (default 100, the demo's)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved with-bag / no-bag rounds (default 5)")
    p.add_argument("--busy-core", action="store_true",
                   help="keep one extra core busy (Python busy loop) for the whole run: the load test")
    p.add_argument("--rt-priority", type=int, default=30,
                   help="SCHED_FIFO of the navigation process (the demo's 30; 0: normal scheduling)")
    p.add_argument("--work-dir", help="keep every run's bag, latency record and logs here (default: a temp dir)")
    p.add_argument("--quick", action="store_true", help="tests: at most 3 s per run")


def _plan():
    """One screw, L4_left: entry at the Reference origin, 40 mm along +z (the tool path below follows it)."""
    from spine_nav.plan import Plan, Screw

    return Plan(screws=(Screw(id="L4_left", level="L4", side="left", entry_mm=(0.0, 0.0, 0.0),
                              target_mm=(0.0, 0.0, 40.0), diameter_mm=6.5, length_mm=45.0),),
                frame="Reference", case_id="bench_recording")


def tool_pose(t_s: float) -> np.ndarray:
    """The simulated drill's true pose in Reference (mm) at ``t_s``: an 8 s cycle from 20 mm above the entry
    down to 38 mm deep and back, drifting up to 1.5 mm sideways on the way down (ALIGNED, WARN, APPROACH)."""
    u = (t_s % 8.0) / 8.0
    depth = -20.0 + 58.0 * (1.0 - abs(2.0 * u - 1.0))
    T = np.eye(4)
    T[:3, 3] = (1.5 * math.sin(math.pi * u) ** 2, 0.0, depth)
    return T


def _stack_args(port: int, rate_hz: float) -> list[str]:
    from spine_nav.demo.run import DEMO_WATCHDOGS, _p

    args = _p("sim_tracker", "port", port) + _p("sim_tracker", "rate_hz", rate_hz) + _p("sim_tracker", "seed", 0)
    args += _p("sim_tracker", "stamp_at_send", True) + _p("tracker_bridge", "port", port)
    args += _p("tracker_bridge", "console_port", 0)
    for node, name, value in DEMO_WATCHDOGS:
        if node in ("trajectory_guard", "tracker_bridge"):
            args += _p(node, name, value)
    return args  # the guard's latency record is written by serve(), not on shutdown (latency_record_path unset)


def _window_latencies(path: Path, t0_ns: int, t1_ns: int) -> list[float]:
    """Latencies (ms) of the guard's record for samples stamped in [t0_ns, t1_ns)."""
    data = json.loads(path.read_text())
    return [lat * 1e-6 for stamp, lat in zip(data["sample_stamp_ns"], data["latency_ns"]) if t0_ns <= stamp < t1_ns]


def one_run(with_bag: bool, duration_s: float, rate_hz: float, rt: int, run_dir: Path) -> dict:
    """:func:`measure_run`; a run that fails (e.g. a start-up bound exceeded) gives its error and no figures
    (its round then has no ratio) instead of ending the benchmark."""
    try:
        return measure_run(with_bag, duration_s, rate_hz, rt, run_dir)
    except (RuntimeError, TimeoutError, OSError) as exc:
        info(f"bench recording: run failed: {exc}")
        return {"config": "bag" if with_bag else "no_bag", "error": str(exc), "samples": 0,
                "sample_to_status_p50_ms": None, "sample_to_status_p99_ms": None, "sample_to_status_max_ms": None}


def measure_run(with_bag: bool, duration_s: float, rate_hz: float, rt: int, run_dir: Path) -> dict:
    """Start the pipeline (and the recorder), warm up, measure ``duration_s``, stop; the run's figures."""
    from spine_nav_interfaces.msg import ScrewPlan

    from spine_nav.bag.check import guard_config_for
    from spine_nav.demo.bag import BagRecorderProcess
    from spine_nav.demo.conductor import Conductor
    from spine_nav.demo.run import DEMO_WATCHDOGS
    from spine_nav.nodes.conversions import plan_to_msg
    from spine_nav.nodes.qos import PLAN_QOS
    from spine_nav.nodes.runner import ComposedStack, realtime_threads
    from spine_nav.tracking.transport import free_tcp_port

    run_dir.mkdir(parents=True, exist_ok=True)
    logs = run_dir / "logs"
    latency_path = run_dir / "trajectory_guard_latency.json"
    params_file = PARAMS_FILE
    args = _stack_args(free_tcp_port(), rate_hz)
    # the demo's navigation process (`spine-nav up --nodes tracker_bridge trajectory_guard`, composed), here
    # as :func:`serve`: the same composition and tuning, stopped through a file (see there)
    stop_file = run_dir / ".stop_navigation"
    stop_file.unlink(missing_ok=True)
    nav = NavigationProcess(stop_file, latency_path, rt, args, logs / "navigation.log")
    bag = None
    t0_ns = t1_ns = 0
    out: dict = {"config": "bag" if with_bag else "no_bag"}
    try:
        if with_bag:
            over = {k: v for n, k, v in DEMO_WATCHDOGS if n == "trajectory_guard"}
            bag = BagRecorderProcess(run_dir, guard_config_for({}, params_file, over).to_dict(),
                                     logs / "bag_recorder.log", rt_priority=10 if rt > 0 else 0)
        with realtime_threads(min(rt, SIM_RT)), \
                ComposedStack(["sim_tracker"], params_file=params_file, extra_ros_args=args):
            conductor = Conductor()
            try:
                plan_pub = conductor.node.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
                plan_pub.publish(plan_to_msg(_plan(), time.time()))
                t_mono0 = time.monotonic()
                conductor.move_tool(tool_pose(0.0))
                if bag is not None and not bag.wait_ready(STARTUP_TIMEOUT_S):
                    raise RuntimeError(f"the bag recorder did not start (see {logs / 'bag_recorder.log'})")
                deadline = time.monotonic() + STARTUP_TIMEOUT_S
                while True:  # the guard judges samples with the plan: discovery and the TCP link are up
                    try:  # a call that times out on a loaded machine is tried again, within the bound
                        ok = conductor.select_cli.service_is_ready() and conductor.select_screw("L4_left")[0]
                    except TimeoutError:
                        ok = False
                    if ok and conductor.last_status is not None and conductor.last_status.tool_sample_stamp.sec:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no guard status for a tool sample within {STARTUP_TIMEOUT_S:g} s (see {logs})")
                    conductor.move_tool(tool_pose(time.monotonic() - t_mono0))
                    time.sleep(0.05)
                end_warm = time.monotonic() + WARMUP_S
                t_end = math.inf
                while time.monotonic() < t_end:
                    now = time.monotonic()
                    if not t0_ns and now >= end_warm:
                        t0_ns, t_end = time.time_ns(), now + duration_s
                    conductor.move_tool(tool_pose(now - t_mono0))
                    time.sleep(0.01)
                t1_ns = time.time_ns()
                out["states"] = _states(conductor, t0_ns, t1_ns)
                # stop the guard's process while its tracker still serves: a bridge reconnecting to a vanished
                # server during shutdown left no latency record (SIGKILL after the bounded wait) under load
                out["navigation_stop"] = nav.stop()
            finally:
                conductor.close()
    finally:
        nav.stop()  # (already stopped unless the run failed)
        if bag is not None:
            res = bag.stop()
            out["recorder"] = {"dropped": res.get("dropped"), "messages": sum((res.get("counts") or {}).values()),
                               "topics": len(res.get("counts") or {})}
    lat = _window_latencies(latency_path, t0_ns, t1_ns) if latency_path.is_file() else []
    if not latency_path.is_file():
        out["error"] = f"no latency record from the guard ({latency_path}; see {logs / 'navigation.log'})"
    out.update({"samples": len(lat), "load_average_1min": round(os.getloadavg()[0], 2),
                "sample_to_status_p50_ms": _pct(lat, 50), "sample_to_status_p99_ms": _pct(lat, 99),
                "sample_to_status_max_ms": round(max(lat), 3) if lat else None,
                "expected_samples": int(duration_s * rate_hz)})
    return out


class NavigationProcess:
    """``python -m spine_nav.bench.recording --serve ...`` (:func:`serve`) in its own process group."""

    def __init__(self, stop_file: Path, latency_path: Path, rt: int, ros_args: list[str], log_path: Path) -> None:
        import subprocess
        import sys

        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file, self.latency_path = stop_file, latency_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "spine_nav.bench.recording", "--serve", str(stop_file),
                                      str(latency_path), str(int(rt)), *ros_args],
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.how = ""

    def stop(self, timeout_s: float = 60.0) -> str:
        """Ask through the stop file; wait (bounded) for the exit; SIGKILL the group if it does not come.
        Returns how it ended ("exited", "killed after writing its record", "killed")."""
        import signal
        import subprocess

        if self.how:
            return self.how
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=timeout_s)
            self.how = "exited"
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10.0)
            self.how = "killed after writing its record" if self.latency_path.is_file() else "killed"
        self._log.close()
        return self.how


def serve(stop_file: str, latency_out: str, rt: int, ros_args: list[str]) -> int:
    """Child process: tracker_bridge + trajectory_guard composed exactly as `spine-nav up --nodes tracker_bridge
    trajectory_guard --rt-priority RT` composes them (:mod:`spine_nav.cli.up`), until ``stop_file`` exists;
    then the guard's latency record is written *before* the stack is closed. Why not `up` + SIGINT: under
    load, a `spine-nav up` whose bridge had lost its tracker was seen ignoring SIGINT for over a minute, and a
    record that is written on shutdown was then lost (the demo reports that case as "did not shut down
    cleanly")."""
    from spine_nav.nodes.runner import ComposedStack, freeze_startup_objects, set_process_realtime, tune_process_for_nodes

    tune_process_for_nodes()
    sched = set_process_realtime(rt)
    info(f"bench recording: composing tracker_bridge, trajectory_guard ({sched})")
    stop = Path(stop_file)
    with ComposedStack(["tracker_bridge", "trajectory_guard"], params_file=PARAMS_FILE,
                       extra_ros_args=ros_args) as stack:
        freeze_startup_objects()
        while not stop.exists():
            time.sleep(0.1)
        stack.nodes["trajectory_guard"].latency.write(latency_out)
        info(f"bench recording: latency record written ({latency_out})")
    return 0


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _states(conductor, t0_ns: int, t1_ns: int) -> dict[str, int]:
    """Guard states of the statuses the conductor received for samples in the window (the guard did work)."""
    out: dict[str, int] = {}
    for s in conductor.rec.statuses:
        if t0_ns <= s.sample_s * 1e9 < t1_ns:
            out[s.state] = out.get(s.state, 0) + 1
    return out


def run(args: argparse.Namespace) -> BenchResult:
    quick = getattr(args, "quick", False)
    duration = min(3.0, args.duration_s) if quick else args.duration_s
    rounds = int(args.rounds)
    if rounds < 1:
        raise ValueError(f"--rounds: must be >= 1, got {rounds}")
    rt = int(getattr(args, "rt_priority", 30))
    load_before = os.getloadavg()
    tmp = None
    if getattr(args, "work_dir", None):
        work = Path(args.work_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_recording_")
        work = Path(tmp.name)
    pairs: list[tuple[dict, dict]] = []  # (no_bag, bag) per round, as ratio_rounds wants (floor, stack)
    try:
        with busy_core(getattr(args, "busy_core", False)):
            for i in range(rounds):
                info(f"bench recording: round {i + 1}/{rounds}: with the bag (load {os.getloadavg()[0]:.2f})")
                with_bag = one_run(True, duration, args.rate_hz, rt, work / f"round{i + 1}_bag")
                info(f"  p99 {with_bag['sample_to_status_p99_ms']} ms over {with_bag['samples']} samples, "
                     f"recorder dropped {with_bag.get('recorder', {}).get('dropped')}")
                info(f"bench recording: round {i + 1}/{rounds}: without (load {os.getloadavg()[0]:.2f})")
                without = one_run(False, duration, args.rate_hz, rt, work / f"round{i + 1}_no_bag")
                info(f"  p99 {without['sample_to_status_p99_ms']} ms over {without['samples']} samples")
                pairs.append((without, with_bag))
    finally:
        if tmp is not None:
            tmp.cleanup()
    p99 = ratio_rounds(pairs, "sample_to_status_p99_ms")
    p50 = ratio_rounds(pairs, "sample_to_status_p50_ms")
    bags, nobags = [p[1] for p in pairs], [p[0] for p in pairs]
    dropped = [r.get("recorder", {}).get("dropped") for r in bags if "recorder" in r]
    keys = ["sample_to_status_p50_ms", "sample_to_status_p99_ms", "sample_to_status_max_ms", "samples"]
    metrics = {"sample_to_status_p99_overhead_ratio": p99["median_ratio"],
               "sample_to_status_p50_overhead_ratio": p50["median_ratio"],
               "sample_to_status_p99_ms": median_of(bags, ["sample_to_status_p99_ms"])["sample_to_status_p99_ms"],
               "dropped_messages": sum(d for d in dropped if d is not None) if all(d is not None for d in dropped)
               else None,
               "failed_runs": sum(1 for r in bags + nobags if r.get("error")),
               "target_ratio": TARGET_RATIO,
               "target_met": (p99["median_ratio"] <= TARGET_RATIO) if p99["median_ratio"] is not None else None}
    baselines = {"no_bag": {**median_of(nobags, keys),
                            "what": "the same pipeline without the recorder process, interleaved with the bag runs"}}
    details = {"rounds": {"sample_to_status_p99_ms": {**p99, "no_bag": p99["floor"], "bag": p99["stack"]},
                          "sample_to_status_p50_ms": {**p50, "no_bag": p50["floor"], "bag": p50["stack"]},
                          "bag": bags, "no_bag": nobags},
               "bag": median_of(bags, keys),
               "layout": "sim_tracker (this process, FIFO 20) -TCP-> navigation process: tracker_bridge + "
                         "trajectory_guard composed (FIFO 30); conductor in this process; bag runs add `spine-nav "
                         "bag record` (own process, FIFO 10, UDP)"}
    for k in ("floor", "stack"):  # named for this bench: no_bag / bag
        details["rounds"]["sample_to_status_p99_ms"].pop(k)
        details["rounds"]["sample_to_status_p50_ms"].pop(k)
    env = {"duration_s": duration, "rate_hz": args.rate_hz, "rt_priority": rt, "warmup_s": WARMUP_S,
           **load_env(args, load_before), "interleaved": "bag, no_bag, bag, no_bag, ..."}
    return BenchResult(bench="recording", metrics=metrics, baselines=baselines, env=env, details=details)


if __name__ == "__main__":
    import sys

    if len(sys.argv) >= 5 and sys.argv[1] == "--serve":
        sys.exit(serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]))
    sys.exit("usage: python -m spine_nav.bench.recording --serve STOP_FILE LATENCY_OUT RT_PRIORITY [ROS ARGS...]")
