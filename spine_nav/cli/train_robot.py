"""`spine-nav train --mode robot --headless --script ...`: scripted attempts in robot mode (issue #21).

"In robot mode the arm aligns the guide on request and the trainee only advances the drill and decides
when to stop." The stack is the trainee's (:class:`spine_nav.cli.train.TrainStack`: sim_tracker ->
tracker_bridge -> trajectory_guard, plan_publisher) plus the demo's arm: ``sim_arm`` (MuJoCo, composed
in this process, so the simulator's truth is at hand) and ``arm_guide`` (its own ``spine-nav up``
process, as in the demo: its 1 kHz servo does not share this process's interpreter lock), both under the
session's namespace.

Per screw of the script: the tool is shown 80 mm above the registered entry, the screw is selected on
the guard, ``arm/command align`` is sent and awaited (holds met on the way are resumed, as the demo's
surgeon does; every one is counted), then the script's lines of that screw are played at their times.
Each line only sets the drill's **depth along the guide**: the projection of its ``tip_mm`` on the
planned line (PreopCT; depth 0 at the planned entry). Its lateral offset and tilt are **ignored** (the
guide holds the line; the largest ignored offset and angle are reported per screw). The drill is the
simulator's true guide-tube pose (MuJoCo joints, forward kinematics, the tracker's true reference
pose now) advanced ``standoff + depth`` along the tube, re-sent every 10 ms so it follows the guide
as the patient breathes (as the demo's drill, :meth:`spine_nav.demo.run.Demo.drill`). When the arm holds
while drilling (a watchdog on a loaded machine, the guard's VIOLATION), the script's clock pauses, the
drill goes back up the tube above the entry, the arm is resumed and re-aligned, and the script goes on
(the demo's ``_pause_and_realign``); every hold is listed in the screw's ``arm_stops``. The screw ends
at its last line and is graded there (:mod:`spine_nav.training.grading`, as freehand), then the drill
is withdrawn up the tube.

Scene: the demo's (robot base at :data:`spine_nav.demo.scene.DEMO_BASE_POSE` checked for this plan by
:func:`spine_nav.demo.scene.layout_for_plan`); ``arm_guide`` gets the simulator's true
``T_tracker_robotbase`` (no hand-eye calibration step: the demo's calibration error, ~0.1 mm, is left
out of training). Watchdogs: the demo's (:data:`spine_nav.demo.run.DEMO_WATCHDOGS`), with the heartbeat limits
of :data:`ROBOT_HEARTBEATS_MS` and the stall limits of :data:`ROBOT_WATCHDOGS_S`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from spine_nav.cli.common import fail, info
from spine_nav.training.tool import FOLLOW_PERIOD_S  # the drill's re-pose period, shared with the page

#: Guide-tube opening above the planned entry (mm): the demo's (DemoConfig.standoff_mm).
STANDOFF_MM = 25.0
#: Bounded wait for the arm to reach TRACKING on a screw (s): the demo's align_timeout_s.
ALIGN_TIMEOUT_S = 20.0
#: The page's bound on one align request (s): the scripts' 20 s plus time for the trainee to see and resume
#: holds met on the way (a request, not a measurement; the trainee presses `a` again after it).
PAGE_ALIGN_TIMEOUT_S = 60.0
#: arm_guide's liveness limits on the bridge's and the guard's heartbeats (20 ms each), in ms. The demo's
#: (and config/nodes.yaml's) 50 ms assume those nodes in their own real-time process. In the trainee stack
#: they share one Python process with the simulated tracker and the MuJoCo arm, which is the
#: cost of running one training session per command. On the loaded machine, "bridge silent (no
#: tracking/health for 56 ms > 50 ms)" held the arm over and over during alignment, and it never
#: aligned in 20 s. 200 ms matches the trainee stack's other limits (TRAIN_PARAMS: sample age and
#: bridge timeout 200 ms). A real loss still holds the arm within 200 ms.
ROBOT_HEARTBEATS_MS = {"bridge_timeout_ms": 200.0, "guard_timeout_ms": 200.0}
#: The arm's own stall watchdogs in training {(node, param): s}, relaxed from the demo's (cycle 50 ms, joint
#: feedback 150 ms, sim_arm command 80 ms) for the same reason: the page in robot mode adds a console server
#: in the trainee process and a headless Chromium drawing the 3D view in software GL on the same cores. On
#: the shared 2-core machine (load 11-16) arm_guide's servo then overran its cycle by 50-540 ms and saw
#: joint feedback 150-190 ms old every 1-2 s while aligning: 22-45 holds in 90 s, and the guide never
#: reached the line. 200-250 ms keep every stall caught (a dead arm_guide or sim_arm still holds the arm
#: within 250 ms), as the trainee stack's other limits (200 ms).
ROBOT_WATCHDOGS_S = {("arm_guide", "cycle_watchdog_s"): 0.2, ("arm_guide", "feedback_timeout_s"): 0.25,
                     ("sim_arm", "command_timeout_s"): 0.25}
#: Where the drill is pulled back to (mm past the entry; negative: above it, still in the tube) when the arm
#: holds while drilling, before it is re-aligned (the demo's _pause_and_realign).
REALIGN_DEPTH_MM = -20.0
#: Where the drill waits before a screw: this far above the registered entry on its line (mm), as the demo.
APPROACH_LIFT_MM = 80.0


def robot_overrides(case, log=info) -> tuple[dict, object, object]:
    """({(node, param): value} for sim_tracker / sim_arm / arm_guide, the OR scene, the arm's kinematics)."""
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.arm.model import load_arm_model
    from spine_nav.demo.run import DEMO_WATCHDOGS
    from spine_nav.demo.scene import layout_for_plan, pose_params
    from spine_nav.sim.arm import default_scene

    arm_scene = default_scene()
    kin = ArmKinematics(load_arm_model())
    scene = layout_for_plan(case.plan_in_reference(), arm_scene.T_tracker_robotbase, kin=kin,
                            standoff_mm=STANDOFF_MM, log=lambda m: log(f"spine-nav train: {m}"))
    log(f"spine-nav train: robot base {scene.layout.summary()}")
    ov: dict = {}
    for k, v in pose_params(scene.T_tracker_reference, "tracker_reference").items():
        ov[("sim_tracker", k)] = v
    for node in ("sim_arm", "arm_guide"):  # arm_guide: the true pose (no hand-eye calibration in training)
        for k, v in pose_params(scene.T_tracker_robotbase, "tracker_robotbase").items():
            ov[(node, k)] = v
    ov.update({("sim_arm", "q0_rad"): [float(q) for q in arm_scene.q_home_rad], ("sim_arm", "marker_noise_mm"): 0.1,
               ("sim_arm", "publish_rate_hz"): 100.0, ("arm_guide", "standoff_mm"): STANDOFF_MM,
               ("arm_guide", "command_rate_hz"): 50.0, ("arm_guide", "realtime"): False})
    ov.update({(node, k): v for node, k, v in DEMO_WATCHDOGS if node in ("arm_guide", "sim_arm")})
    ov.update({("arm_guide", k): v for k, v in ROBOT_HEARTBEATS_MS.items()})
    ov.update(ROBOT_WATCHDOGS_S)
    return ov, scene, kin


def start_robot_stack(case, TrainStack) -> tuple[object, "RobotRig"]:
    """The trainee stack with the arm (``sim_arm`` composed, ``arm_guide`` started in its own process):
    (stack, rig). Shared by the scripted attempts and the page. Raises when it cannot start."""
    overrides, scene, kin = robot_overrides(case)
    stack = TrainStack(case, extra_nodes=("sim_arm",), extra_overrides=overrides)
    try:
        return stack, RobotRig(stack, scene, kin, Path(stack._tmp.name))
    except Exception:
        stack.close()
        raise


class RobotRig:
    """The arm side of a robot-mode session: the ``arm_guide`` process and the simulator's truth."""

    def __init__(self, stack, scene, kin, log_dir: Path) -> None:
        from spine_nav.demo.processes import NodeProcess

        self.stack, self.scene, self.kin = stack, scene, kin
        self.c = stack.conductor
        self.plan_ref = stack.case.plan_in_reference()
        self.sim_arm = stack.stack.nodes["sim_arm"]
        self.tracker_model = stack.stack.nodes["sim_tracker"].model
        self.proc = NodeProcess("arm", ["arm_guide"], ["--params-file", str(stack.params_file),
                                                       "-r", f"__ns:={stack.namespace}"],
                                log_dir / "arm_guide.log", max_duration_s=3600.0)

    def wait_arm_service(self, timeout_s: float = 60.0) -> str:
        """Bounded wait for ``arm/command``; "" when it is up, else why not (with arm_guide's log tail)."""
        if self.c.arm_cli is None or not self.c.arm_cli.wait_for_service(timeout_sec=timeout_s):
            return f"arm/command did not come up within {timeout_s:.0f} s:\n{self.proc.tail()}"
        return ""

    def why_down(self) -> str:
        """A note that the arm_guide process ended (with its log tail) when it did, else an empty string."""
        return "" if self.proc.alive() else f" (arm_guide process ended:\n{self.proc.tail()})"

    def approach_pose(self, screw_id: str) -> np.ndarray:
        """Where the drill waits before a screw: :data:`APPROACH_LIFT_MM` above its registered entry, on its line."""
        from spine_nav.demo.run import Demo

        return Demo.approach_pose(self.plan_ref.screw(screw_id), APPROACH_LIFT_MM)

    def withdrawn_pose(self) -> np.ndarray:
        """The drill up the tube, clear of the spine (after a screw), on the guide as it is now."""
        return self.drill_pose(-(STANDOFF_MM + APPROACH_LIFT_MM))

    # the page's arm requests (robot mode on the page, spine_nav.console.trainee); the script uses ensure_aligned
    def arm_state(self) -> dict | None:
        """The arm's last ``arm/state`` as a dict (None before the first)."""
        a = self.c.last_arm
        if a is None:
            return None
        return {"mode": a.mode, "active_screw_id": a.active_screw_id, "holding": bool(a.holding),
                "stop_cause": a.stop_cause, "alignment_error_mm": float(a.alignment_error_mm),
                "alignment_error_deg": float(a.alignment_error_deg)}

    def align(self, screw_id: str, cancelled: Callable[[], bool] = lambda: False) -> tuple[bool, str]:
        """The arm to TRACKING on ``screw_id``, as the scripts (:func:`ensure_aligned`, bounded by
        :data:`PAGE_ALIGN_TIMEOUT_S`) but a hold is not resumed here: it is the trainee's (``resume``).
        (aligned, why not)."""
        ok, why, _ = ensure_aligned(self.c, screw_id, PAGE_ALIGN_TIMEOUT_S, resume_holds=False, cancelled=cancelled)
        return ok, why + ("" if ok else self.why_down())

    def resume(self) -> tuple[bool, str]:
        """``arm/command resume`` once; (accepted, the arm's answer)."""
        ok, why = self.c.arm("resume")
        return ok, why + ("" if ok else self.why_down())

    def true_guide_in_reference(self) -> np.ndarray:
        """T_reference_guidetube from the simulator's truth (the demo's ``true_guide_in_reference``)."""
        from spine_nav.geometry import invert

        _, q, _ = self.sim_arm.sim.state()
        T_tracker_guide = self.scene.T_tracker_robotbase @ self.kin.fk(q, "GuideTube")
        m = self.tracker_model
        return invert(m.T_tracker_reference_true(m.model_time_s(time.time()))) @ T_tracker_guide

    def drill_pose(self, depth_mm: float) -> np.ndarray:
        """The drill tip ``depth_mm`` past the planned entry along the true guide (Reference)."""
        from spine_nav.geometry import make_transform

        return self.true_guide_in_reference() @ make_transform(translation_mm=[0.0, 0.0, STANDOFF_MM + depth_mm])

    def close(self) -> None:
        self.proc.stop()


def ensure_aligned(c, screw_id: str, timeout_s: float = ALIGN_TIMEOUT_S, resume_holds: bool = True,
                   cancelled: Callable[[], bool] = lambda: False) -> tuple[bool, str, list[str]]:
    """Bring the arm to TRACKING on ``screw_id`` (bounded): (re)send align while the arm refuses for a
    passing reason (no reference sample yet, a watched input silent); after a hold, resume once the guard
    sees the drill (``resume_holds``, the scripts, as the demo's surgeon) or wait for someone else's resume
    (the page: the trainee sees the hold and resumes), then align again if the arm came back without a
    target. ``cancelled()`` ends the wait early (the page chose another screw).
    Returns (ok, why not, the stop causes met on the way)."""
    from spine_nav.demo.run import _refused_for_good

    deadline = time.monotonic() + timeout_s
    stops: list[str] = []
    sent, why = False, "no arm state"
    while time.monotonic() < deadline:
        if cancelled():
            return False, "cancelled", stops
        arm = c.last_arm
        if arm is not None and arm.holding:
            if not stops or stops[-1] != arm.stop_cause:
                stops.append(arm.stop_cause)
            if not resume_holds:  # the trainee resumes (the page shows the hold); align again after that
                why, sent = f"the arm holds: {arm.stop_cause or 'no cause given'}; resume (r) when clear", False
                time.sleep(0.02)
                continue
            c.wait_for(lambda: c.last_status is not None and c.last_status.state_name != "TRACKING_LOST", 3.0)
            _, why = c.arm("resume")
            sent = False
            time.sleep(0.05)
            continue
        if arm is not None and arm.mode == "TRACKING" and arm.active_screw_id == screw_id:
            return True, "", stops
        if not sent:
            ok, why = c.arm("align", screw_id)
            sent = ok
            if not ok and _refused_for_good(why):
                return False, f"arm refused to align {screw_id}: {why}", stops
        time.sleep(0.02)
    arm = c.last_arm
    return False, (f"arm not aligned on {screw_id} within {timeout_s:.0f} s (arm {arm.mode if arm else '?'}"
                   f"{': ' + arm.stop_cause if arm is not None and arm.stop_cause else ''}; last answer: {why})"), stops


def script_depths(case, samples) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Each line's depth along its planned screw (PreopCT, mm past the entry) and, per screw, the largest
    lateral offset (mm) and tilt (deg) of the script from the planned line: ignored in robot mode."""
    depths: list[float] = []
    ignored: dict[str, dict[str, float]] = {}
    for s in samples:
        p = case.plan.screw(s.screw_id)
        d = np.asarray(p.direction, dtype=float)
        v = np.asarray(s.tip_mm, dtype=float) - np.asarray(p.entry_mm, dtype=float)
        depth = float(v @ d)
        lateral = float(np.linalg.norm(v - depth * d))
        angle = float(np.degrees(np.arccos(np.clip(float(np.asarray(s.axis) @ d), -1.0, 1.0))))
        depths.append(depth)
        m = ignored.setdefault(s.screw_id, {"lateral_mm": 0.0, "angle_deg": 0.0})
        m["lateral_mm"], m["angle_deg"] = max(m["lateral_mm"], lateral), max(m["angle_deg"], angle)
    return depths, ignored


def _groups(samples, depths):
    """Consecutive lines of one screw: [(screw_id, [(sample, depth), ...]), ...]."""
    out: list[tuple[str, list]] = []
    for s, d in zip(samples, depths):
        if not out or out[-1][0] != s.screw_id:
            out.append((s.screw_id, []))
        out[-1][1].append((s, d))
    return out


def run_robot_script(args, case, store, kit) -> int:
    """``kit``: the freehand command's parts this one shares (``spine_nav.cli.train`` passes them:
    TrainStack, pump, end_screw, screw_line, emit, PUBLIC_KEYS), so that module is not imported back here."""
    from spine_nav.demo.run import Demo
    from spine_nav.guard.core import NO_PLAN_YET
    from spine_nav.training.attempt import Attempt
    from spine_nav.training.case import case_key
    from spine_nav.training.script import check_against_case, load_script

    TrainStack, _pump, _end_screw = kit.TrainStack, kit.pump, kit.end_screw
    samples = load_script(args.script)
    check_against_case(samples, case)
    depths, ignored = script_depths(case, samples)
    for sid, m in ignored.items():
        if m["lateral_mm"] > 0.5 or m["angle_deg"] > 1.0:
            info(f"spine-nav train: robot mode: {sid}: the script's lateral offset (up to {m['lateral_mm']:.1f} mm) "
                 f"and tilt (up to {m['angle_deg']:.1f} deg) are ignored: the guide holds the line, the script "
                 "only sets the depth")
    try:
        stack, rig = start_robot_stack(case, TrainStack)
    except Exception as exc:  # noqa: BLE001 - the stack could not start: say why, grade nothing
        return fail(f"the robot stack did not start: {exc}", code=1)
    plan_ref = case.plan_in_reference()
    attempt_id = store.start_attempt(args.trainee, case_key(case), "robot", f"script:{Path(args.script).name}")
    att = Attempt(case, store, attempt_id)
    finished = False
    arm_stops: dict[str, list[str]] = {}
    try:
        c = stack.conductor
        # first shown within the guard's capture radius (as a freehand script starts), so the guard judges it
        c.move_tool(Demo.approach_pose(plan_ref.screw(samples[0].screw_id), 20.0))
        if not stack.wait_ready():
            st = c.last_status
            return fail("the guard never judged the simulated tool (no plan / no tracking within 30 s; guard "
                        f"{'silent' if st is None else st.state_name + ': ' + st.reason})", code=1)
        why = rig.wait_arm_service()
        if why:
            return fail(why, code=1)
        for sid, lines in _groups(samples, depths):
            c.move_tool(rig.approach_pose(sid))
            deadline = time.monotonic() + 5.0
            ok, msg = c.select_screw(sid)
            while not ok and NO_PLAN_YET in msg and time.monotonic() < deadline:
                time.sleep(0.1)
                ok, msg = c.select_screw(sid)
            if not ok:
                raise RuntimeError(f"guard refused screw {sid}: {msg}")
            stack.valid_from_s, stack.settling = time.time(), True
            ok, why, stops = ensure_aligned(c, sid)
            arm_stops[sid] = stops
            if not ok:
                return fail(why + rig.why_down(), code=1)
            _pump(stack, att, 0.3)  # the servo settles on the line
            # the screw's own timeline: its first line now (the alignment is not the trainee's time)
            t0 = time.monotonic() - lines[0][0].t_s / args.speed
            depth = lines[0][1]
            for s, d in lines:
                while True:
                    due = t0 + s.t_s / args.speed
                    arm = c.last_arm
                    if arm is not None and arm.holding:  # as the demo's surgeon: back up the tube, re-align
                        t_pause = time.monotonic()
                        c.move_tool(rig.drill_pose(min(depth, REALIGN_DEPTH_MM)))
                        ok, why, stops = ensure_aligned(c, sid)
                        arm_stops[sid] += stops
                        if not ok:
                            return fail(f"while drilling {sid}: {why}{rig.why_down()}", code=1)
                        _pump(stack, att, 0.3)
                        t0 += time.monotonic() - t_pause  # the pause is not the trainee's time
                        continue
                    if time.monotonic() >= due:
                        break
                    c.move_tool(rig.drill_pose(depth))  # the drill follows the guide at its depth meanwhile
                    _pump(stack, att, min(FOLLOW_PERIOD_S, max(0.0, due - time.monotonic())))
                depth = d
                T = rig.drill_pose(depth)
                c.move_tool(T)
                att.input(s.t_s, sid, T)
                _pump(stack, att, 0.0)
            arm = c.last_arm
            if arm is not None and arm.holding and (not arm_stops[sid] or arm_stops[sid][-1] != arm.stop_cause):
                arm_stops[sid].append(arm.stop_cause)
            _end_screw(stack, att, args)
            # withdraw the drill up the tube, clear of the spine, before the next screw
            c.move_tool(rig.withdrawn_pose())
            _pump(stack, att, 0.2)
        c.arm("hold")
        finished = True
    finally:
        att.close(finished=finished)
        rig.close()
        stack.close()
    screws = []
    for r in att.results:
        row = {k: r[k] for k in kit.PUBLIC_KEYS}
        row["arm_stops"] = arm_stops.get(r["screw_id"], [])
        row["script_offsets_ignored"] = {k: round(v, 3) for k, v in ignored.get(r["screw_id"], {}).items()}
        screws.append(row)
    out = {"attempt_id": attempt_id, "trainee": args.trainee, "case": case.describe(), "mode": "robot",
           "path": (f"sim_tracker (OpenIGTLink 127.0.0.1:{stack.port}) -> tracker_bridge -> trajectory_guard; "
                    "arm_guide (own process) -> sim_arm (MuJoCo)"),
           "screws": screws}
    return kit.emit(args, out, att.results,
                    f"attempt {attempt_id} ({args.trainee}, robot mode, {case.variant or 'case'} {case.case_dir}):")
