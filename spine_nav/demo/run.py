"""`spine-nav demo`: a whole robot-assisted pedicle-screw case in simulation, through the real stack.

1. Phantom + plan (or ``--case DIR``) and the bone-quality report.
2. Intraop CBCT (``--bad-registration`` cuts one level out of its field of view).
3. Hand-eye calibration of the simulated arm (calibration motion in MuJoCo, noisy marker).
4. The stack as ROS 2 nodes (one process, real DDS): ``sim_tracker`` (OpenIGTLink server over
   TCP), ``tracker_bridge`` (its client), ``registration``, ``trajectory_guard``, ``arm_guide``,
   ``sim_arm`` (MuJoCo). The conductor (:mod:`spine_nav.demo.conductor`) drives it through its
   services and records everything.
5. Per screw: select it on the guard, align the arm, drive the simulated drill down the *true*
   guide axis until the guard reports the depth stop, withdraw. The placed screw (true drill path)
   is compared with the plan in PreopCT through the phantom's ground truth, and graded
   (Gertzbein-Robbins) against the phantom's cortex.
6. report.json, report.md and PNG plots.

Fault injection (each ends the case with the arm held and the cause in the report):
``--occlude`` (the drill's markers vanish mid-drilling), ``--bump`` (the reference array is knocked
mid-drilling), ``--bad-registration`` (a level fails the gate; its screws are skipped).
Simulation faults are injected in-process on the simulated tracker (its simulation-control API).
Process faults (``--inject kill:NODE``, :mod:`spine_nav.demo.process_faults`) do not end the case: the
arm holds, the supervisor respawns the process, and the case goes on once the stack is healthy again.
"""
from __future__ import annotations

import enum
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from spine_nav.demo.report import CaseReport, FaultResult, ScrewResult, percentile_ms, summary_table, write_report
from spine_nav.geometry import invert, make_transform, transform_points
from spine_nav.guard.core import NO_PLAN_YET
from spine_nav.resources import share_path
from spine_nav.tracking.transport import free_tcp_port
from spine_nav.training.grading import GR_NO_BREACH_TOL_MM  # noqa: F401  (one value, shared with trainee mode)

Log = Callable[[str], None]
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
#: Gertzbein-Robbins grading of the simulated screw: breaches up to GR_NO_BREACH_TOL_MM (imported above,
#: spine_nav.training.grading) count as none (sub-voxel).

#: arm_guide's heartbeat watches of the guard (guard/status) and the bridge (tracking/health), both published
#: every 20 ms (config/nodes.yaml heartbeat_period_ms, health_publish_period_ms): 70 ms in the demo (config 50).
#: Why (docs/safety.md "Heartbeat timeouts in the demo", 2026-12-06, this shared 2-core VM): with 50 ms the
#: full demo (10 screws, seed 0, load average ~15) held the arm 9x "bridge silent" and 16x "guard silent"
#: (all recovered by resume). The gaps between heartbeats as the arm guide heard them while guiding
#: (ArmGuide.heartbeat_gaps, on /diagnostics): 10 screws, load average 15-18: guard 13839 gaps, max 24.1 ms;
#: bridge 20734 gaps, max 35.7 ms (3 above 30 ms); with --busy-core, load average 13-39: guard 13889 / bridge
#: 20827 gaps, 2 each above 30 ms, 1 each above 50 ms, and that one a single ~105 ms stall (> 100 ms: held,
#: as it must be). So p99.9 < 30 ms; 70 ms is more than twice the largest gap of the normal run, 3.5
#: periods (three heartbeats lost), and removes every stop by a gap of 50-70 ms. Not wider: a dead guard
#: or bridge must still hold the arm within 100 ms (issue #14) when the supervisor's process_lost is slow
#: under load (36-712 ms seen): kill:tracker_bridge 63.0 / 38.7 ms, kill:trajectory_guard 68.2 / 64.0 ms with 70 ms.
#: command_source_timeout_ms stays 50 (config): the headless demo has no command source, and
#: `demo --hosts` measures cut:console against the 100 ms target with it (docs/network.md).
DEMO_HEARTBEAT_TIMEOUT_MS = 70.0

#: Watchdogs widened for the demo, which runs the whole stack, both simulators and the recorder on
#: 2 shared cores in Python (a 1 kHz servo included): with the clinical defaults of config/nodes.yaml
#: (50 ms) scheduler stalls stop the arm several times per screw. Still a hold on any real loss.
#: Reported in report.json (case.watchdogs).
DEMO_WATCHDOGS = (
    ("trajectory_guard", "stale_after_s", 0.1),
    # the depth stop is planned depth + margin: with ~0.3 mm of tracked-tip noise along the axis a zero
    # margin turns the last sample at the target into a VIOLATION (and an arm hold) half of the time
    ("trajectory_guard", "depth_margin_mm", 1.0),
    # 70 ms (config 50): a silent tracker (e.g. kill:sim_tracker) holds the arm within 100 ms via TRACKING_LOST
    ("tracker_bridge", "timeout_ms", 70.0),
    ("arm_guide", "reference_timeout_s", 0.2),
    ("arm_guide", "cycle_watchdog_s", 0.05),
    ("arm_guide", "feedback_timeout_s", 0.15),
    # heartbeat watches (docs/safety.md): see DEMO_HEARTBEAT_TIMEOUT_MS
    ("arm_guide", "guard_timeout_ms", DEMO_HEARTBEAT_TIMEOUT_MS),
    ("arm_guide", "bridge_timeout_ms", DEMO_HEARTBEAT_TIMEOUT_MS),
    ("sim_arm", "command_timeout_s", 0.08),    # as config/nodes.yaml: holds the arm when arm_guide dies
)


