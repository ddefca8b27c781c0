"""Console: tool sample -> frame drawn in a real headless Chromium, page fps, server CPU.

Set-up (all real): a phantom case and its registered plan; `spine-nav console` as its own
process (web server + ROS bridge); a feeder rclpy node in this process publishing
``tracking/tool_tip`` and ``guard/status`` at ``--rate`` Hz (tool moving along a planned screw);
Debian's Chromium (Selenium) showing the page.

Metrics (exact keys of issue #9):
    sample_to_frame_p95_ms / _p99_ms: tracker sample time (``header.stamp``, carried through ROS,
        the server and the WebSocket) -> end of the requestAnimationFrame callback that first
        draws the sample (page clock = same host clock). Every sample counts: one the server
        replaced by a newer one before sending (it sends the latest per stream) travels in the
        newer one's ``covers_s`` and counts at the frame that shows its successor.
    fps: requestAnimationFrame callbacks per second while the tool moves.
    server_cpu_cores: CPU time of the console process / wall time while the tool moves.
Baseline ``idle`` (same run, before the tool moves): fps and server CPU with no tool input.
Details: the split sample -> server send -> page receive, WebSocket frames per second, the page's
JS time per drawn frame (``page_draw_ms``; the 3D view renders in a worker, its own time is
``view3d_worker_ms`` per render).

Floor (issue 17, :mod:`spine_nav.bench.floor`, :mod:`spine_nav.bench.console_floor`): a bare server
(own process: raw ``tracking/tool_tip`` subscription -> each stamp over a WebSocket) and a bare page (one
dot on a 2D canvas) in the same Chromium with the same flags, fed by the same feeder at the same rate,
latency measured the same way. Both servers run for the whole benchmark (each round has the same
processes and the same DDS traffic); the one browser loads the bare page, then the console, then the bare
page, ... (each round loads its page afresh) for ``--rounds`` rounds of ``--seconds`` each. ``sample_to_frame_p95_vs_floor`` = median over
the rounds of console p95 / floor p95; the headline p95/p99/fps/CPU are the median of the rounds.

``--trainee``: the console in trainee mode (``spine-nav train`` serving it), input -> tool drawn and the
console's sample -> frame, each against its floor: :mod:`spine_nav.bench.console_trainee`.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spine_nav.bench import BenchResult
from spine_nav.bench.floor import add_floor_arguments, busy_core, interleave, load_env, median_of, ratio_rounds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short run (tests): 4 s of tool motion")
    p.add_argument("--rate", type=float, default=250.0, help="tool sample rate, Hz (default 250)")
    p.add_argument("--seconds", type=float, default=10.0, help="tool motion per round and page (default 10 s)")
    p.add_argument("--case", help="existing case directory (default: generate a small phantom case)")
    p.add_argument("--page-query", default="", help="query string for the page, e.g. view3d=0 (diagnosis)")
    p.add_argument("--trainee", action="store_true",
                   help="the console in trainee mode (spine-nav train): input -> tool drawn p95 and the console's "
                        "sample -> frame, each against its floor (spine_nav.bench.console_trainee)")
    p.add_argument("--key-pause", type=float, default=0.25,
                   help="--trainee: seconds between single key presses (default 0.25)")
    add_floor_arguments(p)


# ---------------------------------------------------------------------------------------------
# Shared with tests: a registered phantom case and a feeder node publishing the stack's topics.
# ---------------------------------------------------------------------------------------------
def make_case(out_dir: str | Path, levels=("L3", "L4"), seed: int = 1):
    """A small phantom case (1.5 mm voxels) and its plan in Reference (ground-truth registration).

    Returns (case_dir, Plan in Reference).
    """
    from spine_nav.phantom.case import generate_case, load_truth
    from spine_nav.plan import load_plan

    out = Path(out_dir)
    if not (out / "ground_truth.json").exists():
        generate_case(out, seed=seed, levels=levels, voxel_mm=1.5, cbct_voxel_mm=1.5)
    _, T_cbct_preop = load_truth(out / "ground_truth.json")
    plan = load_plan(out / "plan.json").transformed_per_level(T_cbct_preop, frame="Reference")
    return out, plan


def tool_pose_on_screw(screw, depth_mm: float, lateral_mm: float = 0.0) -> np.ndarray:
    """T_reference_tooltip (mm) with the tip ``depth_mm`` along the screw's line from its entry,
    offset ``lateral_mm`` sideways, +z (shaft toward the tip) along the planned direction."""
    from spine_nav.geometry import make_transform

    d = screw.direction
    side = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(side) < 1e-6:
        side = np.cross(d, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    y = np.cross(d, side)
    R = np.column_stack([side, y, d])
    return make_transform(R, screw.entry_mm + depth_mm * d + lateral_mm * side)


def make_feeder(context=None):
    """A FeedNode (rclpy) publishing what the stack would: plan, tool, guard, arm, health, levels."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from spine_nav_interfaces.msg import ArmState, GuardStatus, LevelRegistration, ScrewPlan, ToolHealth

    from spine_nav.nodes.conversions import matrix_mm_to_pose_stamped, plan_to_msg, seconds_to_stamp
    from spine_nav.nodes.qos import PLAN_QOS, SENSOR_QOS, STATUS_QOS

    states = {"NO_PLAN": 0, "TRACKING_LOST": 1, "APPROACH": 2, "ALIGNED": 3, "WARN": 4, "VIOLATION": 5}

    class FeedNode(Node):
        def __init__(self) -> None:
            super().__init__("console_feed", context=context)
            self.plan_pub = self.create_publisher(ScrewPlan, "plan/registered", PLAN_QOS)
            self.tool_pub = self.create_publisher(PoseStamped, "tracking/tool_tip", SENSOR_QOS)
            self.guard_pub = self.create_publisher(GuardStatus, "guard/status", STATUS_QOS)
            self.arm_pub = self.create_publisher(ArmState, "arm/state", 10)
            self.health_pub = self.create_publisher(ToolHealth, "tracking/health", 10)
            self.level_pub = self.create_publisher(LevelRegistration, "registration/levels", 10)
            self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def plan(self, plan, not_navigable=None) -> None:
            self.plan_pub.publish(plan_to_msg(plan, time.time(), not_navigable))

        def tool(self, T_mm: np.ndarray, stamp_s: float) -> None:
            self.tool_pub.publish(matrix_mm_to_pose_stamped(T_mm, "Reference", stamp_s))

        def guard(self, stamp_s: float, screw_id: str, state: str, **values: float) -> GuardStatus:
            m = GuardStatus(active_screw_id=screw_id, state=states[state], state_name=state,
                            reason=values.pop("reason", ""), **values)
            m.header.stamp = seconds_to_stamp(time.time())
            m.header.frame_id = "Reference"
            m.tool_sample_stamp = seconds_to_stamp(stamp_s)
            self.guard_pub.publish(m)
            return m

        def arm(self, mode: str, screw_id: str, stop_cause: str = "", holding: bool = False) -> None:
            m = ArmState(mode=mode, active_screw_id=screw_id, stop_cause=stop_cause, holding=holding,
                         alignment_error_mm=0.3, alignment_error_deg=0.4)
            m.header.stamp = seconds_to_stamp(time.time())
            self.arm_pub.publish(m)

        def health(self, tool: str, ok: bool, rate_hz: float, reason: str = "") -> None:
            self.health_pub.publish(ToolHealth(tool=tool, device=f"{tool}ToTracker", state=0 if ok else 1,
                                               visible=ok, rate_hz=rate_hz, reason=reason, sample_age_ms=4.0))

        def level(self, level: str, accepted: bool, fitness: float, rmse_mm: float, reason: str = "") -> None:
            self.level_pub.publish(LevelRegistration(level=level, accepted=accepted, fitness=fitness,
                                                     inlier_rmse_mm=rmse_mm, reason=reason))

        def diag(self, name: str, ok: bool, message: str) -> None:
            a = DiagnosticArray()
            a.status.append(DiagnosticStatus(name=name, level=DiagnosticStatus.OK if ok else DiagnosticStatus.ERROR,
                                             message=message))
            self.diag_pub.publish(a)

    return FeedNode()


