"""Trainee mode of the console (issue #21): the page drives the simulated tool.

Additive to the console: :class:`TraineeConsoleServer` is a :class:`ConsoleServer` that also answers
the page's ``train_*`` requests, and :class:`TraineeConsoleState` keeps the ``trainee*`` updates (replayed
to a page that connects). The console's own streams (plan, tool, guard, ...) come from the stack through
the usual :class:`spine_nav.nodes.console_bridge.ConsoleBridgeNode` (started next to it by `spine-nav train`,
:mod:`spine_nav.cli.train`; this module imports no ROS).

Requests (WebSocket, JSON objects with ``req``):

* ``train_input`` {seq, move: {lat_mm, cra_mm, tilt_lat_deg, tilt_cra_deg, depth_mm}, entry_mm?}: a
  step of the tool (:class:`spine_nav.training.tool.TraineeTool`); the new pose goes to the simulated
  tracker (``sim/tool_tip_truth``), which sends it over OpenIGTLink like any tracked tool; reply
  ``trainee_pose`` {seq, tip_mm, state}.
* ``train_end_screw``: the screw is placed where the tool is: graded
  (:mod:`spine_nav.training.grading`), kept in the database, pushed to every page as
  ``trainee_result`` (with a slice picture of placed vs planned); the next screw is selected.
* ``train_select`` {screw_id}: work on that screw (the tool goes back above its entry).
* ``train_leaderboard``: reply ``trainee_leaderboard`` {rows}.

Robot mode (``spine-nav train --mode robot``; the session gets the arm as ``robot``, a
:class:`spine_nav.cli.train_robot.RobotRig`: this module calls it, it does not import it):

* ``train_align``: ``arm/command align <selected screw>`` (through the server, as the scripted attempts);
  once the arm reports TRACKING on that screw, the drill is *engaged*: it sits ``depth`` past the entry
  along the simulator's true guide, re-posed every :data:`FOLLOW_PERIOD_S` so it follows the guide as the
  patient breathes (the loop of :func:`spine_nav.cli.train_robot.run_robot_script`).
* ``train_input``: only the depth (:class:`spine_nav.training.tool.GuideDrill`); entry, tilt and slice
  clicks are ignored with a notice; nothing moves before the arm is aligned; no advance while it holds.
* ``train_resume``: ``arm/command resume`` after a hold (any cause: shown with its cause in the
  ``trainee`` status's ``robot`` section, and listed in the screw's ``arm_stops``).
* ``train_end_screw``: graded at the drill's pose on the guide at that moment (same grading), then the
  drill is withdrawn up the tube and the next screw waits above its entry for the next ``train_align``.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from spine_nav.console.server import ConsoleServer
from spine_nav.console.state import ConsoleState
from spine_nav.training.tool import FOLLOW_PERIOD_S

log = logging.getLogger(__name__)

#: Pause (s) with the drill withdrawn up the tube before the next screw's approach pose (as the scripts).
WITHDRAW_PAUSE_S = 0.2


class TraineeConsoleState(ConsoleState):
    """The console's state plus the trainee streams (``trainee`` status, ``trainee_result`` history)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.trainee: dict[str, Any] | None = None
        self.results: list[dict[str, Any]] = []

    def apply(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        kind = update.get("t")
        if kind == "trainee":
            self.trainee = update
            return [update]
        if kind == "trainee_result":
            self.results.append(update)
            return [update]
        return super().apply(update)

    def snapshot(self) -> list[dict[str, Any]]:
        out = super().snapshot()
        if self.trainee is not None:
            out.append(self.trainee)
        out.extend(self.results[-10:])
        return out


class TraineeConsoleServer(ConsoleServer):
    def __init__(self, case, session_handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 **kw) -> None:
        super().__init__(case, **kw)
        self.state = TraineeConsoleState(case=case.info())
        self.session_handler = session_handler

    def _stream_key(self, u: dict[str, Any]) -> tuple[Any, ...]:
        if u.get("t") == "trainee":
            return ("trainee",)
        return super()._stream_key(u)

    async def _handle_client_message(self, raw):
        import json

        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            msg = None
        if isinstance(msg, dict) and isinstance(msg.get("req"), str) and msg["req"].startswith("train_"):
            if self.session_handler is None:
                return {"t": "error", "error": f"{msg['req']}: no training session"}
            try:
                return await asyncio.to_thread(self.session_handler, msg)
            except ValueError as exc:  # bad input: named, the session goes on
                self.stats["client_errors"] += 1
                return {"t": "error", "error": f"{msg['req']}: {exc}"}
            except Exception as exc:  # noqa: BLE001 - a failing request must not take the server down
                log.warning("request %s failed: %s", msg["req"], exc)
                return {"t": "error", "error": f"{msg['req']}: {exc}"}
        return await super()._handle_client_message(raw)


class TraineeSession:
    """The trainee's attempt behind the page: tool model, stack, attempt in the database (thread-safe)."""

    def __init__(self, case, store, attempt, stack, publish: Callable[[dict], None], trainee: str, mode: str,
                 robot=None) -> None:
        """``robot`` (robot mode): the arm, with ``arm_state()``, ``align(screw_id)``, ``resume()``,
        ``drill_pose(depth_mm)``, ``approach_pose(screw_id)``, ``withdrawn_pose()`` (a
        :class:`spine_nav.cli.train_robot.RobotRig`)."""
        from spine_nav.imaging.volume_io import load_volume

        self.case, self.store, self.attempt, self.stack = case, store, attempt, stack
        self.publish, self.trainee, self.mode = publish, trainee, mode
        self.robot = robot
        self.engaged = False  # robot mode: the arm reached TRACKING on the selected screw; the drill rides the guide
        self.notice = ""
        self.arm_stops: list[str] = []
        self._was_holding = False
        self._arm_key: tuple | None = None
        self._last_input_s = 0.0
        self._aligning: threading.Thread | None = None
        self.plan_ref = case.plan_in_reference()
        self.ids = list(self.plan_ref.ids)
        self._lock = threading.RLock()
        self.t0 = time.monotonic()
        ct_path = case.case_dir / "preop_ct.nii.gz"
        self.ct = load_volume(ct_path) if ct_path.exists() else None
        self.screw_id: str | None = None
        self.tool = None
        self.inputs = 0
        stack.conductor.listeners.append(self._on_guard)
        self.select(self.ids[0])
        self._follow_stop = threading.Event()
        self._follower = None
        if robot is not None:
            self._follower = threading.Thread(target=self._follow, name="train_follow_guide", daemon=True)
            self._follower.start()

    def _on_guard(self, msg) -> None:
        self.attempt.guard(msg.state_name, msg.reason, msg.active_screw_id)

    def _lateral_ref(self, screw_id: str) -> np.ndarray:
        from spine_nav.training.script import lateral_unit

        pre = self.case.plan.screw(screw_id)
        T = self.case.T_reference_preop[pre.level]
        return T[:3, :3] @ lateral_unit(self.case.plan, pre)

    def select(self, screw_id: str) -> dict[str, Any]:
        from spine_nav.training.tool import GuideDrill, TraineeTool

        with self._lock:
            if screw_id not in self.ids:
                raise ValueError(f"screw_id {screw_id!r} is not in the plan (have {', '.join(self.ids)})")
            self.screw_id = screw_id
            if self.robot is not None:  # the drill waits above the entry until the arm is aligned on this screw
                if self.engaged:  # left mid-screw: up the tube first, clear of the spine (as after Enter)
                    self.engaged = False
                    self.stack.conductor.move_tool(self.robot.withdrawn_pose())
                    time.sleep(WITHDRAW_PAUSE_S)
                self.tool = GuideDrill(float(self.plan_ref.screw(screw_id).depth_mm))
                self.engaged, self.arm_stops = False, []
                self.notice = f"{screw_id}: align the arm (a) to bring the guide onto the planned line"
                T = self.robot.approach_pose(screw_id)
            else:
                self.tool = TraineeTool.for_screw(self.plan_ref.screw(screw_id), self._lateral_ref(screw_id))
                T = self.tool.pose()
            self.stack.conductor.move_tool(T)
            self.stack.valid_from_s = time.time()
        ok, why = self.stack.conductor.select_screw(screw_id)
        self._status()
        return {"t": "reply", "req": "train_select", "ok": ok, "message": why}

    def _status(self) -> None:
        placed = [r["screw_id"] for r in self.attempt.results]
        out = {"t": "trainee", "trainee": self.trainee, "mode": self.mode, "attempt_id": self.attempt.attempt_id,
               "screw_id": self.screw_id, "screws": self.ids, "placed": placed,
               "tool": self.tool.state() if self.tool else None,
               "grade_basis": "cortex" if self.case.has_ground_truth else "proxy"}
        if self.robot is not None:
            out["robot"] = self._robot_view(self.robot.arm_state())
        self.publish(out)

    def _robot_view(self, arm: dict | None) -> dict[str, Any]:
        """What the page shows of the arm: its state, aligned (on the selected screw, drill engaged), the hold."""
        with self._lock:
            holding = bool(arm and arm["holding"])
            aligned = bool(self.engaged and arm and arm["mode"] == "TRACKING" and arm["active_screw_id"] == self.screw_id
                           and not holding)
            return {"arm": arm, "engaged": self.engaged, "aligned": aligned, "holding": holding,
                    "stop_cause": arm["stop_cause"] if holding else "", "notice": self.notice,
                    "arm_stops": list(self.arm_stops)}

    def _follow(self) -> None:
        """Robot mode: engage the drill when the arm reaches TRACKING on the selected screw, keep it on the
        guide (re-posed every FOLLOW_PERIOD_S), note each hold with its cause; publish the status on change."""
        while not self._follow_stop.wait(FOLLOW_PERIOD_S):
            try:
                arm = self.robot.arm_state()
                with self._lock:
                    sid = self.screw_id
                    holding = bool(arm and arm["holding"])
                    if (arm is not None and not self.engaged and not holding and arm["mode"] == "TRACKING"
                            and arm["active_screw_id"] == sid):
                        self.engaged = True
                        self.notice = f"guide aligned on {sid}: advance the drill (f / PageDown), Enter ends the screw"
                    if holding and not self._was_holding:
                        self.arm_stops.append(arm["stop_cause"])
                        self.notice = f"the arm holds: {arm['stop_cause'] or 'no cause given'}; resume (r) when clear"
                    elif self._was_holding and not holding:
                        self.notice = f"arm resumed ({arm['mode'] if arm else '?'})"
                    self._was_holding = holding
                    if self.engaged:
                        self.stack.conductor.move_tool(self.robot.drill_pose(self.tool.depth_mm))
                    key = (None if arm is None else (arm["mode"], arm["active_screw_id"], holding, arm["stop_cause"]),
                           self.engaged, sid, self.notice)
                    changed, self._arm_key = key != self._arm_key, key
                if changed:
                    self._status()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive one bad cycle; said in the log
                log.warning("robot follow loop: %s", exc)

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        req = msg["req"]
        if req == "train_input" and self.robot is not None:
            return self._robot_input(msg)
        if req in ("train_align", "train_resume"):
            return self._arm_request(req)
        if req == "train_input":
            with self._lock:
                self.tool.apply(msg)
                T = self.tool.pose()
                self.stack.conductor.move_tool(T)
                self.attempt.input(time.monotonic() - self.t0, self.screw_id, T)
                self.inputs += 1
                state = self.tool.state()
            return {"t": "trainee_pose", "seq": msg.get("seq"), "tip_mm": [float(v) for v in T[:3, 3]], "state": state}
        if req == "train_end_screw":
            return self.end_screw()
        if req == "train_select":
            sid = msg.get("screw_id")
            if isinstance(msg.get("step"), int) and self.screw_id in self.ids:
                sid = self.ids[(self.ids.index(self.screw_id) + msg["step"]) % len(self.ids)]
            if not isinstance(sid, str):
                raise ValueError("screw_id: give a screw id (or step: +1 / -1)")
            with self._lock:
                if self.attempt.current_screw is not None:
                    self.attempt.end_screw_discard()
            return self.select(sid)
        if req == "train_leaderboard":
            with self._lock:
                return {"t": "trainee_leaderboard", "rows": self.store.leaderboard()}
        raise ValueError(f"unknown request {req!r}")

    def _robot_input(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Robot mode: the depth along the guide only (GuideDrill); the drill re-posed on the guide at once."""
        arm = self.robot.arm_state() or {}
        T = None
        with self._lock:
            moved, notice = self.tool.apply(msg, aligned=self.engaged, holding=bool(arm.get("holding")),
                                            stop_cause=arm.get("stop_cause", ""))
            if notice:
                self.notice = notice
            if moved:
                T = self.robot.drill_pose(self.tool.depth_mm)
                self.stack.conductor.move_tool(T)
                self._last_input_s = time.monotonic() - self.t0
                self.attempt.input(self._last_input_s, self.screw_id, T)
                self.inputs += 1
            state = self.tool.state()
        return {"t": "trainee_pose", "seq": msg.get("seq"), "tip_mm": None if T is None else [float(v) for v in T[:3, 3]],
                "state": state, "ignored": T is None, "notice": notice}

    def _arm_request(self, req: str) -> dict[str, Any]:
        """``train_resume``: one ``arm/command resume``, its answer to the page. ``train_align``: the arm to
        TRACKING on the selected screw (``robot.align``: align re-sent while refused for a passing reason,
        bounded) in a thread of its own; the page is answered at once and sees the outcome in the status."""
        if self.robot is None:
            raise ValueError("only in robot mode (spine-nav train --mode robot)")
        sid = self.screw_id
        if req == "train_resume":
            ok, why = self.robot.resume()
            self._set_notice(f"arm resume: {why}" if ok else f"arm resume refused: {why}")
            return {"t": "reply", "req": req, "ok": ok, "message": why}
        with self._lock:
            busy = self._aligning is not None and self._aligning.is_alive()
            if not busy:
                self._aligning = threading.Thread(target=self._align, args=(sid,), name="train_align", daemon=True)
                self._aligning.start()
        msg = f"aligning the guide on {sid}" if not busy else "an align request is already under way"
        self._set_notice(msg + "...")
        return {"t": "reply", "req": req, "ok": not busy, "message": msg}

    def _align(self, sid: str) -> None:
        ok, why = self.robot.align(sid, cancelled=lambda: self.screw_id != sid or self._follow_stop.is_set())
        if why != "cancelled":
            self._set_notice(f"guide aligned on {sid}: advance the drill (f / PageDown), Enter ends the screw" if ok
                             else f"arm not aligned on {sid}: {why}")

    def _set_notice(self, text: str) -> None:
        with self._lock:
            self.notice = text
        self._status()

    def end_screw(self) -> dict[str, Any]:
        from spine_nav.training.tool import placed_vs_planned_png

        if self.robot is not None:
            with self._lock:  # placed where the drill is now on the guide (it followed the breathing patient)
                if self.engaged and self.attempt.current_screw == self.screw_id:
                    T = self.robot.drill_pose(self.tool.depth_mm)
                    self.stack.conductor.move_tool(T)
                    # time to place stays first to last depth input, as freehand (the pose is the one placed)
                    self.attempt.input(self._last_input_s, self.screw_id, T)
        time.sleep(0.15)  # let the guard judge the last pose (its verdicts count for this screw)
        with self._lock:
            if self.attempt.current_screw is None:
                raise ValueError("no screw in progress: move the tool first")
            r = self.attempt.end_screw()
            if self.robot is not None:  # the drill leaves the bone at once: up the tube, clear of the spine
                self.engaged = False
                self.stack.conductor.move_tool(self.robot.withdrawn_pose())
        planned = self.case.plan.screw(r["screw_id"])
        T_last = np.eye(4)
        T_last[:3, 3], T_last[:3, 2] = r["tip_ref_mm"], r["axis_ref"]
        tip, axis = self.case.reference_to_preop(planned.level, T_last)
        png = b""
        if self.ct is not None:
            png = placed_vs_planned_png(self.ct, planned, tip, axis,
                                        f"{r['screw_id']}: grade {r['gr_grade']}, breach {r['breach_mm']:.1f} mm")
        keys = ("screw_id", "gr_grade", "grade_basis", "grade_note", "breach_mm", "entry_error_mm", "tip_error_mm",
                "angular_error_deg", "time_to_place_s", "guard_violations", "depth_overruns")
        res = {"t": "trainee_result", **{k: r[k] for k in keys}, "png_b64": base64.b64encode(png).decode()}
        if self.robot is not None:
            with self._lock:
                res["arm_stops"] = list(self.arm_stops)
            time.sleep(WITHDRAW_PAUSE_S)
        self.publish(res)
        nxt = [i for i in self.ids if i not in {x["screw_id"] for x in self.attempt.results}]
        self.select(nxt[0] if nxt else self.ids[0])
        return {k: v for k, v in res.items() if k != "png_b64"} | {"t": "reply", "req": "train_end_screw", "ok": True}

    def close(self) -> bool:
        """Keep the attempt: finished when no screw was left in progress and one was graded."""
        self._follow_stop.set()
        for t in (self._follower, self._aligning):
            if t is not None:
                t.join(timeout=2.0)
        with self._lock:
            finished = self.attempt.current_screw is None and bool(self.attempt.results)
            self.attempt.close(finished=finished)
            return finished
