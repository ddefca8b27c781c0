"""`spine-nav train`: trainee mode (issue #21).

    spine-nav train --case DIR --trainee NAME --db FILE --headless --script attempt.jsonl [--json]
    spine-nav train ... --mode robot --headless --script attempt.jsonl   # the arm aligns, the script sets depth
    spine-nav train --case DIR --trainee NAME [--db FILE] [--port 8080]          # the page (trainee mode)
    spine-nav train --case DIR --trainee NAME --mode robot [--port 8080]         # the page, the arm aligns the guide
    spine-nav train report --db FILE [--trainee NAME] [--json] [--html OUT]
    spine-nav train replay --db FILE --attempt ID [--port 8080] [--speed 1] [--no-console] [--wait-viewer-s 60]

Every tool pose (a script line, or an input on the page) goes through the same path as a tracked tool
in the OR: the simulated tracker (OpenIGTLink server over TCP) -> ``tracker_bridge`` ->
``trajectory_guard`` (ROS 2 nodes over DDS, composed in this process like ``spine-nav up``); the
guard's verdicts are counted per screw; a screw is graded when it ends
(:mod:`spine_nav.training.grading`, the demo's grading) and kept in the SQLite database with the
attempt's tool stream. Without ``--case`` a seeded phantom of ``--difficulty`` is generated (kept in
``<db dir>/cases/`` so reports and replays find it again).

Exit codes: 0 done, 1 the stack failed (nothing graded), 2 bad input (case, script, database, options).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from spine_nav.cli.common import fail, info, print_json
from spine_nav.resources import share_path

PARAMS_FILE = share_path("config", "nodes.yaml")
#: Watchdogs of the trainee stack: the demo's (DEMO_WATCHDOGS) for a stack sharing 2 loaded cores with
#: the simulator, a browser and the grading; still TRACKING_LOST on any real loss.
TRAIN_PARAMS = (
    ("trajectory_guard", "stale_after_s", 0.2),
    ("trajectory_guard", "depth_margin_mm", 1.0),
    ("tracker_bridge", "timeout_ms", 200.0),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="trainee mode: drive the tool (page or script), every screw graded and kept")
    p.add_argument("--case", help="case directory (plan.json + registration or ground truth); default: a seeded phantom")
    p.add_argument("--seed", type=int, default=0, help="phantom seed without --case (default 0)")
    p.add_argument("--difficulty", default="normal", help="phantom without --case: normal, osteoporotic, scoliotic, narrow "
                   "(pedicles at the narrow end of lumbar morphometry)")
    p.add_argument("--levels", default="L3,L4", help="phantom levels without --case (default L3,L4)")
    p.add_argument("--trainee", help="trainee name")
    p.add_argument("--db", default="training.db", help="SQLite session database (default training.db)")
    p.add_argument("--mode", choices=("freehand", "robot"), default="freehand",
                   help="freehand (default) or robot (the arm aligns on request; the trainee advances and stops)")
    p.add_argument("--headless", action="store_true", help="no page: play --script")
    p.add_argument("--script", help="scripted attempt (jsonl: t_s, screw_id, tip_mm, axis in the plan's frame)")
    p.add_argument("--speed", type=float, default=1.0, help="script playback speed factor (default 1)")
    p.add_argument("--port", type=int, default=8080, help="page port (default 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="page bind address (default 127.0.0.1)")
    p.add_argument("--duration", type=float, default=0.0, help="page: stop after S seconds (0: until Ctrl-C)")
    p.add_argument("--json", action="store_true", help="print the graded screws as JSON")
    p.set_defaults(func=run)
    tsub = p.add_subparsers(dest="train_cmd", metavar="{report,replay}", parser_class=type(p))
    r = tsub.add_parser("report", help="progress over the kept sessions (text, --json, --html page with plots)")
    r.add_argument("--db", required=True)
    r.add_argument("--trainee", help="only this trainee")
    r.add_argument("--json", action="store_true")
    r.add_argument("--html", help="write an HTML page with plots here")
    r.set_defaults(func=run_report)
    rp = tsub.add_parser("replay", help="play a kept attempt back through the console")
    rp.add_argument("--db", required=True)
    rp.add_argument("--attempt", type=int, required=True)
    rp.add_argument("--port", type=int, default=8080, help="console port (default 8080; 0: any free port)")
    rp.add_argument("--speed", type=float, default=1.0)
    rp.add_argument("--no-console", action="store_true", help="only the stack (tests)")
    rp.add_argument("--hold", type=float, default=0.0, help="keep the console up S seconds after the end")
    rp.add_argument("--wait-viewer-s", type=float, default=60.0,
                    help="start once a page is open on the console and it hears the guard, waiting at most S s "
                         "(default 60; 0: start at once)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=run_replay)


# ---------------------------------------------------------------------------------------------
def _open_case(args) -> Any:
    from spine_nav.cli.phantom import parse_levels
    from spine_nav.training.case import generate_training_case, load_training_case

    if args.case:
        return load_training_case(args.case)
    levels = parse_levels(args.levels)
    out = Path(args.db).resolve().parent / "cases" / f"seed{args.seed}-{args.difficulty}-{'-'.join(levels)}"
    info(f"spine-nav train: phantom seed {args.seed}, {args.difficulty}, levels {','.join(levels)} -> {out}")
    return generate_training_case(out, seed=args.seed, difficulty=args.difficulty, levels=levels, progress=info)


class Participant:
    """The trainee's hand and the instructor's eyes on the ROS side: moves the simulated tool
    (``sim/tool_tip_truth``, republished at 100 Hz: best-effort topic), selects screws on the guard,
    records the guard's verdicts. Own context in ``namespace`` (as the demo's conductor, namespaced)."""

    def __init__(self, namespace: str, robot: bool = False) -> None:
        """``robot``: also listen to ``arm/state`` and call ``arm/command`` (robot mode)."""
        import threading

        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.context import Context
        from spine_nav_interfaces.msg import GuardStatus
        from spine_nav_interfaces.srv import SelectScrew

        from spine_nav.demo.conductor import Recording, StatusSample
        from spine_nav.nodes.conversions import stamp_to_seconds
        from spine_nav.nodes.qos import SENSOR_QOS, STATUS_QOS
        from spine_nav.nodes.runner import make_executor, spin_until

        self._StatusSample, self._stamp = StatusSample, stamp_to_seconds
        self.context = Context()
        rclpy.init(args=["spine_nav_train", "--ros-args", "-r", f"__ns:={namespace}"], context=self.context)
        self.node = rclpy.create_node("train_participant", context=self.context)
        self.rec = Recording()
        self._lock = threading.Lock()
        self.last_status = None
        self.listeners: list[Callable[[Any], None]] = []
        self.node.create_subscription(GuardStatus, "guard/status", self._on_status, STATUS_QOS)
        self.tool_pub = self.node.create_publisher(PoseStamped, "sim/tool_tip_truth", SENSOR_QOS)
        self.select_cli = self.node.create_client(SelectScrew, "guard/select_screw")
        self.last_arm = None
        self.arm_cli = None
        if robot:
            from spine_nav_interfaces.msg import ArmState
            from spine_nav_interfaces.srv import ArmCommand

            self.node.create_subscription(ArmState, "arm/state", self._on_arm, STATUS_QOS)
            self.arm_cli = self.node.create_client(ArmCommand, "arm/command")
        self.executor = make_executor("events", context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._tool: np.ndarray | None = None
        self._hand = threading.Thread(target=self._hand_loop, name="train_hand", daemon=True)
        self._hand.start()
        self._spin = threading.Thread(target=spin_until, args=(self.executor, lambda: not self._stop.is_set()
                                                               and self.context.ok()), name="train_spin", daemon=True)
        self._spin.start()

    def _on_status(self, msg) -> None:
        s = self._StatusSample(time.time(), self._stamp(msg.tool_sample_stamp), msg.active_screw_id, msg.state_name,
                               msg.reason, msg.lateral_error_mm, msg.angular_error_deg, msg.depth_mm, msg.remaining_mm,
                               self._stamp(msg.header.stamp))
        with self._lock:
            self.last_status = msg
            self.rec.statuses.append(s)
        for f in list(self.listeners):
            f(msg)

    def _on_arm(self, msg) -> None:
        with self._lock:
            self.last_arm = msg
            self.rec.arm_states.append((time.time(), msg))

    def arm(self, command: str, screw_id: str = "", timeout_s: float = 10.0) -> tuple[bool, str]:
        """``arm/command`` (align SCREW / hold / resume / release); (success, message), bounded."""
        from spine_nav_interfaces.srv import ArmCommand

        if self.arm_cli is None:
            return False, "arm/command not available"
        return _bounded_call(self.arm_cli, ArmCommand.Request(command=command, screw_id=screw_id),
                             f"arm/command {command}", timeout_s, min(timeout_s, 5.0))

    def move_tool(self, T_reference_tooltip: np.ndarray) -> None:
        """Hold the simulated tool at this pose (Reference, mm); validated here."""
        from spine_nav.geometry import validate_transform

        T = validate_transform(T_reference_tooltip, "T_reference_tooltip")
        with self._lock:
            self._tool = T
        self._publish()

    def _publish(self) -> None:
        from spine_nav.nodes.conversions import validated_matrix_mm_to_pose_stamped

        with self._lock:
            T = self._tool
        if T is not None:
            self.tool_pub.publish(validated_matrix_mm_to_pose_stamped(T, "Reference", time.time()))

    def _hand_loop(self) -> None:
        while not self._stop.wait(0.01):
            self._publish()

    def select_screw(self, screw_id: str, timeout_s: float = 5.0) -> tuple[bool, str]:
        from spine_nav_interfaces.srv import SelectScrew

        return _bounded_call(self.select_cli, SelectScrew.Request(screw_id=screw_id), "guard/select_screw",
                             timeout_s, timeout_s)

    def wait_for(self, predicate, timeout_s: float, period_s: float = 0.01) -> bool:
        from spine_nav.demo.conductor import wait_locked

        return wait_locked(self._lock, predicate, timeout_s, period_s)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._hand.join(timeout=2.0)
        self._spin.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


class TrainStack:
    """sim_tracker (OpenIGTLink server) -> tracker_bridge -> trajectory_guard, plus plan_publisher with the
    registered plan on ``plan/registered``, composed in this process under a namespace of its own (two
    sessions on one machine do not see each other's topics); and the :class:`Participant`."""

    def __init__(self, case, log: Callable[[str], None] = info, namespace: str | None = None,
                 extra_nodes: tuple[str, ...] = (), extra_overrides: dict | None = None) -> None:
        """``extra_nodes`` composed too (robot mode: ``sim_arm``), ``extra_overrides`` {(node, param): value}
        on top of the trainee's (robot mode: the OR scene, :mod:`spine_nav.cli.train_robot`)."""
        import os

        from spine_nav.nodes.runner import ComposedStack
        from spine_nav.plan import save_plan
        from spine_nav.tracking.transport import free_tcp_port

        self.case = case
        self.namespace = namespace or f"/train_{os.getpid()}"
        self._tmp = tempfile.TemporaryDirectory(prefix="spine_nav_train_")
        plan_path = Path(self._tmp.name) / "registered_plan.json"
        save_plan(case.plan_in_reference(), plan_path)
        self.port = free_tcp_port()
        overrides = {("sim_tracker", "port"): self.port, ("tracker_bridge", "port"): self.port,
                     ("tracker_bridge", "console_port"): 0, ("sim_tracker", "rate_hz"): 100.0,
                     ("plan_publisher", "plan_path"): str(plan_path), ("plan_publisher", "topic"): "plan/registered"}
        overrides.update({(node, k): v for node, k, v in TRAIN_PARAMS})
        overrides.update(extra_overrides or {})
        self.params_file = namespaced_params(PARAMS_FILE, self.namespace, overrides, Path(self._tmp.name) / "params.yaml")
        self.stack = ComposedStack(["sim_tracker", "tracker_bridge", "trajectory_guard", "plan_publisher",
                                    *extra_nodes], params_file=self.params_file,
                                   extra_ros_args=["-r", f"__ns:={self.namespace}"]).start()
        log(f"spine-nav train: stack up in {self.namespace}: sim_tracker (OpenIGTLink 127.0.0.1:{self.port}) -> "
            f"tracker_bridge -> trajectory_guard; plan {case.case_dir / 'plan.json'} registered by "
            f"{case.registration_source}")
        try:
            self.conductor = Participant(self.namespace, robot="sim_arm" in extra_nodes)
        except Exception:
            self.stack.close()
            raise
        self._seen = 0
        #: verdicts on tool samples taken before this (time.time()) belong to the previous screw's pose
        self.valid_from_s = 0.0
        self.settling = False  # True from a screw switch to the first verdict that is not a held VIOLATION

    def wait_ready(self, timeout_s: float = 30.0) -> bool:
        """The guard has the plan and judges the tracked tool (any state but NO_PLAN)."""
        c = self.conductor
        return c.wait_for(lambda: c.last_status is not None and c.last_status.state_name not in ("NO_PLAN", ""),
                          timeout_s)

    def new_statuses(self):
        with self.conductor._lock:
            out = self.conductor.rec.statuses[self._seen:]
            self._seen += len(out)
        return out

    def close(self) -> None:
        try:
            self.conductor.close()
        finally:
            self.stack.close()
            self._tmp.cleanup()


def namespaced_params(params_file: Path, namespace: str, overrides: dict, out: Path) -> Path:
    """config/nodes.yaml with each node's section keyed by its fully qualified name under ``namespace``
    (``-p node:name:=value`` and plain node keys do not reach namespaced nodes) plus ``overrides``
    {(node, parameter): value}; written to ``out``."""
    import yaml

    data = yaml.safe_load(Path(params_file).read_text()) or {}
    for (node, k), v in overrides.items():
        data.setdefault(node, {}).setdefault("ros__parameters", {})[k] = v
    ns = namespace.rstrip("/")
    out.write_text(yaml.safe_dump({f"{ns}/{node}": sec for node, sec in data.items()}, sort_keys=False))
    return out


def _screw_line(r: dict) -> str:
    basis = "" if r["grade_basis"] == "cortex" else "  [PROXY grade: no ground truth]"
    return (f"{r['screw_id']:10s} grade {r['gr_grade']}  entry {r['entry_error_mm']:.2f} mm  tip {r['tip_error_mm']:.2f} mm"
            f"  angle {r['angular_error_deg']:.2f} deg  breach {r['breach_mm']:.2f} mm  {r['time_to_place_s']:.1f} s"
            f"  violations {r['guard_violations']} (depth {r['depth_overruns']}){basis}")


PUBLIC_KEYS = ("screw_id", "level", "gr_grade", "entry_error_mm", "tip_error_mm", "angular_error_deg", "breach_mm",
               "grade_basis", "grade_note", "time_to_place_s", "guard_violations", "depth_overruns", "guard_states")


def run(args: argparse.Namespace) -> int:
    from spine_nav.training.case import CaseError
    from spine_nav.training.script import ScriptError
    from spine_nav.training.store import SessionStore, StoreError

    if not args.trainee:
        return fail("--trainee: give the trainee's name")
    if args.headless and not args.script:
        return fail("--headless needs --script attempt.jsonl")
    if args.script and not args.headless:
        return fail("--script plays headless: add --headless")
    if not args.speed > 0:
        return fail(f"--speed {args.speed}: must be > 0")
    try:
        case = _open_case(args)
        store = SessionStore(args.db)
    except (CaseError, StoreError, ValueError, FileExistsError) as exc:
        return fail(str(exc))
    if not case.has_ground_truth:
        info(f"spine-nav train: {case.case_dir} has no ground_truth.json: screws are graded with the PROXY "
             "(tip lateral deviation beyond 1 mm), not against the cortex")
    try:
        if args.headless and args.mode == "robot":
            from spine_nav.cli.train_robot import run_robot_script

            kit = SimpleNamespace(TrainStack=TrainStack, pump=_pump, end_screw=_end_screw, screw_line=_screw_line,
                                  emit=_emit_attempt, PUBLIC_KEYS=PUBLIC_KEYS)
            return run_robot_script(args, case, store, kit)
        if args.headless:
            return _run_script(args, case, store)
        return _run_page(args, case, store)
    except (ScriptError, CaseError) as exc:
        return fail(str(exc))
    finally:
        store.close()


def _run_page(args, case, store) -> int:
    """`spine-nav train --case DIR --trainee NAME [--port]`: the console in trainee mode
    (:mod:`spine_nav.console.trainee`) until Ctrl-C / ``--duration``; the attempt is kept (unfinished when a
    screw was left in progress)."""
    import threading

    from spine_nav.console import CaseData
    from spine_nav.console.trainee import TraineeConsoleServer, TraineeSession
    from spine_nav.nodes.console_bridge import serve_console
    from spine_nav.training.attempt import Attempt
    from spine_nav.training.case import case_key
    from spine_nav.training.store import SessionStore

    store.close()
    store = SessionStore(args.db, any_thread=True)
    rig = None
    try:
        if args.mode == "robot":  # the scripted attempts' arm: sim_arm composed here, arm_guide in its own process
            from spine_nav.cli.train_robot import start_robot_stack

            stack, rig = start_robot_stack(case, TrainStack)
        else:
            stack = TrainStack(case)
    except Exception as exc:  # noqa: BLE001
        return fail(f"the {'robot ' if args.mode == 'robot' else ''}stack did not start: {exc}", code=1)
    server = TraineeConsoleServer(CaseData(case.case_dir), host=args.host, port=args.port)
    stop = threading.Event()
    session = None
    try:
        server.start()
        bridge = threading.Thread(target=serve_console, args=(server, ["-r", f"__ns:={stack.namespace}"],
                                                              lambda: not stop.is_set()), daemon=True)
        bridge.start()
        if not stack.wait_ready():
            return fail("the guard never judged the simulated tool (no plan / no tracking within 30 s)", code=1)
        if rig is not None:
            why = rig.wait_arm_service()
            if why:
                return fail(why, code=1)
        attempt_id = store.start_attempt(args.trainee, case_key(case), args.mode, "page")
        session = TraineeSession(case, store, Attempt(case, store, attempt_id), stack, server.publish,
                                 args.trainee, args.mode, robot=rig)
        server.session_handler = session.handle
        info(f"spine-nav train: trainee mode for {args.trainee} at {server.url} (attempt {attempt_id}); Ctrl-C to stop")
        t0 = time.monotonic()
        while args.duration <= 0 or time.monotonic() - t0 < args.duration:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        return fail(str(exc), code=1)
    finally:
        server.session_handler = None
        if session is not None:
            finished = session.close()
            info(f"spine-nav train: attempt {session.attempt.attempt_id} kept "
                 f"({'finished' if finished else 'unfinished'}, {len(session.attempt.results)} screw(s) graded)")
        stop.set()
        server.stop()
        if rig is not None:
            rig.close()
        stack.close()
        store.close()
    return 0


def _run_script(args, case, store) -> int:
    from spine_nav.training.attempt import Attempt
    from spine_nav.training.case import case_key
    from spine_nav.training.script import check_against_case, load_script, to_reference

    samples = load_script(args.script)
    check_against_case(samples, case)
    poses = [to_reference(s, case) for s in samples]
    try:
        stack = TrainStack(case)
    except Exception as exc:  # noqa: BLE001 - the stack could not start: say why, grade nothing
        return fail(f"the stack did not start: {exc}", code=1)
    attempt_id = store.start_attempt(args.trainee, case_key(case), args.mode, f"script:{Path(args.script).name}")
    att = Attempt(case, store, attempt_id)
    finished = False
    try:
        c = stack.conductor
        first = samples[0].screw_id
        c.move_tool(poses[0])
        if not stack.wait_ready():
            return fail("the guard never judged the simulated tool (no plan / no tracking within 30 s)", code=1)
        _select(stack, first)
        t0 = time.monotonic()
        current = None
        for s, T in zip(samples, poses):
            delay = t0 + s.t_s / args.speed - time.monotonic()
            if delay > 0:
                _pump(stack, att, delay)
            if s.screw_id != current and current is not None:
                _end_screw(stack, att, args)  # graded at the tool's last pose on that screw
            c.move_tool(T)
            if s.screw_id != current:
                if current is not None:
                    # select the new screw only once the guard judges the tool at its new pose, so that no
                    # stale sample of the previous screw's pose is judged against the new screw
                    _await_pose_judged(stack, case, current, s)
                    _select(stack, s.screw_id)
                stack.valid_from_s = time.time()  # samples of the previous screw's pose are not this screw's
                stack.settling = True
                current = s.screw_id
            att.input(s.t_s, s.screw_id, T)
            _pump(stack, att, 0.0)
        _end_screw(stack, att, args)
        finished = True
    finally:
        att.close(finished=finished)
        stack.close()
    out = {"attempt_id": attempt_id, "trainee": args.trainee, "case": case.describe(), "mode": args.mode,
           "path": f"sim_tracker (OpenIGTLink 127.0.0.1:{stack.port}) -> tracker_bridge -> trajectory_guard",
           "screws": [{k: r[k] for k in PUBLIC_KEYS} for r in att.results]}
    return _emit_attempt(args, out, att.results, f"attempt {attempt_id} ({args.trainee}, {case.variant or 'case'} {case.case_dir}):")


def _emit_attempt(args, out: dict, results, title: str) -> int:
    """Print a graded attempt: ``out`` as JSON with ``--json``, else ``title`` and one line per screw."""
    if args.json:
        print_json(out)
    else:
        print(title)
        for r in results:
            print("  " + _screw_line(r))
    return 0



def _bounded_call(client, request, name: str, timeout_s: float, wait_s: float) -> tuple[bool, str]:
    """Call a service whose response has ``success`` and ``message``: (success, message); (False, why) when
    the service is not up within ``wait_s`` or gives no answer within ``timeout_s`` (spun elsewhere)."""
    if not client.wait_for_service(timeout_sec=wait_s):
        return False, f"{name.split()[0]} not available"
    fut = client.call_async(request)
    deadline = time.monotonic() + timeout_s
    while not fut.done():
        if time.monotonic() > deadline:
            return False, f"{name}: no answer within {timeout_s:.0f} s"
        time.sleep(0.005)
    r = fut.result()
    return r.success, r.message

def _select(stack, screw_id: str) -> None:
    ok, msg = stack.conductor.select_screw(screw_id)
    if not ok:
        raise RuntimeError(f"guard refused screw {screw_id}: {msg}")


def _await_pose_judged(stack, case, active_screw_id: str, sample, tol_mm: float = 0.5,
                       timeout_s: float = 5.0) -> bool:
    """Bounded wait until the guard has judged the tool at ``sample``'s pose (still against
    ``active_screw_id``).

    The tool truth reaches the simulated tracker over a best-effort topic, so tracker samples taken just
    after a move can still carry the previous pose (tens of ms on a loaded machine). Selecting the next
    screw before the new pose is seen would let the guard judge the previous screw's final pose (at
    depth) against the next screw: a VIOLATION (and its debounce) that the trainee never caused. The
    depth along the active screw is frame-independent (the registration is rigid), so a verdict whose
    ``depth_mm`` matches the script's pose within ``tol_mm`` judged the new pose."""
    screw = case.plan.screw(active_screw_id)
    expected = float(np.dot(np.asarray(sample.tip_mm, dtype=float) - np.asarray(screw.entry_mm, dtype=float),
                            np.asarray(screw.direction, dtype=float)))
    c = stack.conductor
    start = len(c.rec.statuses)
    return c.wait_for(lambda: any(st.screw_id == active_screw_id and abs(st.depth_mm - expected) < tol_mm
                                  for st in c.rec.statuses[start:]), timeout_s)


def _pump(stack, att, seconds: float) -> None:
    """Hand the guard's new verdicts to the attempt, for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        for st in stack.new_statuses():
            if st.sample_s >= stack.valid_from_s or st.state == "TRACKING_LOST":
                if stack.settling and st.reason.startswith("VIOLATION held"):
                    continue  # the debounce of the previous screw's VIOLATION (the tool left it), not this screw's
                stack.settling = False
                att.guard(st.state, st.reason, st.screw_id)
        if time.monotonic() >= deadline:
            return
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))


def _end_screw(stack, att, args) -> None:
    """The screw ends at the tool's last pose: wait (bounded) until the guard judged a sample taken after
    it was set, hand over its verdicts, grade."""
    t_set = time.time()
    c = stack.conductor
    c.wait_for(lambda: c.rec.statuses and c.rec.statuses[-1].sample_s > t_set + 0.02, 3.0)
    _pump(stack, att, 0.05)
    r = att.end_screw()
    if r is not None and not args.json:
        info("  " + _screw_line(r))


# ---------------------------------------------------------------------------------------------
def run_report(args: argparse.Namespace) -> int:
    from spine_nav.training.report import progress, text_report, write_html
    from spine_nav.training.store import SessionStore, StoreError

    if not Path(args.db).is_file():
        return fail(f"--db {args.db}: no such database")
    try:
        with SessionStore(args.db) as store:
            if args.trainee and args.trainee not in store.trainees():
                return fail(f"--trainee {args.trainee}: not in {args.db} (have {', '.join(store.trainees()) or 'none'})")
            attempts = store.attempts(args.trainee)
            board = store.leaderboard()
    except StoreError as exc:
        return fail(str(exc))
    rep = progress(attempts, board, args.trainee)
    if args.html:
        path = write_html(rep, args.html)
        info(f"spine-nav train report: wrote {path}")
    if args.json:
        print_json(rep)
    else:
        print(text_report(rep))
    return 0


# ---------------------------------------------------------------------------------------------
def run_replay(args: argparse.Namespace) -> int:
    from spine_nav.training.case import CaseError, load_training_case, tool_pose
    from spine_nav.training.store import SessionStore, StoreError

    if not args.speed > 0:
        return fail(f"--speed {args.speed}: must be > 0")
    try:
        with SessionStore(args.db) as store:
            att = store.attempt(args.attempt)
            samples = store.samples(args.attempt)
        case = load_training_case(att["case_dir"])
    except (StoreError, CaseError) as exc:
        return fail(str(exc))
    if not samples:
        return fail(f"--attempt {args.attempt}: no tool stream kept")
    import os

    namespace = f"/train_replay_{os.getpid()}"
    console = None
    try:
        if not args.no_console:
            console = _console_process(case.case_dir, args.port, namespace)
            info(f"spine-nav train replay: console at {console.url}")
        stack = TrainStack(case, namespace=namespace)
    except Exception as exc:  # noqa: BLE001
        if console is not None:
            console.close()
        return fail(f"the stack did not start: {exc}", code=1)
    states: dict[str, list[str]] = {}
    try:
        c = stack.conductor
        c.move_tool(tool_pose(samples[0].tip_mm, samples[0].axis))
        if not stack.wait_ready():
            return fail("the guard never judged the simulated tool (no plan / no tracking within 30 s)", code=1)
        if console is not None and args.wait_viewer_s > 0:
            _wait_for_viewer(console.url, args.wait_viewer_s)
        current = None
        t0 = time.monotonic()
        for s in samples:
            if s.screw_id != current:
                c.select_screw(s.screw_id)
                current = s.screw_id
            delay = t0 + s.t_s / args.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c.move_tool(tool_pose(s.tip_mm, s.axis))
            for st in stack.new_statuses():
                seen = states.setdefault(st.screw_id or current, [])
                if not seen or seen[-1] != st.state:
                    seen.append(st.state)
        time.sleep(0.3)
        for st in stack.new_statuses():
            seen = states.setdefault(st.screw_id or current, [])
            if not seen or seen[-1] != st.state:
                seen.append(st.state)
        if args.hold > 0:
            time.sleep(args.hold)
    finally:
        stack.close()
        if console is not None:
            console.close()
    out = {"attempt_id": args.attempt, "trainee": att["trainee"], "samples": len(samples),
           "guard_states": states, "kept_screws": [{k: s[k] for k in ("screw_id", "gr_grade")} for s in att["screws"]]}
    if args.json:
        print_json(out)
    else:
        print(f"replayed attempt {args.attempt} ({att['trainee']}): {len(samples)} tool samples; guard states "
              + "; ".join(f"{k}: {' -> '.join(v)}" for k, v in states.items()))
    return 0


def _wait_for_viewer(url: str, timeout_s: float) -> bool:
    """Wait (``timeout_s`` bound) until a page is connected to the console at ``url`` and the console hears
    the stack's guard, so that the viewer sees the replay from its first sample; says so either way."""
    from spine_nav.console.browser import console_status

    info(f"spine-nav train replay: open {url} - the replay starts when a page is connected "
         f"(at most {timeout_s:g} s from now)")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = console_status(url) or {}
        if st.get("pages", 0) > 0 and (st.get("ages_s") or {}).get("guard") is not None:
            info("spine-nav train replay: a page is connected, replaying")
            return True
        time.sleep(0.1)
    info(f"spine-nav train replay: no page connected within {timeout_s:g} s, replaying anyway")
    return False


def _console_process(case_dir: Path, port: int, namespace: str):
    """``spine-nav console`` as a child process bridging the stack's namespace (its output to a log file),
    ended by SIGINT like Ctrl-C."""
    import signal

    from spine_nav.console.browser import ConsoleProcess

    return ConsoleProcess(case_dir, port or None, extra_args=("--ros-args", "-r", f"__ns:={namespace}"),
                          first_signal=signal.SIGINT)