def guard_values(screw, depth_mm: float, lateral_mm: float) -> dict[str, float]:
    """Readout numbers for a tool on the screw's line (tests and the benchmark publish these as the guard)."""
    return {"lateral_error_mm": abs(lateral_mm), "entry_offset_mm": abs(lateral_mm), "angular_error_deg": 0.0,
            "depth_mm": depth_mm, "remaining_mm": screw.depth_mm - depth_mm,
            "predicted_tip_error_mm": abs(lateral_mm), "sample_age_ms": 1.0}


# ---------------------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fps(frame_times_ms: list[float], t_from_ms: float) -> float:
    t = [x for x in frame_times_ms if x >= t_from_ms]
    return (len(t) - 1) / ((t[-1] - t[0]) / 1000.0) if len(t) > 2 else 0.0


def _say(msg: str) -> None:
    sys.stderr.write(f"[bench console] {msg}\n")
    sys.stderr.flush()


#: after a page loads, before the tool moves: the console's slices and 3D surface load in this time (the
#: idle baseline waits as long); the bare page waits the same
PAGE_SETTLE_S = 3.0


def _feed(feeder, screw, rate: float, seconds: float, on_measure) -> float:
    """Publish tool + guard at ``rate`` for 1 s of warm-up, call ``on_measure()``, then ``seconds`` more;
    returns the measured wall time."""
    period = 1.0 / rate
    n, warm = int(seconds * rate), int(1.0 * rate)
    t_next = time.monotonic()
    w0 = None
    for i in range(n + warm):
        if i == warm:  # measure after one second of motion
            on_measure()
            w0 = time.monotonic()
        depth = -20.0 + (screw.depth_mm + 20.0) * ((i % (5 * rate)) / (5 * rate))
        lateral = 1.5 * np.sin(i / rate * 2.0)
        stamp = time.time()
        feeder.tool(tool_pose_on_screw(screw, depth, lateral), stamp)
        feeder.guard(stamp, screw.id, "ALIGNED" if abs(lateral) < 1.0 else "WARN", **guard_values(screw, depth, lateral))
        t_next += period
        delay = t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return time.monotonic() - w0


