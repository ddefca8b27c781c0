"""Trainee mode's page in robot mode, in a real headless Chromium (Selenium), issue #21:
`spine-nav train --mode robot` serves the console with the simulated arm (sim_arm MuJoCo in the train
process, arm_guide in its own process). `a` aligns the guide on the screw (arm/command align through the
server), `f` advances the drill along the guide the arm holds, an entry key is ignored with a notice, Enter
grades the screw against the phantom's cortex; the attempt is kept as a robot attempt.
One screw only (the module starts its own robot stack; the suite's time matters). Screenshots and the graded
result (with the arm's holds met on the way: reported, not asserted) go to build/test-artifacts/training/
(override with SPINE_NAV_ARTIFACTS)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import train_page, wait_until

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("SPINE_NAV_ARTIFACTS", REPO / "build" / "test-artifacts")) / "training"
#: Bounded waits (s) on the shared loaded machine: page up (two stacks' start-up and arm_guide's), the arm
#: aligned (the arm's ALIGN_TIMEOUT_S is 20 s; holds met on the way are resumed as a trainee would), a key's
#: effect drawn back.
PAGE_UP_S, ALIGNED_S, KEY_S = 240.0, 90.0, 60.0


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    # the trainee panel comes with the session, which starts once arm/command is up
    with train_page(tmp_path_factory.mktemp("train_robot_page"), "robin", "--mode", "robot", up_s=PAGE_UP_S,
                    ready_s=PAGE_UP_S, ready=lambda b: _status(b).get("robot") is not None) as p:
        yield p


def _ts(b) -> dict:
    return b.js("return window.traineeState ? window.traineeState() : null") or {}


def _status(b) -> dict:
    return _ts(b).get("status") or {}


def _robot(b) -> dict:
    return _status(b).get("robot") or {}


def _tool(b) -> dict:
    return _status(b).get("tool") or {}


def _keys(b, keys) -> None:
    from selenium.webdriver.common.by import By

    b.driver.find_element(By.TAG_NAME, "body").send_keys(keys)


def _why(b, page) -> str:
    """What the page and the session said (for a failing wait)."""
    return (f"robot {_robot(b)}\nnotice {b.text('trainee-notice')!r}\nlast reply "
            f"{b.js('return window.consoleState().lastReply')}\nlog tail:\n{page['log'].read_text()[-2000:]}")


def _until(b, predicate, timeout_s: float) -> bool:
    """Bounded wait for ``predicate``; an arm hold met meanwhile (a watchdog on the loaded machine: a control
    cycle overrun, stale joint feedback) is resumed with `r` as the trainee is told to (at most every 0.5 s),
    and `a` is pressed again when the page says the arm is not aligned and no request is under way."""
    last = {"r": 0.0, "a": time.monotonic()}

    def check() -> bool:
        if predicate():
            return True
        rob, now = _robot(b), time.monotonic()
        if rob.get("holding") and now - last["r"] > 0.5:
            _keys(b, "r")
            last["r"] = now
        elif (not rob.get("holding") and not rob.get("engaged") and now - last["a"] > 5.0
              and "arm not aligned" in (rob.get("notice") or "")):
            _keys(b, "a")
            last["a"] = now
        return False

    return wait_until(check, timeout_s=timeout_s, period_s=0.2)


def test_robot_mode_align_advance_along_the_guide_grade_a_and_kept(page):
    from selenium.webdriver.common.keys import Keys

    from spine_nav.training.store import SessionStore

    b, case, proc = page["b"], page["case"], page["proc"]
    sid = case.plan.ids[0]
    assert _status(b)["mode"] == "robot" and _status(b)["screw_id"] == sid, _status(b)
    assert not b.js("return document.getElementById('trainee-robot').hidden")
    assert "Align arm" in b.text("trainee-robot")
    # before the arm is aligned the drill does not move
    depth0 = _tool(b)["depth_mm"]
    _keys(b, "f")
    assert wait_until(lambda: "align the arm" in b.text("trainee-notice"), timeout_s=KEY_S), b.text("trainee-notice")
    assert _tool(b)["depth_mm"] == depth0

    _keys(b, "a")
    # (read together, bounded: a watchdog hold on the loaded machine can come between the two reads, and _until
    # resumes it as the trainee would)
    assert _until(b, lambda: _robot(b).get("aligned") and f"ALIGNED on {sid}" in b.text("trainee-arm"), ALIGNED_S), \
        (b.text("trainee-arm"), _why(b, page))
    b.screenshot(ARTIFACTS / "trainee_robot_aligned.png")
    # an entry key is ignored (the guide holds the line), said on the page
    _keys(b, Keys.ARROW_RIGHT)
    assert wait_until(lambda: "held by the guide" in b.text("trainee-notice"), timeout_s=KEY_S)
    assert _tool(b)["lat_mm"] == 0.0

    # advance along the guide to the planned depth: whole millimetres with f, the rest in quarters with F
    depth = _tool(b)["planned_depth_mm"]
    deadline = time.monotonic() + 2 * KEY_S
    while abs(_tool(b)["depth_mm"] - depth) > 0.13 and time.monotonic() < deadline:
        if _robot(b).get("holding"):  # a hold on the way (no advance while the arm holds): resume, as told
            assert _until(b, lambda: _robot(b).get("aligned"), ALIGNED_S), _robot(b)
        rest = depth - _tool(b)["depth_mm"]
        keys, step = ("f" * int(rest), 1.0) if rest >= 1.0 else ("F" * max(1, int(round(rest / 0.25))), 0.25)
        goal = _tool(b)["depth_mm"] + len(keys) * step
        _keys(b, keys)
        wait_until(lambda: abs(_tool(b)["depth_mm"] - goal) < 1e-6 or _robot(b).get("holding"), timeout_s=KEY_S)
    assert abs(_tool(b)["depth_mm"] - depth) <= 0.13, (_tool(b), _robot(b))
    time.sleep(0.2)  # the guard judges the drill at its depth before the screw ends (end_screw waits 0.15 s more)
    b.screenshot(ARTIFACTS / "trainee_robot_at_depth.png")
    _keys(b, Keys.ENTER)
    assert wait_until(lambda: len(_ts(b)["results"]) >= 1, timeout_s=120), \
        (_ts(b), b.js("return window.consoleState().lastReply"))
    r = _ts(b)["results"][-1]
    assert r["screw_id"] == sid and r["gr_grade"] == "A" and r["grade_basis"] == "cortex", r
    # the drill rode the arm's guide (the entry and tilt keys were ignored): on the planned line within the
    # scripted robot test's 3 mm / 3 deg. The tip error is reported, not bounded: it holds the depth too, and
    # on the loaded machine the guide lags the breathing patient by ~1 mm along the axis, which can trip the
    # guard's depth stop (planned + 1 mm) at the planned depth; the arm then holds, the patient breathes
    # under the frozen guide and the tip drifts ~2 mm more (measured once: tip 2.6 mm, entry 1.0 mm, grade A).
    assert r["entry_error_mm"] < 3.0 and r["angular_error_deg"] < 3.0, r
    assert "grade A" in b.text("trainee-result")
    b.screenshot(ARTIFACTS / "trainee_robot_grade_A.png")
    (ARTIFACTS / "training_robot_result.json").write_text(json.dumps({"result": r, "robot": _robot(b)}, indent=1))

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, page["log"].read_text()[-3000:]
    with SessionStore(page["db"]) as store:
        [a] = store.attempts("robin")
    assert a["mode"] == "robot" and a["source"] == "page", a
    assert [(s["screw_id"], s["gr_grade"]) for s in a["screws"]] == [(sid, "A")], a["screws"]