class ScrewAborted(Exception):
    """One screw given up before its placement could be graded. ``reason`` goes into the report (its
    :class:`ScrewResult`); ``logged``: whether the case log says it too (a refused selection and a drill
    that never started are only reported)."""

    def __init__(self, reason: str, logged: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.logged = reason, logged


class DrillEnd(enum.Enum):
    """Why the drilling of one screw ended."""

    DEPTH_STOP = "depth stop"  # the guard reported the planned depth reached: the screw is placed
    GUARD_AFTER_FAULT = "guard after the injected fault"  # VIOLATION / TRACKING_LOST once the demo injected one
    TIME_LIMIT = "drill time limit"  # neither within the time the drill needs at its speeds, plus 30 s


@dataclass
class DrillOutcome:
    """What :meth:`Demo.drill` returns: how it ended (``reason`` is the report's text), the last true tool
    tip pose it commanded (T_reference_tooltip, mm; None if it never moved) and when the demo's own fault
    was injected (wall clock s; None: not injected)."""

    end: DrillEnd
    reason: str
    T_last: np.ndarray | None
    injected_wall_s: float | None


@dataclass
class _DrillState:
    """The drilling loop's state: true tip depth along the guide axis (mm, 0 = planned entry; negative =
    still in the tube), the deepest reached, the last step's time and the loop's deadline (monotonic s),
    process faults still to inject at their depths (mm)."""

    depth_true_mm: float
    deepest_mm: float
    t_prev: float
    deadline: float
    kills: list[tuple[str, float]]
    T_last: np.ndarray | None = None
    injected_wall_s: float | None = None


@dataclass
class DemoConfig:
    out_dir: Path
    seed: int = 0
    levels: Sequence[str] = LUMBAR
    bone: str = "normal"
    case_dir: Path | None = None
    occlude: bool = False
    bump: bool = False
    bad_registration: bool = False
    max_screws: int | None = None          # tests run a 2-screw version
    voxel_mm: float | None = None          # phantom resolution (None: phantom defaults)
    cbct_voxel_mm: float | None = None
    tracker_rate_hz: float = 100.0
    rt_priority: int = 30                  # SCHED_FIFO for the navigation and arm processes (0: normal)
    sim_rt_priority: int = 20              # SCHED_FIFO for the simulators and recorder: below the stack, so a
                                           # busy simulator thread never keeps a stack thread off a core
    drill_speed_mm_s: float = 12.0
    final_speed_mm_s: float = 2.0          # for the last 6 mm (guard's remaining depth)
    reinsert_speed_mm_s: float = 40.0      # back down an already drilled hole after a pause
    standoff_mm: float = 25.0
    align_timeout_s: float = 20.0
    handeye_poses: int = 20
    extra_guard_params: dict = field(default_factory=dict)
    #: arm_guide -> sim_arm commands (spine_nav.nodes.arm_params): spine_nav, joint_trajectory, forward_position
    command_interface: str = "spine_nav"
    inject: Sequence[str] = ()             # process faults, "kill:NODE" (spine_nav.demo.process_faults)
    record_bag: bool = True                # case.mcap (spine-nav bag record in its own process); --no-bag
    floor_relay: bool = True               # run the bare relay node next to the stack (report: latency.floor_*)


def _p(node: str, name: str, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        value = "[" + ",".join(repr(float(v)) for v in value) + "]"
    elif isinstance(value, bool):
        value = "true" if value else "false"
    return ["-p", f"{node}:{name}:={value}"]


class Demo:
    def __init__(self, cfg: DemoConfig, log: Log) -> None:
        self.cfg, self.log = cfg, log
        self.faults: list[FaultResult] = []
        self.results: list[ScrewResult] = []
        self.registration: dict = {}
        self.placed: dict = {}
        self.bag = None  # the case bag's recorder process (spine_nav.demo.bag), when recording
        self.bag_result: dict = {}
        self.tracker_send_delay_s: Sequence[float] = ()  # the simulated tracker's own share of latency
        self.all_procs: list = []  # every child process of the case (stack, registration, floor relay)
        self.missing_records: dict[str, str] = {}  # node -> why its latency record is missing (report)
        # 1-2 the case (prepare_case): files, plan (PreopCT), ground truth, analytic phantom, bone quality
        self.case_dir: Path | None = None
        self.plan = None  # spine_nav.plan.Plan
        self.truth: dict[str, Any] = {}
        self.T_cbct_preop: dict[str, np.ndarray] = {}
        self.spine = None  # spine_nav.phantom.case.PhantomSpine
        self.preop_ct = None  # spine_nav.imaging.Volume
        self.bone_quality: dict[str, Any] = {}
        self.cbct_path: Path | None = None
        self.bad_level: str | None = None  # --bad-registration: the level cut out of the CBCT's view
        # 3 the arm (calibrate_arm): kinematics, home pose, scene with the robot base, hand-eye result
        self.kin = None  # spine_nav.arm.kinematics.ArmKinematics
        self.q_home: np.ndarray | None = None
        self.scene = None  # spine_nav.demo.scene.OrScene
        self.T_tracker_robotbase_est: np.ndarray | None = None
        self.handeye: dict[str, Any] = {}
        # 4-5 the running stack (run, run_case)
        self.procs: dict = {}  # label -> SupervisedProcess
        self.sim_arm = None  # the sim_arm node (its MuJoCo arm)
        self.tracker_model = None  # the simulated tracker's model (truth, fault injection)
        self.process_faults = None  # spine_nav.demo.process_faults.ProcessFaults
        self.recording = None  # the conductor's recording, kept for the report
        self.registered = None  # the registered plan (Reference)
        self.not_navigable: dict[str, str] = {}

    # ------------------------------------------------------------------ 1-2 case
    def prepare_case(self):
        from spine_nav.phantom.case import PhantomSpine, generate_case, load_truth
        from spine_nav.imaging.volume_io import load_volume
        from spine_nav.plan import load_plan
        from spine_nav.plan.bone_quality import assess_plan, format_table

        cfg = self.cfg
        case_dir = cfg.out_dir / "case"
        if cfg.case_dir is not None:
            src = Path(cfg.case_dir)
            self.log(f"[1/6] case from {src}")
            if case_dir.exists():
                shutil.rmtree(case_dir)
            shutil.copytree(src, case_dir)
        else:
            self.log(f"[1/6] generating the phantom: levels {'-'.join([cfg.levels[0], cfg.levels[-1]])}, "
                     f"{cfg.bone} bone, seed {cfg.seed}")
            if case_dir.exists():
                shutil.rmtree(case_dir)
            generate_case(case_dir, seed=cfg.seed, levels=tuple(cfg.levels), bone=cfg.bone, voxel_mm=cfg.voxel_mm,
                          cbct_voxel_mm=cfg.cbct_voxel_mm, progress=lambda m: self.log(f"      {m}"))
        self.case_dir = case_dir
        self.plan = load_plan(case_dir / "plan.json")
        self.truth, self.T_cbct_preop = load_truth(case_dir / "ground_truth.json")
        self.spine = PhantomSpine.from_truth_file(case_dir / "ground_truth.json")
        self.preop_ct = load_volume(case_dir / "preop_ct.nii.gz")
        self.bone_quality = assess_plan(self.preop_ct, self.plan)
        self.log("      bone quality along each planned screw:")
        for line in format_table(self.bone_quality).splitlines():
            self.log(f"      {line}")
        self.cbct_path = case_dir / "cbct.nii.gz"
        if cfg.bad_registration:
            self.cbct_path = self._cut_level_out_of_view()

    def _cut_level_out_of_view(self) -> Path:
        from spine_nav.imaging.volume_io import load_volume, save_volume
        from spine_nav.registration.badcases import cut_fov

        levels = self.plan.levels
        bad = levels[-1] if len(levels) > 1 else levels[0]
        neighbour = levels[-2] if len(levels) > 1 else levels[0]
        centre = transform_points(self.T_cbct_preop[bad], self.spine.centre_mm(bad))
        towards = transform_points(self.T_cbct_preop[neighbour], self.spine.centre_mm(neighbour))
        if bad == neighbour:
            towards = centre + np.array([0.0, 0.0, 50.0])
        cbct = cut_fov(load_volume(self.case_dir / "cbct.nii.gz", frame="Reference"), centre, towards)
        path = self.case_dir / "cbct_bad_fov.nii.gz"
        save_volume(cbct, path, overwrite=True)
        self.bad_level = bad
        self.log(f"[2/6] --bad-registration: CBCT cut through the body of {bad} (half of it out of view)")
        return path

    # ------------------------------------------------------------------ 3 hand-eye
    def calibrate_arm(self) -> None:
        from spine_nav.arm.kinematics import ArmKinematics
        from spine_nav.arm.model import load_arm_model
        from spine_nav.sim.scenario import handeye_in_sim
        from spine_nav.demo.scene import layout_for_plan
        from spine_nav.geometry import transform_difference
        from spine_nav.sim.arm import MujocoArm, default_scene

        arm_scene = default_scene()
        self.kin = ArmKinematics(load_arm_model())
        self.q_home = arm_scene.q_home_rad
        true_plan_ref = self.plan.transformed_per_level(self.T_cbct_preop, frame="Reference")
        self.scene = layout_for_plan(true_plan_ref, arm_scene.T_tracker_robotbase, kin=self.kin,
                                     standoff_mm=self.cfg.standoff_mm, log=lambda m: self.log(f"      {m}"))
        self.log(f"[3/6] robot base: {self.scene.layout.summary()}")
        he = handeye_in_sim(MujocoArm(self.kin.arm, T_tracker_robotbase=self.scene.T_tracker_robotbase), self.kin,
                            self.q_home, n_poses=self.cfg.handeye_poses, noise_mm=0.1, seed=self.cfg.seed)
        self.T_tracker_robotbase_est = he.T_tracker_robotbase
        err_mm, err_deg = transform_difference(he.T_tracker_robotbase, self.scene.T_tracker_robotbase)
        self.handeye = {"residual_rms_mm": he.residual_rms_mm, "error_vs_truth_mm": err_mm,
                        "error_vs_truth_deg": err_deg, "n_poses": he.n_poses}
        self.log(f"[3/6] hand-eye calibration: {he.n_poses} poses, residual {he.residual_rms_mm:.3f} mm RMS "
                 f"(vs simulation truth {err_mm:.2f} mm / {err_deg:.3f} deg)")

    # ------------------------------------------------------------------ 4 stack
    def stack_args(self, port: int) -> list[str]:
        from spine_nav.demo.scene import pose_params

        cfg = self.cfg
        args: list[str] = []
        for k, v in pose_params(self.scene.T_tracker_reference, "tracker_reference").items():
            args += _p("sim_tracker", k, v)
        for k, v in pose_params(self.scene.T_tracker_robotbase, "tracker_robotbase").items():
            args += _p("sim_arm", k, v)
        for k, v in pose_params(self.T_tracker_robotbase_est, "tracker_robotbase").items():
            args += _p("arm_guide", k, v)
        args += _p("sim_tracker", "port", port) + _p("sim_tracker", "rate_hz", cfg.tracker_rate_hz)
        args += _p("sim_tracker", "seed", cfg.seed) + _p("tracker_bridge", "port", port)
        # the sample time is the moment the simulated tracker transmits: its own lateness in this shared
        # simulator process (reported as "tracker_send_late") is not the stack's latency
        args += _p("sim_tracker", "stamp_at_send", True)
        args += _p("arm_guide", "standoff_mm", cfg.standoff_mm)
        args += _p("sim_arm", "q0_rad", list(self.q_home)) + _p("sim_arm", "marker_noise_mm", 0.1)
        # The demo runs stack, simulators and recorder on 2 shared cores: the servo watchdogs get room for
        # scheduler stalls (tight defaults in config/nodes.yaml stay for real hardware). Every stop they
        # still cause is recorded in the report.
        for node, name, value in DEMO_WATCHDOGS:
            args += _p(node, name, value)
        args += _p("sim_arm", "publish_rate_hz", 100.0)
        args += _p("arm_guide", "command_rate_hz", 50.0)  # keep-alive only: every tracker sample also triggers one
        # the nodes' own per-sample latency records (stamp -> their publish() returned), read for the report
        args += _p("trajectory_guard", "latency_record_path", str(self.latency_record("trajectory_guard")))
        args += _p("arm_guide", "latency_record_path", str(self.latency_record("arm_guide")))
        for k, v in cfg.extra_guard_params.items():
            args += _p("trajectory_guard", k, v)
        for node in ("arm_guide", "sim_arm"):  # sim_arm stands in for the ros2_control controller
            args += _p(node, "command_interface", cfg.command_interface)
        return args

    def latency_record(self, node: str) -> Path:
        return self.cfg.out_dir / "logs" / f"{node}_latency.json"

    def _read_latency_record(self, node: str) -> list[float]:
        """The node's record, or [] with the reason logged and kept (report: ``latency.missing_records``)."""
        from spine_nav.demo.processes import read_node_latency_record

        values, why = read_node_latency_record(self.latency_record(node), node, self.all_procs)
        if why:
            self.log(f"      {why}")
            self.missing_records[node] = why
        return values

    # ------------------------------------------------------------------ helpers on the live sim
    def true_guide_in_reference(self) -> np.ndarray:
        """T_reference_guidetube from the simulator's truth (MuJoCo joints, true reference pose now)."""
        _, q, _ = self.sim_arm.sim.state()
        T_tracker_guide = self.scene.T_tracker_robotbase @ self.kin.fk(q, "GuideTube")
        model = self.tracker_model
        T_tracker_reference = model.T_tracker_reference_true(model.model_time_s(time.time()))
        return invert(T_tracker_reference) @ T_tracker_guide

    @staticmethod
    def approach_pose(screw, lift_mm: float) -> np.ndarray:
        """Tool tip ``lift_mm`` above the planned entry on the planned line, +z along the direction."""
        z = screw.direction
        x = np.cross([0.0, 0.0, 1.0], z)
        if np.linalg.norm(x) < 1e-6:
            x = np.cross([0.0, 1.0, 0.0], z)
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        return make_transform(np.column_stack([x, y, z]), screw.entry_mm - lift_mm * z)

    # ------------------------------------------------------------------ the case
    def run(self) -> CaseReport:
        from spine_nav.demo.conductor import Conductor
        from spine_nav.nodes.runner import ComposedStack, realtime_threads

        t_start = time.monotonic()
        self.prepare_case()
        self.calibrate_arm()
        port = free_tcp_port()
        params_file = share_path("config", "nodes.yaml")
        args = self.stack_args(port)
        logs = self.cfg.out_dir / "logs"
        self.log(f"[4/6] starting the stack as ROS 2 processes over DDS: tracker_bridge + trajectory_guard, "
                 f"arm_guide, registration; simulators sim_tracker (OpenIGTLink 127.0.0.1:{port}, "
                 f"{self.cfg.tracker_rate_hz:g} Hz) + sim_arm (MuJoCo) in this process (logs: {logs})")
        from spine_nav.demo.process_faults import (ProcessFaults, parse_inject, process_lost_publisher,
                                                   replica_tracker_model, stack_processes)
        from spine_nav.demo.processes import Supervisor

        rt = self.cfg.rt_priority
        kills = [parse_inject(k) for k in self.cfg.inject]
        t0_tracker = time.time()
        if kills:  # one process per node (as launch/), the simulated tracker too, on a shared timeline
            self.log("      --inject kill:...: every node in its own process, the simulated tracker too")
            args += _p("sim_tracker", "t0_wall_s", t0_tracker)
        procs = stack_processes(args, logs, rt, self.cfg.sim_rt_priority, split=bool(kills))
        self.procs = {p.label: p for p in procs}
        self.all_procs = procs  # the floor relay too (appended below): read_node_latency_record finds the host
        supervisor = None
        self.bag = self._start_bag(params_file, logs) if self.cfg.record_bag else None
        if self.cfg.floor_relay:  # the machine's floor under the guard's path, measured during the case (issue 17)
            from spine_nav.demo.processes import floor_relay_process

            procs.append(floor_relay_process(self.latency_record("floor_relay"), logs / "floor_relay.log", rt_priority=rt))
        try:
            with realtime_threads(min(rt, self.cfg.sim_rt_priority)) as sched, \
                    ComposedStack(["sim_arm"] if kills else ["sim_tracker", "sim_arm"], params_file=params_file,
                                  extra_ros_args=args) as stack:
                self.log(f"      stack processes: SCHED_FIFO {rt} when permitted; simulators and recorder: {sched}")
                self.sim_arm = stack.nodes["sim_arm"]
                if kills:
                    self.tracker_model = replica_tracker_model(params_file, self.scene.T_tracker_reference,
                                                               self.cfg.tracker_rate_hz, t0_tracker)
                else:
                    self.tracker_model = stack.nodes["sim_tracker"].model
                    self.tracker_send_delay_s = stack.nodes["sim_tracker"].server.send_delay_s
                conductor = Conductor()
                publish_lost = process_lost_publisher(conductor.node)

                def on_lost(event) -> None:
                    publish_lost(event)
                    self.log(f"      supervisor: {event.message}")

                supervisor = Supervisor(procs, on_lost=on_lost, priority=rt + 1 if rt > 0 else 0,
                                        on_respawn=lambda e: self.log(f"      supervisor: {e.message}")).start()
                self.process_faults = ProcessFaults(supervisor, procs, self.sim_arm, self.log,
                                                    lambda n: self._register(conductor, f"result_{n}.json"))
                try:
                    self.run_case(conductor, procs)
                finally:
                    supervisor.stop()  # before the processes are stopped: no respawn of a stopping stack
                    self.recording = conductor.rec
                    conductor.close()
        finally:
            if supervisor is not None:
                supervisor.stop()
            for p in procs:
                if not p.alive():
                    self.log(f"      process {p.label} exited early (code {p.proc.returncode}):\n{p.tail()}")
                p.stop()
            self.bag_result = self.bag.stop() if self.bag is not None else {}
        duration = time.monotonic() - t_start
        return self.build_report(duration)

    def _register(self, conductor, output_name: str = "result.json"):
        from spine_nav_interfaces.srv import Register

        from spine_nav.nodes.conversions import msg_to_plan

        if not conductor.register_cli.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("registration/register did not come up within 60 s:\n" + self.procs["registration"].tail())
        res = conductor.call(conductor.register_cli, Register.Request(
            preop_path=str(self.case_dir / "preop_ct.nii.gz"),
            labels_path=str(self.case_dir / "preop_labels.nii.gz"),
            cbct_path=str(self.cbct_path), plan_path=str(self.case_dir / "plan.json"),
            output_path=str(self.cfg.out_dir / "registration" / output_name)), 240.0)
        if not res.levels:
            raise RuntimeError(f"registration failed: {res.message}")
        self.registered, self.not_navigable = msg_to_plan(res.registered_plan)
        return res

    def run_case(self, conductor, procs) -> None:
        self.log("[5/6] registering the CBCT to the plan, level by level (registration/register)")
        res = self._register(conductor)
        self.registration = self._registration_summary(res)
        for lv, r in self.registration.items():
            self.log(f"      {lv}: {r['status']:8s} {r['reason']}"
                     + (f"  (TRE vs truth {r['tre_mm']:.2f} mm)" if r.get("tre_mm") is not None else ""))
        if self.cfg.bad_registration:
            failed = [lv for lv, r in self.registration.items() if r["status"] != "accepted"]
            self.faults.append(FaultResult(
                "bad-registration", detected=bool(failed), arm_held=True,
                cause=f"registration gate refused {', '.join(failed) or 'nothing'}",
                detail="; ".join(f"{lv}: {self.registration[lv]['reason']}" for lv in failed)))
        for name in ("arm/command", "guard/select_screw"):
            cli = conductor.arm_cli if name == "arm/command" else conductor.select_cli
            if not cli.wait_for_service(timeout_sec=60.0):
                raise RuntimeError(f"{name} did not come up within 60 s")
        self.screw_loop(conductor)

    def _registration_summary(self, res) -> dict:
        from spine_nav.nodes.conversions import transform_to_matrix_mm
        from spine_nav.geometry import transform_points as tp

        out = {}
        for lv in res.levels:
            entry = {"status": "accepted" if lv.accepted else "failed", "reason": lv.reason,
                     "fitness": lv.fitness, "inlier_rmse_mm": lv.inlier_rmse_mm, "tre_mm": None}
            if lv.accepted and lv.level in self.T_cbct_preop:
                T = transform_to_matrix_mm(lv.preop_to_cbct)
                pts = np.array([p for s in self.plan.screws_at(lv.level) for p in (s.entry_mm, s.target_mm)])
                if len(pts):
                    entry["tre_mm"] = float(np.max(np.linalg.norm(tp(T, pts) - tp(self.T_cbct_preop[lv.level], pts),
                                                                  axis=1)))
            out[lv.level] = entry
        return out

    def screw_loop(self, c) -> None:
        cfg = self.cfg
        screws = list(self.plan.screws)
        if cfg.max_screws is not None:
            screws = screws[: cfg.max_screws]
        fault_done = False
        # process faults (--inject kill:...): spread over the navigable screws, several per screw when needed
        nav_ids = [s.id for s in screws if s.id not in self.not_navigable and s.id in self.registered.ids]
        kills_for = {sid: list(cfg.inject[j::len(nav_ids)]) for j, sid in enumerate(nav_ids)}
        for i, planned in enumerate(screws, 1):
            head = f"      screw {i}/{len(screws)} {planned.id}:"
            if planned.id in self.not_navigable or planned.id not in self.registered.ids:
                reason = self.not_navigable.get(planned.id, "not in the registered plan")
                self.log(f"{head} skipped ({reason})")
                self.results.append(ScrewResult(planned.id, planned.level, "skipped", reason))
                continue
            if fault_done:
                self.results.append(ScrewResult(planned.id, planned.level, "not attempted",
                                                "case stopped after an injected fault"))
                continue
            result, fault = self.one_screw(c, planned, self.registered.screw(planned.id), inject=(
                "occlude" if cfg.occlude else "bump" if cfg.bump else None) if i == 1 or not self.results else None,
                head=head, kills=kills_for.get(planned.id, []))
            self.results.append(result)
            if fault is not None:
                self.faults.append(fault)
                fault_done = True
        # the case ends with the arm held
        ok, msg = c.arm("hold")
        c.wait_for(lambda: c.last_arm is not None and c.last_arm.holding, 2.0)

    def one_screw(self, c, planned, nav, inject: str | None, head: str, kills: Sequence[str] = ()):
        """Align, drill, withdraw one screw. ``planned`` in PreopCT, ``nav`` in Reference (registered).
        ``kills``: process faults injected while drilling, at depths spread over 30-75 % of the screw.
        Returns (its :class:`ScrewResult`, the :class:`FaultResult` of the demo's injected fault or None)."""
        result = ScrewResult(planned.id, planned.level, "stopped")
        t0_status = len(c.rec.statuses)
        try:
            self.select_for_drilling(c, nav)
            self.align_for_drilling(c, nav, result)
            truth_line = planned.transformed(self.T_cbct_preop[planned.level])  # the plan where the bone really is
            result.guide_error_at_drill_mm, result.guide_error_at_drill_deg = self._guide_line_error(truth_line)
            drill = self.drill(c, nav, result, inject, kills)
            statuses = c.rec.statuses[t0_status:]
            result.guard_events = _state_changes(statuses)
            arm = self._final_hold(c, result, drill)
            if inject:
                return result, self._injected_fault(inject, drill, statuses, arm, result, head)
            self.grade_placement(planned, drill, result, head)
        except ScrewAborted as exc:
            result.reason = exc.reason
            if exc.logged:
                self.log(f"{head} {exc.reason}")
            return result, None
        # withdraw the drill well clear of the spine before the next screw is selected
        c.move_tool(drill.T_last @ make_transform(translation_mm=[0.0, 0.0, -(nav.depth_mm + self.cfg.standoff_mm + 80.0)]))
        time.sleep(0.2)
        return result, None

    def select_for_drilling(self, c, nav) -> None:
        """The surgeon shows the drill above the entry; the guard follows this screw (or ScrewAborted)."""
        c.move_tool(self.approach_pose(nav, 80.0))
        c.wait_for(lambda: c.last_status is not None and c.last_status.state_name != "TRACKING_LOST", 5.0)
        # the registered plan reaches the guard on plan/registered, not with the registration's answer: a
        # selection refused because the guard has no plan yet is asked again (bounded), as a surgeon would
        deadline = time.monotonic() + 5.0
        ok, msg = c.select_screw(nav.id)
        while not ok and NO_PLAN_YET in msg and time.monotonic() < deadline:
            time.sleep(0.1)
            ok, msg = c.select_screw(nav.id)
        if not ok:
            raise ScrewAborted(f"guard refused selection: {msg}", logged=False)
        c.wait_for(lambda: c.last_status is not None and c.last_status.active_screw_id == nav.id
                   and c.last_status.state_name not in ("TRACKING_LOST", "NO_PLAN"), 5.0)

    def align_for_drilling(self, c, nav, result: ScrewResult) -> None:
        """Align the arm on ``nav`` (a hold needs an explicit resume; every stop is recorded), then let the
        servo settle on the line. Sets ``result.time_to_align_s``; ScrewAborted when not aligned in time."""
        t_align = time.monotonic()
        aligned, why = self.ensure_aligned(c, nav, result, time.monotonic() + self.cfg.align_timeout_s)
        result.time_to_align_s = time.monotonic() - t_align
        if not aligned:
            raise ScrewAborted(why)
        time.sleep(0.3)

    def drill(self, c, nav, result: ScrewResult, inject: str | None, kills: Sequence[str] = ()) -> DrillOutcome:
        """Drive the simulated drill down the *true* guide axis (200 Hz steps) until the guard reports the
        depth stop, the guard stops after the demo's injected fault (``inject`` at half depth), or the time
        runs out. Stops the demo did not inject are recovered as a surgeon would (:meth:`_pause_and_realign`);
        process faults (``kills``) are injected and recovered at their depths (:meth:`_kill_and_recover`).
        Raises ScrewAborted when a recovery fails."""
        cfg = self.cfg
        start = -cfg.standoff_mm - 10.0  # tip above the tube opening
        now = time.monotonic()
        d = _DrillState(depth_true_mm=start, deepest_mm=start, t_prev=now,
                        deadline=now + (nav.depth_mm + cfg.standoff_mm + 20.0) / cfg.drill_speed_mm_s + 30.0,
                        kills=[(k, (0.3 + 0.45 * (j + 0.5) / len(kills)) * nav.depth_mm) for j, k in enumerate(kills)])
        while time.monotonic() < d.deadline:
            arm = c.last_arm
            if d.injected_wall_s is None and ((arm is not None and arm.holding) or self.surgeon_pauses()):
                self._pause_and_realign(c, nav, result, d)
                continue
            d.T_last = self.true_guide_in_reference() @ make_transform(
                translation_mm=[0.0, 0.0, cfg.standoff_mm + d.depth_true_mm])
            c.move_tool(d.T_last)
            if d.kills and d.depth_true_mm >= d.kills[0][1]:
                t_pause = time.monotonic()
                self._kill_and_recover(c, nav, result, d.kills.pop(0)[0])
                d.deadline += time.monotonic() - t_pause
                d.depth_true_mm = min(d.depth_true_mm, -20.0)  # drilling on from above the entry: re-insert speed
                d.t_prev = time.monotonic()
                continue
            st = c.last_status
            if inject and d.injected_wall_s is None and d.depth_true_mm >= 0.5 * nav.depth_mm:
                d.injected_wall_s = time.time()
                self._inject(inject)
            end = _drill_end(st, nav, d)
            if end is not None:
                return DrillOutcome(end[0], end[1], d.T_last, d.injected_wall_s)
            self._advance_drill(st, nav, d)
            time.sleep(1.0 / 200.0)
        return DrillOutcome(DrillEnd.TIME_LIMIT, DrillEnd.TIME_LIMIT.value, d.T_last, d.injected_wall_s)

    def _pause_and_realign(self, c, nav, result: ScrewResult, d: _DrillState) -> None:
        """A stop the demo did not inject (a stale sample on a loaded machine; while the arm holds, breathing
        moves the patient against the still tube). As a surgeon would: stop, pull the drill back above the
        entry, wait for tracking, resume the arm, re-align, drill on. Every stop is recorded in the report;
        pauses do not count against the drill time."""
        d.depth_true_mm = min(d.depth_true_mm, -20.0)  # tip back above the approach zone, still in the tube
        c.move_tool(self.true_guide_in_reference() @ make_transform(
            translation_mm=[0.0, 0.0, self.cfg.standoff_mm + d.depth_true_mm]))
        t_pause = time.monotonic()
        ok, why = self.ensure_aligned(c, nav, result, time.monotonic() + self.cfg.align_timeout_s)
        if not ok:
            raise ScrewAborted(f"stopped while drilling: {why}")
        time.sleep(0.3)
        d.deadline += time.monotonic() - t_pause
        d.t_prev = time.monotonic()

    def _advance_drill(self, st, nav, d: _DrillState) -> None:
        """One step deeper at the speed a surgeon watching the depth readout would use: slower for the last
        6 mm; back into an already drilled hole after a pause at the re-insertion speed. Real elapsed time
        (at most 20 ms a step), so a slow loop drills on."""
        cfg = self.cfg
        slow = st is not None and st.active_screw_id == nav.id and 0.0 < st.depth_mm and st.remaining_mm < 6.0
        if d.depth_true_mm < d.deepest_mm - 1.0:
            speed = cfg.reinsert_speed_mm_s
        else:
            speed = cfg.final_speed_mm_s if slow else cfg.drill_speed_mm_s
        now = time.monotonic()
        d.depth_true_mm += speed * min(now - d.t_prev, 0.02)
        d.t_prev = now
        d.deepest_mm = max(d.deepest_mm, d.depth_true_mm)

    def _final_hold(self, c, result: ScrewResult, drill: DrillOutcome):
        """The arm's state once drilling ended (after an injected fault: once it holds, 1 s at most); a hold
        is added to ``result.stops``. Returns that arm state."""
        c.wait_for(lambda: c.last_arm is not None and (c.last_arm.holding or drill.injected_wall_s is None), 1.0)
        arm = c.last_arm
        if arm is not None and arm.holding:
            result.stops.append({"cause": arm.stop_cause, "mode": arm.mode})
        return arm

    def _injected_fault(self, inject: str, drill: DrillOutcome, statuses, arm, result: ScrewResult,
                        head: str) -> FaultResult:
        """The demo's own fault (``--occlude`` / ``--bump``): detected when the guard went TRACKING_LOST or
        VIOLATION after it; the screw counts as stopped."""
        after = drill.injected_wall_s if drill.injected_wall_s is not None else float("inf")
        lost = [s for s in statuses if s.state in ("TRACKING_LOST", "VIOLATION") and s.received_s >= after]
        fault = FaultResult(inject, detected=bool(lost), arm_held=bool(arm and arm.holding),
                            cause=(arm.stop_cause if arm and arm.stop_cause else
                                   (lost[-1].reason if lost else "not detected")),
                            detail=(f"guard: {lost[0].state} ({lost[0].reason})" if lost else ""))
        result.status, result.reason = "stopped", f"injected fault: {inject}"
        self.log(f"{head} FAULT {inject}: detected={fault.detected} arm_held={fault.arm_held} cause={fault.cause}")
        return fault

    def grade_placement(self, planned, drill: DrillOutcome, result: ScrewResult, head: str) -> None:
        """The placed screw: true drill tip and axis mapped to PreopCT through the ground truth, compared
        with the plan and graded against the phantom's cortex. "placed" only when the drill reached the
        guard's depth stop; otherwise the errors are kept for the record but the screw is incomplete."""
        if drill.T_last is None:
            raise ScrewAborted("drill never started", logged=False)
        T_preop_ref = invert(self.T_cbct_preop[planned.level])
        tip_preop = transform_points(T_preop_ref, drill.T_last[:3, 3])
        axis_preop = T_preop_ref[:3, :3] @ drill.T_last[:3, 2]
        err = self.grade_placed(planned, tip_preop, axis_preop)
        result.entry_error_mm, result.tip_error_mm = err.entry_error_mm, err.tip_error_mm
        result.angular_error_deg = err.angular_error_deg
        result.breach_mm, result.gr_grade = err.breach_mm, err.gr_grade
        result.status = "placed" if drill.end is DrillEnd.DEPTH_STOP else "incomplete"
        result.reason = drill.reason
        self.placed[planned.id] = (tip_preop, axis_preop)
        self.log(f"{head} aligned in {result.time_to_align_s:.1f} s, placed: entry {err.entry_error_mm:.2f} mm, "
                 f"tip {err.tip_error_mm:.2f} mm, angle {err.angular_error_deg:.2f} deg, grade {result.gr_grade}")

    def surgeon_pauses(self) -> bool:
        """True while the surgeon should stop drilling although the arm looks free (hook: the
        multi-host demo pauses while a link is cut and until the conductor hears the stack again)."""
        return False

    def _kill_and_recover(self, c, nav, result: ScrewResult, kind: str) -> None:
        """A process fault mid-drilling: kill, measure the hold, drill back above the entry (still in the
        tube) while the supervisor respawns the process, wait for a healthy stack, resume and re-align.
        Raises ScrewAborted when the stack or the alignment does not come back."""
        fault = self.process_faults.inject(kind, c)
        self.faults.append(fault)
        c.move_tool(self.true_guide_in_reference() @ make_transform(translation_mm=[0.0, 0.0, self.cfg.standoff_mm - 20.0]))
        ok, why = self.process_faults.recover(fault, c, nav.id)
        if ok:
            ok, why = self.ensure_aligned(c, nav, result, time.monotonic() + self.cfg.align_timeout_s)
            fault.recovered = ok
            if not ok:
                fault.detail += f"; not re-aligned: {why}"
            time.sleep(0.3)  # let the servo settle on the line
        if not ok:
            raise ScrewAborted(f"stopped after a process fault: {why}")

    def ensure_aligned(self, c, nav, result: ScrewResult, deadline: float) -> tuple[bool, str]:
        """Bring the arm to TRACKING on ``nav`` before ``deadline``: resume after holds (once the guard
        sees the drill again), (re)send align; every hold met on the way is added to ``result.stops``."""
        last_cause, why = None, "no arm state"
        sent_align = False
        while time.monotonic() < deadline:
            arm = c.last_arm
            if arm is not None and arm.holding:
                if arm.stop_cause != last_cause:
                    result.stops.append({"cause": arm.stop_cause, "mode": arm.mode})
                    last_cause = arm.stop_cause
                c.wait_for(lambda: c.last_status is not None and c.last_status.state_name != "TRACKING_LOST", 3.0)
                ok, why = c.arm("resume")
                sent_align = False
                time.sleep(0.05)
                continue
            if arm is not None and arm.mode == "TRACKING" and arm.active_screw_id == nav.id and not arm.holding:
                return True, ""
            if not sent_align:
                ok, why = c.arm("align", nav.id)
                sent_align = ok
                if not ok and _refused_for_good(why):
                    return False, f"arm refused to align: {why}"
            time.sleep(0.02)
        arm = c.last_arm
        return False, (f"not aligned in time (arm {arm.mode if arm else '?'}"
                       f"{': ' + arm.stop_cause if arm and arm.stop_cause else ''}; last answer: {why})")

    def _guide_line_error(self, truth_line) -> tuple[float, float]:
        """True distance (mm) of the guide-tube opening from the planned line where the bone really is,
        and the angle (deg) between tube axis and line (Reference frame, simulation truth)."""
        from spine_nav.arm.controller import guide_error

        return tuple(float(v) for v in guide_error(self.true_guide_in_reference(), truth_line.entry_mm,
                                                   truth_line.direction))

    def _inject(self, kind: str) -> None:
        if kind == "occlude":
            self.log("      injecting: the drill's markers are occluded (2 s)")
            self.tracker_model.occlude("StylusToTracker", 2.0)
        elif kind == "bump":
            from scipy.spatial.transform import Rotation

            self.log("      injecting: the reference array is knocked (3 mm, 2 deg)")
            self.tracker_model.bump(make_transform(Rotation.from_euler("x", 2.0, degrees=True).as_matrix(),
                                                   [3.0, 0.0, 0.0]))

    def grade_placed(self, planned, tip_preop, axis_preop):
        """The placed screw graded against the plan and the phantom's cortex: the one grading function
        shared with trainee mode (:func:`spine_nav.training.grading.grade_placed_screw`; breaches up to
        GR_NO_BREACH_TOL_MM, thinner than the CT's voxel, grade A)."""
        from spine_nav.training.grading import grade_placed_screw

        return grade_placed_screw(planned, tip_preop, axis_preop, self.spine, no_breach_tol_mm=GR_NO_BREACH_TOL_MM)

    # ------------------------------------------------------------------ 6 report
    def build_report(self, duration_s: float) -> CaseReport:
        from spine_nav.demo.plots import plot_deviation, plot_guard_states, plot_latency, plot_screw_slices

        rec = self.recording
        # one latency per tracker sample: its first status (the guard's watchdog repeats the last
        # sample's stamp in TRACKING_LOST statuses; those are not sample latencies)
        seen: set[float] = set()
        status_lat, guard_lat = [], []
        for s in rec.statuses:
            if s.sample_s > 0 and s.sample_s not in seen:
                seen.add(s.sample_s)
                status_lat.append(s.received_s - s.sample_s)
                if s.guard_s > 0:
                    guard_lat.append(s.guard_s - s.sample_s)
        guard_pub = self._read_latency_record("trajectory_guard")
        command_pub = self._read_latency_record("arm_guide")
        latency = {
            # headline: to the guard status / arm command being published, by the node that makes it (its own
            # record: sample stamp -> publish() returned, same system clock as the stamps)
            "sample_to_status_p50_ms": percentile_ms(guard_pub, 50),
            "sample_to_status_p99_ms": percentile_ms(guard_pub, 99),
            "sample_to_status_count": len(guard_pub),
            "sample_to_command_p50_ms": percentile_ms(command_pub, 50),
            "sample_to_command_p99_ms": percentile_ms(command_pub, 99),
            "sample_to_command_count": len(command_pub),
            # the same samples as they enter the guard (header.stamp of the status): where the time goes
            "sample_to_guard_p50_ms": percentile_ms(guard_lat, 50),
            "sample_to_guard_p99_ms": percentile_ms(guard_lat, 99),
            "sample_to_guard_count": len(guard_lat),
            # as a consumer in the demo process (the recorder) receives them: adds that process's own
            # delay (it shares its interpreter with MuJoCo and the simulated tracker)
            "sample_to_status_received_p50_ms": percentile_ms(status_lat, 50),
            "sample_to_status_received_p99_ms": percentile_ms(status_lat, 99),
            "sample_to_status_received_count": len(status_lat),
            "sample_to_command_received_p50_ms": percentile_ms(rec.command_latency_s, 50),
            "sample_to_command_received_p99_ms": percentile_ms(rec.command_latency_s, 99),
            "sample_to_command_received_count": len(rec.command_latency_s),
            # the simulator's own lateness: its send() returning vs. the frame's schedule (wake-up, GIL,
            # socket); not part of the figures above, which start at the transmission stamp
            "tracker_send_late_p50_ms": percentile_ms(self.tracker_send_delay_s, 50),
            "tracker_send_late_p99_ms": percentile_ms(self.tracker_send_delay_s, 99),
            **self._floor_figures(latency_p99_ms={"status": percentile_ms(guard_pub, 99),
                                                  "command": percentile_ms(command_pub, 99)}),
        }
        # node -> why its latency record is missing or unusable (its figures above are then empty); {} = all there
        latency["missing_records"] = dict(self.missing_records)
        report = CaseReport(
            screws=self.results, latency=latency, duration_s=duration_s, faults=self.faults,
            registration=self.registration, case={
                "description": f"{len(self.plan)} planned screws, levels {', '.join(self.plan.levels)}, "
                               f"{self.cfg.bone} bone, seed {self.cfg.seed}",
                "seed": self.cfg.seed, "levels": list(self.plan.levels), "bone": self.cfg.bone,
                "handeye": self.handeye, "tracker_rate_hz": self.cfg.tracker_rate_hz,
                "robot_base": self._layout_summary(),
                "watchdogs": {f"{n}.{k}": v for n, k, v in DEMO_WATCHDOGS}},
            bone_quality=[{"id": s["id"], "mean_hu": s.get("mean_hu"), "flags": s.get("flags", [])}
                          for s in self.bone_quality["screws"]])
        out = self.cfg.out_dir
        plots = []
        if any(s.status == "placed" for s in self.results):
            plots.append(plot_deviation(report, out / "deviation.png"))
        plots.append(plot_guard_states([s.received_s for s in rec.statuses], [s.state for s in rec.statuses],
                                       [s.screw_id for s in rec.statuses], out / "guard_states.png"))
        plots.append(plot_latency(guard_pub, command_pub, out / "latency.png", status_lat, rec.command_latency_s))
        if self.placed:
            plots.append(plot_screw_slices(self.preop_ct, self.plan, self.placed, out / "screws.png"))
        from spine_nav.demo.rods import case_rods

        report.rods = case_rods(self.plan, self.placed, self.results, out)
        if self.bag is not None:
            from spine_nav.demo.bag import recording_summary

            report.case["recording"] = recording_summary(self.bag.path, self.bag_result, [s.guard_s for s in rec.statuses],
                                                         len(guard_pub))
            self.log(f"      case bag: {json.dumps(report.case['recording'])}")
        write_report(report, out, plots)
        return report

    def _start_bag(self, params_file: Path, logs: Path):
        """`spine-nav bag record` in its own process, with the guard config `bag check` needs."""
        from spine_nav.bag.check import guard_config_for
        from spine_nav.demo.bag import BagRecorderProcess

        over = {k: v for n, k, v in DEMO_WATCHDOGS if n == "trajectory_guard"} | dict(self.cfg.extra_guard_params)
        bag = BagRecorderProcess(self.cfg.out_dir, guard_config_for({}, params_file, over).to_dict(),
                                 logs / "bag_recorder.log", rt_priority=10 if self.cfg.rt_priority > 0 else 0)
        if not bag.wait_ready(30.0):
            self.log("      case bag: the recorder did not start (see logs/bag_recorder.log)")
        return bag

    def _floor_figures(self, latency_p99_ms: dict) -> dict:
        """The bare relay's sample -> publish() p99 during the case, the stack's ratios to it, and the
        control-cycle-overrun holds in the arm's log (issue 17)."""
        from spine_nav.demo.report import floor_figures

        floor = self._read_latency_record("floor_relay") if self.cfg.floor_relay else []
        out = floor_figures(floor, latency_p99_ms, self.cfg.out_dir / "logs" / "arm_guide.log")
        self.log(f"      floor relay p99 {out['floor_relay_p99_ms']} ms; stack / floor: status "
                 f"{out['sample_to_status_p99_vs_floor']}, command {out['sample_to_command_p99_vs_floor']}; "
                 f"control-cycle-overrun stops {out['servo_overrun_stops']}")
        return out

    def _layout_summary(self) -> dict:
        lay = getattr(self.scene, "layout", None)
        if lay is None:
            return {}
        p = lay.pose
        return {"family": p.family, "table_xyz_mm": [p.x_mm, p.y_mm, p.z_mm], "yaw_deg": float(np.degrees(p.yaw)),
                "screws_reached": lay.n_reached, "screws": lay.n_screws, "worst_joint_margin": lay.worst_margin,
                "unreachable": lay.failures}


def _drill_end(st, nav, d: _DrillState) -> tuple[DrillEnd, str] | None:
    """Whether the last guard status ``st`` ends the drilling, and the report's text for it."""
    if d.injected_wall_s is not None and st is not None and st.state_name in ("VIOLATION", "TRACKING_LOST"):
        return DrillEnd.GUARD_AFTER_FAULT, f"guard {st.state_name} after the injected fault"
    if st is not None and st.active_screw_id == nav.id and st.depth_mm > 0 and st.remaining_mm <= 0.0:
        return DrillEnd.DEPTH_STOP, f"depth stop (guard depth {st.depth_mm:.2f} mm, remaining {st.remaining_mm:.2f} mm)"
    return None


def _refused_for_good(message: str) -> bool:
    """An ``arm/command`` align refusal that waiting will not change: the target is out of the arm's reach.
    (The service answers success + a message only; ``arm_guide`` relays the kinematics' reason, which names
    it "out of reach" / "unreachable".)"""
    return "unreachable" in message or "out of reach" in message


def _state_changes(statuses) -> list[dict]:
    out, last = [], None
    for s in statuses:
        if s.state != last:
            out.append({"t_s": s.received_s, "state": s.state, "reason": s.reason})
            last = s.state
    return out


def run_demo(cfg: DemoConfig, log: Log, make_demo: Callable[[DemoConfig, Log], "Demo"] = Demo) -> CaseReport:
    from spine_nav.nodes.runner import tune_process_for_nodes

    tune_process_for_nodes()  # this process hosts the simulators (tracker thread, MuJoCo)
    out = Path(cfg.out_dir)
    if out.exists() and any(out.iterdir()):
        previous = out.with_name(out.name + ".previous")
        if previous.exists():
            shutil.rmtree(previous)
        out.rename(previous)
        log(f"previous run kept in {previous}")
    out.mkdir(parents=True, exist_ok=True)
    report = make_demo(cfg, log).run()
    log("[6/6] report: " + str(cfg.out_dir / "report.md"))
    log("")
    log(summary_table(report))
    s = report.summary()
    log("")
    log(f"placed {s['screws_placed']}/{s['screws_planned']} screws, grade A {s['grade_a']}; mean entry error "
        f"{_f(s['mean_entry_error_mm'])} mm, mean angular error {_f(s['mean_angular_error_deg'])} deg, max tip "
        f"error {_f(s['max_tip_error_mm'])} mm; latency p99 sample->status "
        f"{_f(report.latency['sample_to_status_p99_ms'])} ms, sample->arm command "
        f"{_f(report.latency['sample_to_command_p99_ms'])} ms; {report.duration_s:.0f} s")
    for f in report.faults:
        log(f"fault {f.name}: detected={f.detected}, arm held={f.arm_held}, cause: {f.cause}"
            + (f", hold after {f.hold_after_ms:.1f} ms" if f.hold_after_ms is not None else "")
            + (f", recovered={f.recovered}" if f.recovered is not None else ""))
    return report


def _f(v) -> str:
    return "—" if v is None else f"{v:.2f}"