def _pct(values, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


#: the pages' readiness, as the rounds wait for it after loading a page afresh
FLOOR_PAGE_READY_JS = "return !!(window.floorMetrics && window.floorMetrics().connected)"
CONSOLE_PAGE_READY_JS = "return !!(window.consoleState && window.consoleState().plan)"


def load_page(browser, url: str, ready_js: str, what: str, timeout_s: float = 20.0) -> None:
    """Load ``url`` afresh, wait (``timeout_s`` bound) until ``ready_js`` returns true, then
    :data:`PAGE_SETTLE_S` for slices and surface to load (every round of floor and stack alike)."""
    browser.driver.get(url)
    _wait(lambda: browser.js(ready_js), timeout_s, what)
    time.sleep(PAGE_SETTLE_S)


def frame_stats(latencies_ms, frame_times_ms) -> dict:
    """A page's sample -> frame percentiles (ms), how many samples it drew and its frame rate (fps)."""
    lat = np.asarray(latencies_ms, dtype=float)
    return {"sample_to_frame_p50_ms": _pct(lat, 50), "sample_to_frame_p95_ms": _pct(lat, 95),
            "sample_to_frame_p99_ms": _pct(lat, 99), "samples_drawn": int(lat.size),
            "fps": round(_fps(frame_times_ms, frame_times_ms[0]) if frame_times_ms else 0.0, 1)}


def run(args: argparse.Namespace) -> BenchResult:
    if getattr(args, "trainee", False):
        from spine_nav.bench import console_trainee

        return console_trainee.run(args, sys.modules[__name__])
    load_before = os.getloadavg()
    with busy_core(getattr(args, "busy_core", False)):
        return _run(args, load_before)


def _run(args: argparse.Namespace, load_before) -> BenchResult:
    import rclpy
    from rclpy.context import Context

    from spine_nav.bench.console_floor import FloorServer
    from spine_nav.console.browser import ConsoleProcess, HeadlessChromium

    seconds = 4.0 if args.quick else args.seconds
    rate = float(args.rate)
    tmp = tempfile.TemporaryDirectory(prefix="spine_nav_bench_console_")
    _say("phantom case")
    case_dir, plan = make_case(args.case or Path(tmp.name) / "case")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
    server = ConsoleProcess(case_dir, env=env)
    proc, sock_port = server.proc, server.port
    floor_server = None
    ctx = Context()
    rclpy.init(context=ctx)
    feeder = make_feeder(ctx)
    try:
        floor_server = FloorServer(env=env)
        screw = plan.screws[0]
        feeder.plan(plan)
        with HeadlessChromium() as browser:
            page_url = f"http://127.0.0.1:{sock_port}/?{args.page_query}"
            browser.driver.get(page_url)
            _wait(lambda: browser.js(CONSOLE_PAGE_READY_JS), 20.0, "console page with the plan")
            # idle baseline: stack quiet, page and server idle
            time.sleep(1.0)
            c0, w0 = _cpu_s(proc.pid), time.monotonic()
            browser.js("window.consoleMetrics(true)")
            time.sleep(2.0)
            idle = browser.js("return window.consoleMetrics(true)")
            idle_cpu = (_cpu_s(proc.pid) - c0) / (time.monotonic() - w0)
            idle_fps = _fps(idle["frame_times_ms"], idle["frame_times_ms"][0] if idle["frame_times_ms"] else 0)

            def floor_round(i: int) -> dict:
                load_page(browser, floor_server.url, FLOOR_PAGE_READY_JS, "bare page connected")
                _say(f"floor: bare page, tool at {rate:g} Hz for {seconds:g} s")
                wall = _feed(feeder, screw, rate, seconds, lambda: browser.js("window.floorMetrics(true)"))
                fm = browser.js("return window.floorMetrics(false)")
                return {**frame_stats(fm["latencies_ms"], fm["frame_times_ms"]), "wall_s": round(wall, 2)}

            def stack_round(i: int) -> dict:
                load_page(browser, page_url, CONSOLE_PAGE_READY_JS, "console page with the plan")
                _say(f"console: tool moving at {rate:g} Hz for {seconds:g} s")
                cpu0 = {}

                def start() -> None:
                    browser.js("window.consoleMetrics(true)")
                    cpu0["c"] = _cpu_s(proc.pid)

                wall = _feed(feeder, screw, rate, seconds, start)
                cpu = (_cpu_s(proc.pid) - cpu0["c"]) / wall
                m = browser.js("return window.consoleMetrics(false)")
                return {**frame_stats(m["latencies_ms"], m["frame_times_ms"]), "server_cpu_cores": round(cpu, 3),
                        "ws_messages_per_s": round(m.get("messages", 0) / wall, 1), "wall_s": round(wall, 2),
                        "page_draw_ms": m.get("timing_ms"),
                        "sample_to_server_send_p50_ms": _pct(m["server_ms"], 50),
                        "sample_to_server_send_p95_ms": _pct(m["server_ms"], 95),
                        "sample_to_page_receive_p50_ms": _pct(m["recv_ms"], 50),
                        "sample_to_page_receive_p95_ms": _pct(m["recv_ms"], 95)}

            pairs = interleave(getattr(args, "rounds", 1), floor_round, stack_round, _say)
        floors, stacks = [p[0] for p in pairs], [p[1] for p in pairs]
        ratio = ratio_rounds(pairs, "sample_to_frame_p95_ms")
        keys = ["sample_to_frame_p95_ms", "sample_to_frame_p99_ms", "fps", "server_cpu_cores"]
        metrics = {**median_of(stacks, keys), "sample_to_frame_p95_vs_floor": ratio["median_ratio"]}
        details = {"samples_sent": int(seconds * rate), "sample_rate_hz": rate, "seconds": seconds,
                   **{k: v for k, v in stacks[-1].items() if k not in keys},
                   "rounds": {"sample_to_frame_p95_ms": ratio, "floor": floors, "console": stacks,
                              "order": "floor, console, floor, console, ... (each page loaded afresh)"}}
        floor = {**median_of(floors, ["sample_to_frame_p50_ms", "sample_to_frame_p95_ms", "sample_to_frame_p99_ms",
                                      "fps"]),
                 "what": "bare server (raw subscription -> stamp over WebSocket) + bare page (one dot, 2D canvas)"}
        return BenchResult("console", metrics,
                           baselines={"idle": {"fps": round(idle_fps, 1), "server_cpu_cores": round(idle_cpu, 3)},
                                      "floor": floor},
                           env={"browser": "Debian chromium (headless, SwiftShader WebGL)", "driver": "selenium",
                                "quick": bool(args.quick), **load_env(args, load_before)},
                           details=details)
    finally:
        feeder.destroy_node()
        rclpy.shutdown(context=ctx)
        server.close()
        if floor_server is not None:
            floor_server.close()
        tmp.cleanup()


def _wait(pred, timeout_s: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")
