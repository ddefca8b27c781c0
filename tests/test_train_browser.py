"""Trainee mode in a real headless Chromium (Selenium), issue #21: `spine-nav train` serves the console
in trainee mode; keys drive the simulated tool through sim_tracker (OpenIGTLink) -> tracker_bridge ->
trajectory_guard -> console; ending a screw grades it against the phantom's cortex.
Screenshots go to build/test-artifacts/training/ (override with SPINE_NAV_ARTIFACTS); the measured
input -> tool drawn latencies to training_latency.json there (reported, never asserted)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import train_page, wait_until

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SPINE_NAV_ARTIFACTS", REPO / "build" / "test-artifacts")) / "training"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with train_page(tmp_path_factory.mktemp("train_page"), "tess",
                    ready=lambda b: (_ts(b) or {}).get("active")) as p:
        yield p


def _ts(b) -> dict:
    return b.js("return window.traineeState ? window.traineeState() : null") or {}


def _keys(b, keys: str | list, pause_s: float = 0.0) -> None:
    from selenium.webdriver.common.by import By

    body = b.driver.find_element(By.TAG_NAME, "body")
    for k in keys:
        body.send_keys(k)
        if pause_s:
            time.sleep(pause_s)


def _tool(b) -> dict:
    return (_ts(b).get("status") or {}).get("tool") or {}


def _drive_and_end(b, screw_id: str, lateral_keys: int = 0) -> dict:
    from selenium.webdriver.common.keys import Keys

    assert wait_until(lambda: (_ts(b).get("status") or {}).get("screw_id") == screw_id, timeout_s=20), _ts(b)
    n_before = len(_ts(b)["results"])
    _keys(b, [Keys.ARROW_RIGHT] * lateral_keys)
    assert wait_until(lambda: abs(_tool(b).get("lat_mm", -1) - lateral_keys) < 1e-6, timeout_s=60), _tool(b)
    depth = _tool(b)["planned_depth_mm"]
    steps = int(round(depth - _tool(b)["depth_mm"]))
    _keys(b, "f" * steps)
    assert wait_until(lambda: abs(_tool(b)["depth_mm"] - (depth - (depth % 1.0))) < 1e-6 or
                      abs(_tool(b)["depth_mm"] - depth) < 1.0, timeout_s=60), _tool(b)
    rest = depth - _tool(b)["depth_mm"]
    _keys(b, "F" * int(round(rest / 0.25)))  # the last fraction of a millimetre in quarter steps
    assert wait_until(lambda: abs(_tool(b)["depth_mm"] - depth) <= 0.13, timeout_s=60), _tool(b)
    # the tracked tool is drawn where the keys put it (the real path round trip) before the screw ends
    time.sleep(0.5)
    _keys(b, Keys.ENTER)
    assert wait_until(lambda: len(_ts(b)["results"]) > n_before, timeout_s=120), \
        (_ts(b), b.js("return window.consoleState().lastReply"))
    return _ts(b)["results"][-1]


def test_keys_along_the_plan_place_a_grade_a_screw(page):
    b, case = page["b"], page["case"]
    sid = case.plan.ids[0]
    r = _drive_and_end(b, sid)
    assert r["screw_id"] == sid and r["gr_grade"] == "A" and r["grade_basis"] == "cortex", r
    assert r["tip_error_mm"] < 0.2 and r["angular_error_deg"] < 1e-6, r
    assert "grade A" in b.text("trainee-result")
    assert b.js("return !document.getElementById('trainee-picture').hidden && "
                "document.getElementById('trainee-picture').naturalWidth > 100")
    b.screenshot(ARTIFACTS / "trainee_grade_A.png")


def test_keys_4_mm_lateral_give_a_breach_grade_and_show_the_breach(page):
    b, case = page["b"], page["case"]
    sid = case.plan.ids[1]
    r = _drive_and_end(b, sid, lateral_keys=4)
    assert r["screw_id"] == sid and r["gr_grade"] in "BCDE" and r["breach_mm"] > 0.5, r
    assert abs(r["entry_error_mm"] - 4.0) < 0.2, r
    text = b.text("trainee-result")
    assert f"grade {r['gr_grade']}" in text and "breach" in text
    assert "breach" in b.js("return document.getElementById('trainee-result').className")  # shown as a breach
    assert r["guard_violations"] >= 1  # 4 mm off the line: the guard said VIOLATION on the way
    b.screenshot(ARTIFACTS / "trainee_breach.png")
    assert wait_until(lambda: b.js("return document.querySelectorAll('#trainee-leaderboard tr').length") >= 2, 15)


def test_input_to_tool_drawn_latency_is_measured(page):
    """Spaced single key presses (one input at a time): each is resolved when the tracked tool coming back
    through the stack is drawn at the new pose. Reported to ARTIFACTS; the target (p95 <= 50 ms) is for the
    benchmark on a quiet machine, not asserted here."""
    b = page["b"]
    b.js("window.traineeMetrics(true)")
    _keys(b, ["b", "f"] * 20, pause_s=0.25)
    assert wait_until(lambda: len(b.js("return window.traineeMetrics()")["input_to_drawn_ms"]) >= 30, timeout_s=60), \
        b.js("return window.traineeMetrics()")
    lat = b.js("return window.traineeMetrics()")["input_to_drawn_ms"]
    assert all(0 < v < 5000 for v in lat)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "training_latency.json").write_text(json.dumps(
        {"input_to_drawn_ms": lat, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
         "n": len(lat)}, indent=1))


def test_a_click_on_a_slice_sets_the_entry_there(page):
    """Clicking the axial slice moves the tool's entry to the clicked point (projected on the plane through
    the planned entry normal to the screw): the offset changes and the tool goes back above the entry."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    b = page["b"]
    before = dict(_tool(b))
    # a click maps through the axial slice on screen: none before the slice arrived (slow under load)
    assert wait_until(lambda: (b.js("return window.consoleState()") or {}).get("slices", {}).get("axial") is not None,
                      timeout_s=60), b.js("return window.consoleState()")
    canvas = b.driver.find_element(By.ID, "axial")
    moved = lambda: (_tool(b).get("lat_mm"), _tool(b).get("cra_mm")) != (before.get("lat_mm"), before.get("cra_mm"))  # noqa: E731
    for _ in range(3):  # the same click again (it sets the same entry) if the page was busy and missed it
        ActionChains(b.driver).move_to_element_with_offset(canvas, 30, 20).click().perform()
        if wait_until(moved, timeout_s=10):
            break
    assert moved(), (before, _tool(b))
    assert _tool(b)["depth_mm"] <= -20.0


def test_the_session_is_in_the_database_and_the_report(page):
    b, proc, db = page["b"], page["proc"], page["db"]
    _keys(b, "ff")  # a screw left in progress when the session closes: the attempt stays unfinished
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, page["log"].read_text()[-3000:]
    res = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "train", "report", "--db", str(db), "--trainee",
                          "tess", "--json"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    [a] = json.loads(res.stdout)["attempts"]
    assert a["source"] == "page" and a["status"] == "unfinished", a
    grades = [s["gr_grade"] for s in a["screws"]]
    assert grades[0] == "A" and grades[1] in "BCDE", a["screws"]
    assert a["tool_samples"] > 100
    html = page["dir"] / "report.html"
    res = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "train", "report", "--db", str(db), "--html", str(html)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0 and "tess" in res.stdout
    b.driver.get(html.as_uri())
    assert "tess" in b.text("leaderboard")
    b.screenshot(ARTIFACTS / "training_report.png")
