"""`spine-nav bench console --trainee`: the console in trainee mode (issue #21), in a real headless Chromium.

Set-up (all real): a phantom case; ``spine-nav train --case CASE`` as its own process (the trainee stack:
sim_tracker over OpenIGTLink -> tracker_bridge -> trajectory_guard, and the console server in trainee
mode); the bare floor server (:mod:`spine_nav.bench.console_floor`) as its own process; a feeder rclpy
node in this process; Debian's Chromium (Selenium). Both servers run for the whole benchmark.

Trainee round: the trainee page is loaded afresh, then single keys ``f`` / ``b`` (advance / withdraw the
drill 1 mm) are pressed ``--key-pause`` seconds apart for ``--seconds``. Each key goes page -> WebSocket
-> server -> ``sim/tool_tip_truth`` -> simulated tracker (100 Hz) -> OpenIGTLink -> bridge -> DDS ->
console bridge -> WebSocket -> page. Metrics:
    input_to_tool_drawn_p95_ms / _p50_ms: ``window.traineeMetrics()``: key event -> end of the first
        animation frame that draws a tracked tool nearer the new commanded tip than the previous one.
        Target (issue #21): p95 <= 50 ms.
    sample_to_frame_p95_ms: the console's own ``window.consoleMetrics()`` on the same page meanwhile
        (tracker sample stamp -> frame that draws it), as ``spine-nav bench console`` measures it.
    fps, server_cpu_cores (CPU of the whole ``spine-nav train`` process: stack + console server).
Floor round (same run, interleaved floor, trainee, floor, ...): the bare page loaded afresh; the feeder
publishes ``tracking/tool_tip`` at the trainee tracker's rate (100 Hz) while the same keys are pressed at
the same pace. The bare page measures sample -> frame as the console does, and key -> WebSocket -> bare
server echo -> frame (``input_to_drawn_ms``): the round trip with the whole stack taken out.
Headline ratios: ``input_to_tool_drawn_p95_vs_floor`` and ``sample_to_frame_p95_vs_floor`` (median over
the rounds of trainee p95 / floor p95).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from spine_nav.bench import BenchResult
from spine_nav.bench.floor import busy_core, interleave, load_env, median_of, ratio_rounds

#: The simulated tracker's rate in trainee mode (spine_nav.cli.train.TrainStack: sim_tracker rate_hz).
TRAINEE_TRACKER_HZ = 100.0
#: Issue #21: input -> tool drawn on the page, p95.
TARGET_INPUT_TO_DRAWN_P95_MS = 50.0


def _say(msg: str) -> None:
    sys.stderr.write(f"[bench console --trainee] {msg}\n")
    sys.stderr.flush()


def _up(port: int) -> bool:
    from spine_nav.console.browser import console_answers

    return console_answers(f"http://127.0.0.1:{port}/")


def run(args, base) -> BenchResult:
    """``base``: :mod:`spine_nav.bench.console` (its case, feeder and measurement helpers), passed in by it so
    this module does not import it back."""
    load_before = os.getloadavg()
    with busy_core(getattr(args, "busy_core", False)):
        return _run(args, load_before, base)


def _press(browser, keys: list[str], pause_s: float) -> None:
    from selenium.webdriver.common.by import By

    body = browser.driver.find_element(By.TAG_NAME, "body")
    for k in keys:
        body.send_keys(k)
        time.sleep(pause_s)


def _feed_until(feeder, screw, rate: float, stop: threading.Event, pose) -> None:
    """Publish the tool (``tracking/tool_tip``) moving along ``screw`` at ``rate`` until ``stop``."""
    period, i, t_next = 1.0 / rate, 0, time.monotonic()
    while not stop.is_set():
        depth = -20.0 + (screw.depth_mm + 20.0) * ((i % (5 * rate)) / (5 * rate))
        feeder.tool(pose(screw, depth, 1.5 * np.sin(i / rate * 2.0)), time.time())
        i += 1
        t_next += period
        delay = t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _run(args, load_before, base) -> BenchResult:
    import rclpy
    from rclpy.context import Context

    _cpu_s, _pct, _wait = base._cpu_s, base._pct, base._wait
    load_page, frame_stats = base.load_page, base.frame_stats
    make_case, make_feeder = base.make_case, base.make_feeder
    from spine_nav.bench.console_floor import FloorServer
    from spine_nav.children import stop_child
    from spine_nav.console.browser import HeadlessChromium
    from spine_nav.tracking.transport import free_tcp_port

    seconds = 4.0 if args.quick else args.seconds
    pause = float(args.key_pause)
    if not pause > 0:
        raise ValueError(f"--key-pause {pause}: must be > 0")
    keys = ["f", "b"] * max(1, int(seconds / pause / 2))
    tmp = tempfile.TemporaryDirectory(prefix="spine_nav_bench_trainee_")
    _say("phantom case")
    case_dir, plan = make_case(args.case or Path(tmp.name) / "case")
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
    port = free_tcp_port()
    log = open(Path(tmp.name) / "train.log", "w")
    train = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "train", "--case", str(case_dir),
                              "--trainee", "bench", "--db", str(Path(tmp.name) / "bench.db"), "--port", str(port)],
                             stdout=log, stderr=subprocess.STDOUT, env=env)
    floor_server = None
    ctx = Context()
    rclpy.init(context=ctx)
    feeder = make_feeder(ctx)
    try:
        _wait(lambda: _up(port) or train.poll() is not None, 240.0, "spine-nav train serving the page")
        if train.poll() is not None:
            raise RuntimeError(f"spine-nav train exited with {train.returncode}: "
                               f"{(Path(tmp.name) / 'train.log').read_text()[-2000:]}")
        floor_server = FloorServer(env=env)
        screw = plan.screws[0]
        url = f"http://127.0.0.1:{port}/"
        with HeadlessChromium(page_load_timeout_s=120.0) as browser:

            def floor_round(i: int) -> dict:
                load_page(browser, floor_server.url, base.FLOOR_PAGE_READY_JS, "bare page connected")
                _say(f"floor: bare page, tool at {TRAINEE_TRACKER_HZ:g} Hz, {len(keys)} keys {pause:g} s apart")
                stop = threading.Event()
                feed = threading.Thread(target=_feed_until, args=(feeder, screw, TRAINEE_TRACKER_HZ, stop,
                                                                  base.tool_pose_on_screw), daemon=True)
                feed.start()
                time.sleep(1.0)  # one second of motion before measuring, as the console bench
                browser.js("window.floorMetrics(true)")
                _press(browser, keys, pause)
                time.sleep(0.5)
                fm = browser.js("return window.floorMetrics(false)")
                stop.set()
                feed.join(10.0)
                inp = np.asarray(fm["input_to_drawn_ms"], dtype=float)
                return {"input_to_drawn_p50_ms": _pct(inp, 50), "input_to_drawn_p95_ms": _pct(inp, 95),
                        "inputs_drawn": int(inp.size), **frame_stats(fm["latencies_ms"], fm["frame_times_ms"])}

            def trainee_round(i: int) -> dict:
                load_page(browser, url, "return !!(window.traineeState && window.traineeState().active)",
                          "trainee page active", timeout_s=60.0)
                _say(f"trainee: {len(keys)} keys {pause:g} s apart")
                browser.js("window.consoleMetrics(true); window.traineeMetrics(true)")
                c0, w0 = _cpu_s(train.pid), time.monotonic()
                _press(browser, keys, pause)
                time.sleep(0.5)
                wall = time.monotonic() - w0
                cpu = (_cpu_s(train.pid) - c0) / wall
                tm = browser.js("return window.traineeMetrics(false)")
                cm = browser.js("return window.consoleMetrics(false)")
                inp = np.asarray(tm["input_to_drawn_ms"], dtype=float)
                return {"input_to_tool_drawn_p50_ms": _pct(inp, 50), "input_to_tool_drawn_p95_ms": _pct(inp, 95),
                        "input_to_tool_drawn_p99_ms": _pct(inp, 99), "inputs": len(keys),
                        "inputs_drawn": int(inp.size), "inputs_unresolved": int(tm.get("pending", 0)),
                        **frame_stats(cm["latencies_ms"], cm["frame_times_ms"]),
                        "server_cpu_cores": round(cpu, 3), "wall_s": round(wall, 2)}

            pairs = interleave(getattr(args, "rounds", 1), floor_round, trainee_round, _say)
        floors, stacks = [p[0] for p in pairs], [p[1] for p in pairs]
        r_input = ratio_rounds(pairs, "input_to_drawn_p95_ms", "input_to_tool_drawn_p95_ms")
        r_sample = ratio_rounds(pairs, "sample_to_frame_p95_ms")
        keys_m = ["input_to_tool_drawn_p95_ms", "input_to_tool_drawn_p50_ms", "sample_to_frame_p95_ms", "fps",
                  "server_cpu_cores"]
        metrics = {**median_of(stacks, keys_m), "input_to_tool_drawn_p95_vs_floor": r_input["median_ratio"],
                   "sample_to_frame_p95_vs_floor": r_sample["median_ratio"]}
        floor = {**median_of(floors, ["input_to_drawn_p50_ms", "input_to_drawn_p95_ms", "sample_to_frame_p50_ms",
                                      "sample_to_frame_p95_ms", "fps"]),
                 "what": "bare server (raw tracking/tool_tip -> stamp over WebSocket; keys echoed at once) + bare "
                         "page (one dot, 2D canvas), fed at the trainee tracker's rate"}
        details = {"target_input_to_tool_drawn_p95_ms": TARGET_INPUT_TO_DRAWN_P95_MS, "key_pause_s": pause,
                   "keys_per_round": len(keys), "tracker_rate_hz": TRAINEE_TRACKER_HZ,
                   "rounds": {"input_to_tool_drawn_p95_ms": r_input, "sample_to_frame_p95_ms": r_sample,
                              "floor": floors, "trainee": stacks,
                              "order": "floor, trainee, floor, trainee, ... (each page loaded afresh)"}}
        return BenchResult("console", metrics, baselines={"floor": floor},
                           env={"mode": "trainee", "browser": "Debian chromium (headless, SwiftShader WebGL)",
                                "driver": "selenium", "quick": bool(args.quick), **load_env(args, load_before)},
                           details=details)
    finally:
        feeder.destroy_node()
        rclpy.shutdown(context=ctx)
        if floor_server is not None:
            floor_server.close()
        import signal

        stop_child(train, grace_s=30.0, first=signal.SIGINT)  # Ctrl-C: the session closes its attempt
        log.close()
        tmp.cleanup()
