"""End-to-end: the console page in a real headless Chromium (Debian chromium + chromedriver, Selenium).

The stack side is real: `spine-nav console` runs as its own process (web server + ROS bridge) and a
feeder rclpy node in this process publishes plan/registered, tracking/tool_tip and guard/status over
DDS, replaying a tool pass down a planned screw of the phantom case. Screenshots of each guard state
go to build/test-artifacts/console/ (override with SPINE_NAV_ARTIFACTS).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import free_tcp_port, wait_until

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SPINE_NAV_ARTIFACTS", REPO / "build" / "test-artifacts")) / "console"
PUBLISH_HZ = 100.0
#: waits on the page for what a key press or the stack's last message changes: Chromium, the console server and
#: the feeder share 2 loaded cores (5 s was short for a stalled renderer); each returns as soon as it holds
BROWSER_S = 15.0


class Stack:
    """The feeder's 'stack': keeps publishing the current tool sample + guard verdict at PUBLISH_HZ
    from one thread (the feeder node is never spun, so no executor/publish thread clash)."""

    def __init__(self, feeder, screw) -> None:
        self.feeder, self.screw = feeder, screw
        self.sample = None  # (T_mm, state, values); state None: publish the tool only (a real guard judges it)
        self.last_guard = None
        self.health_on = True  # off while a real tracker_bridge is the tracking/health source
        self._run = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def set(self, depth_mm: float, lateral_mm: float, state: str | None, **extra) -> None:
        from spine_nav.bench.console import guard_values, tool_pose_on_screw

        values = {**guard_values(self.screw, depth_mm, lateral_mm), "angular_error_deg": 0.8, **extra}
        self.sample = (tool_pose_on_screw(self.screw, depth_mm, lateral_mm), state, values)
        self._run.set()

    def pause(self) -> None:
        self._run.clear()

    def _loop(self) -> None:
        i = 0
        while not self._stop.is_set():
            if i % 10 == 0:  # the slower streams, at 10 Hz like the stack's watchdog / arm / registration
                self.feeder.level("L4", True, 0.93, 0.41)
                if self.health_on:
                    self.feeder.health("stylus", self._run.is_set(), 100.0 if self._run.is_set() else 0.0)
                self.feeder.arm("TRACKING", self.screw.id)
            i += 1
            if self._run.is_set() and self.sample is not None:
                T, state, values = self.sample
                stamp = time.time()
                self.feeder.tool(T, stamp)
                if state is not None:
                    self.last_guard = self.feeder.guard(stamp, self.screw.id, state, reason=f"test {state}", **values)
            time.sleep(1.0 / PUBLISH_HZ)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


SHARED_ROS_DOMAIN = True  # the module fixture's feeder and console are ROS participants all tests use

@pytest.fixture(scope="module")
def console(tmp_path_factory):
    import rclpy
    from rclpy.context import Context

    from spine_nav.bench.console import make_case, make_feeder
    from spine_nav.console.browser import ConsoleProcess, HeadlessChromium

    case_dir, plan = make_case(tmp_path_factory.mktemp("console_case"), levels=("L4",))
    server = ConsoleProcess(case_dir)
    proc = server.proc
    ctx = Context()
    rclpy.init(context=ctx)
    feeder = make_feeder(ctx)
    stack = Stack(feeder, plan.screws[0])
    browser = None
    try:
        browser = HeadlessChromium()
        feeder.plan(plan)
        browser.driver.get(server.url)
        yield {"browser": browser, "stack": stack, "plan": plan, "case_dir": case_dir, "feeder": feeder, "proc": proc}
    finally:
        stack.close()
        if browser is not None:
            browser.close()
        feeder.destroy_node()
        rclpy.shutdown(context=ctx)
        server.close()


def _state(b) -> dict:
    return b.js("return window.consoleState ? window.consoleState() : null") or {}


def _band(b) -> str:
    return b.text("guard-state")


def _shot(b, name: str) -> Path:
    return b.screenshot(ARTIFACTS / f"console_{name}.png")


def test_page_loads_the_phantom_case_and_shows_the_plans_screws(console):
    b, plan = console["browser"], console["plan"]
    assert wait_until(lambda: len((_state(b).get("plan") or {}).get("screws", [])) == len(plan.screws), timeout_s=20)
    assert [s["id"] for s in _state(b)["plan"]["screws"]] == plan.ids
    assert str(console["case_dir"]) in b.text("case")
    # slices arrive for all three views (centred on the active screw's entry while no tool is seen)
    assert wait_until(lambda: all(v is not None for v in _state(b)["slices"].values()), timeout_s=20), _state(b)["slices"]
    assert b.js("return document.querySelector('#view3d canvas') !== null")
    assert wait_until(lambda: "accepted" in b.text("levels") and "stylus" in b.text("health")
                      and "TRACKING" in b.text("arm"), timeout_s=10), (b.text("levels"), b.text("health"), b.text("arm"))


def test_page_follows_the_tool_and_readout_matches_the_guard(console):
    b, stack, screw = console["browser"], console["stack"], console["plan"].screws[0]
    assert wait_until(lambda: _state(b).get("plan") is not None, timeout_s=20)
    seen_slices = []
    # replay a pass down the screw: approach, aligned, a lateral drift (WARN), then full depth
    passes = [(-15.0, 0.3, "APPROACH"), (5.0, 0.3, "ALIGNED"), (15.0, 1.4, "WARN"), (screw.depth_mm, 0.4, "ALIGNED")]
    for depth, lateral, state in passes:
        stack.set(depth, lateral, state)
        g_expected = f"{lateral:.1f}"
        assert wait_until(lambda: _band(b) == state and b.text("v-lateral") == g_expected
                          and b.text("v-depth") == f"{depth:.1f}", timeout_s=10), (state, _band(b), b.text("v-depth"))
        # the slices follow the tip (a new coronal slice is fetched as the tip moves along y: every pass
        # moves it >= 10 mm along the screw, which runs anterior)
        assert wait_until(lambda: _state(b)["slices"]["coronal"] not in seen_slices, timeout_s=15), seen_slices
        seen_slices.append(_state(b)["slices"]["coronal"])
        g = stack.last_guard
        for el, value in (("v-lateral", g.lateral_error_mm), ("v-angular", g.angular_error_deg),
                          ("v-depth", g.depth_mm), ("v-remaining", g.remaining_mm), ("v-entry", g.entry_offset_mm)):
            assert b.text(el) == f"{value:.1f}", el
        assert b.text("screw-id") == screw.id
        # the tool pose comes on its own topic: it may be drawn a little after the guard's numbers
        def tool_at_sample() -> bool:
            tool = _state(b).get("tool")
            return bool(tool) and np.allclose(np.array(tool["T_mm"]).reshape(4, 4)[:3, 3], stack.sample[0][:3, 3],
                                              atol=1e-3)
        assert wait_until(tool_at_sample, timeout_s=10), _state(b).get("tool")
        _shot(b, state if state != "ALIGNED" or depth < 10 else "ALIGNED_at_depth")
    assert len(set(seen_slices)) >= 3, seen_slices
    # the pass reached planned depth: the training view lists the screw with a grade
    assert wait_until(lambda: screw.id in b.text("training"), timeout_s=BROWSER_S)
    assert _state(b)["training"][0]["grade"] == "A"


def test_page_shows_violation_and_tracking_lost_as_the_guard_reports_them(console):
    b, stack = console["browser"], console["stack"]
    stack.set(12.0, 3.2, "VIOLATION")
    assert wait_until(lambda: _band(b) == "VIOLATION" and b.text("guard-reason") == "test VIOLATION"
                      and b.text("v-lateral") == "3.2", timeout_s=10), (_band(b), b.text("guard-reason"))
    assert "state-VIOLATION" in b.js("return document.getElementById('guard-band').className")
    _shot(b, "VIOLATION")
    stack.set(12.0, 3.2, "TRACKING_LOST")
    assert wait_until(lambda: _band(b) == "TRACKING_LOST", timeout_s=10)
    _shot(b, "TRACKING_LOST")
    stack.set(8.0, 0.2, "ALIGNED")
    assert wait_until(lambda: _band(b) == "ALIGNED", timeout_s=10)


def test_page_says_stale_when_the_stack_stops_and_recovers(console):
    b, stack = console["browser"], console["stack"]
    stack.set(8.0, 0.2, "ALIGNED")
    assert wait_until(lambda: _band(b) == "ALIGNED" and b.text("conn") == "live", timeout_s=10)
    stack.pause()
    t_last_ms = time.time() * 1000.0  # the stack's last sample left at most one period before this
    assert wait_until(lambda: _band(b) == "STALE", timeout_s=BROWSER_S, period_s=0.005)
    # reported, not asserted (timing targets belong to benchmarks): page clock = host clock
    print(f"page said STALE {_state(b)['staleAtMs'] - t_last_ms:.0f} ms after the last sample")
    # The whole page must agree: band, badge, readout cleared, overlay shown. Read them together, in one
    # script, and wait (bounded) for that: on a loaded machine the console server's ROS side can deliver a
    # backlog after the page first said STALE, and its heartbeat then rightly shows the stack live again
    # for a moment (seen in the fresh-machine run) before it goes stale for good.
    def all_stale() -> bool:
        return b.js("const t = (id) => document.getElementById(id).textContent;"
                    "return t('guard-state') === 'STALE' && t('conn') === 'stale' && t('v-lateral') === '—'"
                    " && !document.getElementById('stale-overlay').hidden")
    assert wait_until(all_stale, timeout_s=BROWSER_S, period_s=0.01)
    _shot(b, "STALE")
    stack.set(8.0, 0.2, "ALIGNED")
    assert wait_until(lambda: _band(b) == "ALIGNED" and b.text("conn") == "live", timeout_s=10)


def test_keyboard_selects_next_and_previous_screw(console):
    from selenium.webdriver.common.by import By

    b, plan = console["browser"], console["plan"]
    console["stack"].pause()  # no guard: the page's own selection decides the active screw
    assert wait_until(lambda: _band(b) == "STALE", timeout_s=10), _band(b)  # ... and none is still arriving
    first = _state(b)["selected"]
    body = b.driver.find_element(By.TAG_NAME, "body")
    body.send_keys("n")
    assert wait_until(lambda: _state(b)["selected"] != first, timeout_s=BROWSER_S)
    assert _state(b)["selected"] in plan.ids
    body.send_keys("p")
    assert wait_until(lambda: _state(b)["selected"] == first, timeout_s=BROWSER_S)
    win = b.js("return +document.getElementById('win').value")
    body.send_keys("W")
    assert wait_until(lambda: b.js("return +document.getElementById('win').value") == win + 100, timeout_s=BROWSER_S)


READOUT = (("v-lateral", "lateral_error_mm"), ("v-angular", "angular_error_deg"), ("v-depth", "depth_mm"),
           ("v-remaining", "remaining_mm"), ("v-entry", "entry_offset_mm"))


def _start_probe(b) -> None:
    """Sample the page every 15 ms inside the browser (a WebDriver round trip is slower than the
    page changes): band sequence, reasons, coronal slice indices, and (readout text, guard value)
    pairs of what the last frame drew."""
    b.js("""clearInterval(window.__probe);
        window.__seen = []; window.__why = []; window.__slices = []; window.__checks = [];
        const ids = %s;
        window.__probe = setInterval(() => {
          const s = window.consoleState(), g = s.drawnGuard, txt = (i) => document.getElementById(i).textContent;
          const band = txt('guard-state'), why = band + ': ' + txt('guard-reason');
          if (window.__seen[window.__seen.length - 1] !== band) window.__seen.push(band);
          if (window.__why[window.__why.length - 1] !== why) window.__why.push(why);
          if (!window.__slices.includes(s.slices.coronal)) window.__slices.push(s.slices.coronal);
          if (g && band === g.state_name && g.lateral_error_mm !== null && window.__checks.length < 5000)
            window.__checks.push({screw: txt('screw-id'), guard: g, texts: ids.map(([el, key]) => [txt(el), g[key]])});
        }, 15);""" % json.dumps(READOUT))


def _probe(b) -> dict:
    return b.js("return {seen: window.__seen, why: window.__why, slices: window.__slices, checks: window.__checks}")


def _assert_readout_matches_guard(checks: list) -> None:
    assert len(checks) > 5, "no frame drew a judged guard status"
    for c in checks:  # readout == guard's numbers after rounding, for every sampled frame
        for text, value in c["texts"]:
            assert text == f"{value:.1f}", (text, value, c["guard"]["state_name"])
        assert c["screw"] == c["guard"]["active_screw_id"]


def _from_real_guard(g: dict | None) -> bool:
    """A guard status drawn by the page that the real trajectory_guard sent (the feeder's fake guard says "test ...")."""
    return bool(g) and not str(g.get("reason", "")).startswith("test ")


def _real_aligned(checks: list, lateral_mm: float, depth_mm: float) -> list:
    return [c["guard"] for c in checks if _from_real_guard(c["guard"]) and c["guard"]["state_name"] == "ALIGNED"
            and abs(c["guard"]["lateral_error_mm"] - lateral_mm) < 0.05 and abs(c["guard"]["depth_mm"] - depth_mm) < 0.05]


def test_page_follows_the_real_trajectory_guard(console):
    """The real trajectory_guard node (composed like `spine-nav up`) judges the tool samples; the
    page shows its verdicts and numbers, and the page's screw selection reaches the guard."""
    from selenium.webdriver.common.by import By

    from spine_nav.nodes.runner import ComposedStack

    b, stack, plan = console["browser"], console["stack"], console["plan"]
    screw = plan.screws[0]
    stack.pause()
    assert wait_until(lambda: _band(b) == "STALE", timeout_s=10), _band(b)  # no fake guard status left
    # a loaded CI machine can delay samples: judge geometry, not sample age (that is the bench's job)
    with ComposedStack(["trajectory_guard"], params_file=REPO / "config" / "nodes.yaml",
                       extra_ros_args=["-p", "trajectory_guard:stale_after_s:=60.0",
                                       "-p", "trajectory_guard:health_tools:=[stylus]"]):
        _start_probe(b)
        stack.set(10.0, 0.3, None)
        # the real guard's verdict on THIS sample drawn (not merely an ALIGNED band: a late status of the
        # feeder's fake guard from an earlier test also says ALIGNED, at 0.2 mm)
        assert wait_until(lambda: _real_aligned(_probe(b)["checks"], 0.3, 10.0), timeout_s=20, period_s=0.1), \
            _probe(b)["why"][-10:]
        stack.set(10.0, 3.0, None)
        assert wait_until(lambda: _band(b) == "VIOLATION" and _from_real_guard(_state(b)["drawnGuard"]),
                          timeout_s=15), _probe(b)["why"][-10:]
        _shot(b, "real_guard_VIOLATION")
        # the page's "next screw" goes to the guard's select_screw service
        b.driver.find_element(By.TAG_NAME, "body").send_keys("n")
        assert wait_until(lambda: (_state(b)["drawnGuard"] or {}).get("active_screw_id") == plan.screws[1].id,
                          timeout_s=15), (_state(b)["drawnGuard"], _state(b)["lastReply"])
        stack.pause()  # tool gone (tracker health: not visible): the guard reports TRACKING_LOST
        assert wait_until(lambda: "TRACKING_LOST" in _probe(b)["seen"], timeout_s=15), _probe(b)["why"][-10:]
        probe = _probe(b)
    assert wait_until(lambda: _band(b) == "STALE", timeout_s=10), _band(b)  # the guard stopped
    _assert_readout_matches_guard(probe["checks"])
    real = [c["guard"] for c in probe["checks"] if _from_real_guard(c["guard"])]
    aligned = [g for g in real if g["state_name"] == "ALIGNED"]
    assert aligned and all(abs(g["lateral_error_mm"] - 0.3) < 0.05 and abs(g["depth_mm"] - 10.0) < 0.05
                           for g in aligned), aligned[-3:]
    assert any(g["active_screw_id"] == screw.id for g in real)


def _write_recording(path: Path, screw, t0_s: float, rate_hz: float = 100.0) -> None:
    """An OpenIGTLink recording (case.jsonl, the `spine-nav record` format) of a stylus pass down
    ``screw``: 2 s approach and insertion to 60% depth, then 1.5 s drifted 3 mm sideways; reference and
    stylus TRANSFORMs per sample, tracker timestamps from ``t0_s`` (the replay keeps them)."""
    import json

    from spine_nav.bench.console import tool_pose_on_screw
    from spine_nav.geometry import make_transform

    T_tracker_ref = make_transform(np.eye(3), [10.0, -20.0, -1200.0])
    T_tip_in_tool = make_transform(np.eye(3), [0.0, 0.0, 150.0])  # config/nodes.yaml tip_offset_mm
    lines, n_in, n_drift = [], int(2.0 * rate_hz), int(1.5 * rate_hz)
    for i in range(n_in + n_drift):
        depth = -8.0 + (0.6 * screw.depth_mm + 8.0) * min(1.0, i / n_in)
        lateral = 0.2 if i < n_in else 3.0
        T_tracker_stylus = T_tracker_ref @ tool_pose_on_screw(screw, depth, lateral) @ np.linalg.inv(T_tip_in_tool)
        t = t0_s + i / rate_hz
        for dev, T in (("ReferenceToTracker", T_tracker_ref), ("StylusToTracker", T_tracker_stylus)):
            lines.append(json.dumps({"type": "TRANSFORM", "timestamp_s": t, "received_s": t, "device": dev,
                                     "matrix": T.tolist()}))
    path.write_text("\n".join(lines) + "\n")


def test_page_follows_a_replayed_recording_through_bridge_and_guard(console, tmp_path, monkeypatch):
    """`spine-nav replay` (OpenIGTLink over TCP) -> tracker_bridge -> trajectory_guard -> console -> page."""
    from spine_nav.nodes.runner import ComposedStack

    b, stack, screw = console["browser"], console["stack"], console["plan"].screws[0]
    stack.pause()
    assert wait_until(lambda: _band(b) == "STALE", timeout_s=10), _band(b)
    # one tracking/health source per tool, as in a real stack: the bridge below, not the feeder (whose
    # "stylus not visible" at 10 Hz would otherwise contradict the bridge's health to the real guard)
    monkeypatch.setattr(stack, "health_on", False)  # restored after the test
    port = free_tcp_port()
    rec = tmp_path / "case.jsonl"
    # the recording keeps its tracker timestamps, so the replayed samples are seconds old when judged
    # (process start-up): the guard's sample-age limit is raised for this test, not its geometry
    _write_recording(rec, screw, time.time())
    with ComposedStack(["tracker_bridge", "trajectory_guard"], params_file=REPO / "config" / "nodes.yaml",
                       extra_ros_args=["-p", f"tracker_bridge:port:={port}", "-p", "trajectory_guard:stale_after_s:=60.0",
                                       # stylus + reference health (default health_tools; no arm marker recorded)
                                       "-p", "tracker_bridge:timeout_ms:=1000.0"]):
        console["feeder"].plan(console["plan"])  # (transient-local anyway; re-sent for a fresh guard)
        # the guard is up and has the plan when it reports the missing tool (not NO_PLAN)
        assert wait_until(lambda: _band(b) == "TRACKING_LOST", timeout_s=20), (_band(b), b.text("guard-reason"))
        _start_probe(b)
        replay = subprocess.Popen([sys.executable, "-m", "spine_nav.cli.main", "replay", str(rec), "--serve", str(port),
                                   "--host", "127.0.0.1", "--speed", "0.5"], stderr=subprocess.PIPE, text=True)
        try:
            assert replay.wait(30) == 0, replay.stderr.read()
            # the recording ends: the bridge's watchdog reports the stylus lost, the guard TRACKING_LOST
            # (a TRACKING_LOST after the VIOLATION: the one before the replay started must not count)
            def lost_after_violation() -> bool:
                seen = _probe(b)["seen"]
                return "VIOLATION" in seen and "TRACKING_LOST" in seen[seen.index("VIOLATION"):]
            assert wait_until(lost_after_violation, timeout_s=15), _probe(b)["why"][-10:]
        finally:
            if replay.poll() is None:
                replay.kill()
        probe = _probe(b)
    seen = probe["seen"]
    assert "ALIGNED" in seen and "VIOLATION" in seen and "TRACKING_LOST" in seen, probe["why"][:30]
    assert seen.index("ALIGNED") < seen.index("VIOLATION") < len(seen) - 1 - seen[::-1].index("TRACKING_LOST"), seen
    assert len(set(probe["slices"]) - {None}) >= 3, probe["slices"]  # the coronal slice followed the tip
    _assert_readout_matches_guard(probe["checks"])


def test_server_process_survived(console):
    assert console["proc"].poll() is None
