"""Arm guide in MuJoCo: alignment accuracy, breathing compensation, 1 kHz servo timing, stop, hand-eye.

Runs (one process, baselines in the same run):

1. hand-eye calibration motion in the simulator, 0.1 mm RMS tracker noise on the arm marker ->
   ``handeye_residual_mm`` (RMS marker-position residual); its T_tracker_robotbase is used below.
2. lock-step (simulated time, 1 ms cycles): static alignment to L4_left -> ``static_error_mm`` /
   ``static_error_deg`` (mean over the last 0.5 s after settling, ground truth);
   breathing 2 mm / 0.25 Hz + 0.1 mm tracker noise at 100 Hz -> ``breathing_error_rms_mm`` /
   ``breathing_error_max_mm`` after settling; the same with compensation off (reference frozen at
   align time) -> ``baselines.no_compensation.breathing_error_rms_mm``.
   Error = distance of the tube opening from the planned line (truth, in Reference).
3. ``ik_median_us``: warm-started alignment IK (from the previous solution, target moved by breathing).
4. real time: ServoLoop at 1 kHz (SCHED_FIFO + mlockall when permitted) stepping controller + MuJoCo
   -> ``servo_rate_hz``, ``servo_jitter_p99_ms`` (p99 of |period - 1 ms|); guard VIOLATION injected
   from another thread while the arm moves -> ``stop_latency_ms`` (message to the cycle that commands
   zero velocity; max over trials) and ``rest_time_ms`` (simulated time until every joint < 0.01 rad/s; max).

Floor (issue 17, :mod:`spine_nav.bench.floor`): a bare ServoLoop (the same absolute-deadline loop, the
same SCHED_FIFO request and GIL switch interval, an empty cycle) for as long as one servo run, interleaved
with step 4 (floor, servo, floor, servo, ...) for ``--rounds`` rounds. ``servo_jitter_p99_vs_floor`` =
median over the rounds of servo jitter p99 / floor jitter p99; ``servo_jitter_p99_ms`` = median of the
rounds; stop latency and rest time are the max over every round's trials; ``baselines.floor`` = the bare
loop's own figures (median over the rounds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from spine_nav.bench import BenchResult
from spine_nav.bench.floor import add_floor_arguments, busy_core, interleave, load_env, median_of, ratio_rounds

REST_RAD_S = 0.01


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="shorter runs (for tests/smoke checks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write a PNG of the breathing run (error with/without compensation)")
    p.add_argument("--no-realtime", action="store_true", help="do not ask for SCHED_FIFO")
    add_floor_arguments(p)
    from spine_nav.arm.description import add_description_arguments

    add_description_arguments(p)  # --urdf ...: another robot (default: our own arm, default_scene)


def _log(msg: str) -> None:
    print(f"[bench arm] {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> BenchResult:
    load_before = os.getloadavg()
    with busy_core(getattr(args, "busy_core", False)):
        return _run(args, load_before)


def _run(args: argparse.Namespace, load_before) -> BenchResult:
    from spine_nav.arm.controller import ArmGuideConfig
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.arm.model import load_arm_model
    from spine_nav.sim.scenario import handeye_in_sim, lockstep_run
    from spine_nav.geometry import transform_difference
    from spine_nav.sim.arm import MujocoArm, default_scene

    quick = bool(getattr(args, "quick", False))
    seed = int(getattr(args, "seed", 0))
    scene = default_scene()
    if getattr(args, "urdf", None):
        scene, kin = _scene_for_description(args, scene)
    else:
        kin = ArmKinematics(load_arm_model())
    screw = scene.screws()[0]

    _log("hand-eye calibration motion")
    he = handeye_in_sim(MujocoArm(kin.arm, T_tracker_robotbase=scene.T_tracker_robotbase), kin,
                        scene.q_home_rad, n_poses=15 if quick else 30, noise_mm=0.1, seed=seed)
    he_t_mm, he_r_deg = transform_difference(he.T_tracker_robotbase, scene.T_tracker_robotbase)
    T_cal = he.T_tracker_robotbase

    settle_s = 3.5 if quick else 4.0
    _log("static alignment (lock-step)")
    st = lockstep_run(kin, scene, T_cal, screw, settle_s + 0.5, seed=seed)
    m = st.t_s > settle_s
    static_mm, static_deg = float(np.mean(st.lateral_mm[m])), float(np.mean(st.angle_deg[m]))

    meas_s = 2.0 if quick else 8.0
    kw = dict(duration_s=settle_s + meas_s, breathing_mm=2.0, breathing_hz=0.25, tracker_noise_mm=0.1,
              tracker_rate_hz=100.0, seed=seed)
    _log("breathing with compensation")
    br = lockstep_run(kin, scene, T_cal, screw, **kw)
    _log("breathing without compensation (baseline)")
    nb = lockstep_run(kin, scene, T_cal, screw, config=ArmGuideConfig(compensate_motion=False), **kw)
    m = br.t_s > settle_s
    br_rms = float(np.sqrt(np.mean(br.lateral_mm[m] ** 2)))
    br_max = float(np.max(br.lateral_mm[m]))
    nb_rms = float(np.sqrt(np.mean(nb.lateral_mm[m] ** 2)))
    if getattr(args, "plot", None):
        _plot(args.plot, br, nb, settle_s)

    _log("IK timing")
    ik_us = _ik_timing(kin, br.guide, screw, n=200 if quick else 1000)

    _log("real-time servo + stops, interleaved with the bare loop (floor)")
    servo_s, realtime = 2.5 if quick else 6.0, not getattr(args, "no_realtime", False)
    pairs = interleave(getattr(args, "rounds", 1), lambda i: _floor_loop(servo_s, realtime),
                       lambda i: _realtime(kin, scene, T_cal, screw, duration_s=servo_s, realtime=realtime), _log)
    floors, rts = [p[0] for p in pairs], [p[1] for p in pairs]
    ratio = ratio_rounds(pairs, "jitter_p99_ms")
    rt = {**rts[-1], "jitter_p99_ms": median_of(rts, ["jitter_p99_ms"])["jitter_p99_ms"],
          "rate_hz": median_of(rts, ["rate_hz"])["rate_hz"],
          "stop_latency_ms": max(r["stop_latency_ms"] for r in rts),
          "rest_time_ms": max(r["rest_time_ms"] for r in rts)}

    metrics = {
        "static_error_mm": static_mm,
        "static_error_deg": static_deg,
        "breathing_error_rms_mm": br_rms,
        "breathing_error_max_mm": br_max,
        "servo_rate_hz": rt["rate_hz"],
        "servo_jitter_p99_ms": rt["jitter_p99_ms"],
        "servo_jitter_p99_vs_floor": ratio["median_ratio"],
        "ik_median_us": ik_us,
        "stop_latency_ms": rt["stop_latency_ms"],
        "rest_time_ms": rt["rest_time_ms"],
        "handeye_residual_mm": he.residual_rms_mm,
    }
    env = {"servo_scheduling": rt["scheduling"], "quick": quick, "seed": seed, **load_env(args, load_before)}
    details = {"handeye": {"n_poses": he.n_poses, "residual_max_mm": he.residual_max_mm,
                           "T_tracker_robotbase_error_mm": he_t_mm, "T_tracker_robotbase_error_deg": he_r_deg},
               "breathing_error_max_deg": float(np.max(br.angle_deg[m])),
               "no_compensation_max_mm": float(np.max(nb.lateral_mm[m])),
               "servo": rt["servo"], "stop_trials_ms": [r["trials"] for r in rts],
               "rounds": {"servo_jitter_p99_ms": ratio, "floor": [f["servo"] for f in floors],
                          "servo": [r["servo"] for r in rts]}}
    floor = {**median_of(floors, ["rate_hz", "jitter_p99_ms", "overruns"]), "scheduling": floors[-1]["scheduling"],
             "what": "bare absolute-deadline ServoLoop, empty cycle, same priority and switch interval"}
    return BenchResult("arm", metrics, {"no_compensation": {"breathing_error_rms_mm": nb_rms}, "floor": floor},
                       env, details)


def _floor_loop(duration_s: float, realtime: bool) -> dict:
    """The floor: the same ServoLoop with an empty cycle, same SCHED_FIFO request and switch interval."""
    from spine_nav.arm.servo import ServoLoop

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as _realtime
    loop = ServoLoop(lambda t_s: None, period_s=0.001, realtime=realtime).start()
    try:
        deadline = time.monotonic() + 20.0
        while loop.stats.cycles < 300 and time.monotonic() < deadline and loop.error is None:
            time.sleep(0.01)  # as _realtime: measured once it cycles (mlockall first)
        time.sleep(duration_s)
    finally:
        loop.stop()
        sys.setswitchinterval(switch)
    s = loop.stats.summary()
    sched = "SCHED_FIFO+mlockall" if loop.stats.realtime.get("sched_fifo") else "absolute-deadline sleep (SCHED_OTHER)"
    return {"rate_hz": float(s["rate_hz"]), "jitter_p99_ms": float(s["jitter_p99_ms"]),
            "overruns": int(s["overruns"]), "scheduling": sched, "servo": s}


def _scene_for_description(args, scene):
    """Another robot (``--urdf ...``): the base placed for the default scene's two screws by the layout
    search (:func:`spine_nav.sim.arm_check.place_base`), starting 0.1 rad off the first screw's solution."""
    from spine_nav.sim.arm_check import place_base, start_near
    from spine_nav.arm.kinematics import ArmKinematics
    from spine_nav.arm.description import description_from_args
    from spine_nav.geometry import invert
    from spine_nav.plan import Plan
    from spine_nav.sim.arm import ArmScene

    try:
        kin = ArmKinematics(description_from_args(args))
    except ValueError as exc:
        raise SystemExit(f"spine-nav: error: {exc}") from None
    screws = scene.screws()
    best, T_t_b, T_t_r = place_base(kin, Plan(tuple(screws), frame="Reference"), log=_log)
    # the layout's Reference is the plan's own frame: keep the scene's reference pose, move the base
    T_t_b = scene.T_tracker_reference @ invert(T_t_r) @ T_t_b
    first = next(s for s in best.screws if s.screw_id.endswith(screws[0].id))
    if not first.reached:
        raise ValueError(f"--urdf {args.urdf}: {screws[0].id} not reachable: {first.reason}")
    return ArmScene(T_t_b, scene.T_tracker_reference, start_near(kin, first.q_rad, 0.1)), kin


def _ik_timing(kin, guide, screw, n: int) -> float:
    """Warm-started alignment IK: solve from the previous solution for a target moved by breathing."""
    from spine_nav.arm.kinematics import AlignmentTarget

    q = guide.q_command
    T = kin.fk(q)
    times = []
    for k in range(n):
        off = 2.0 * np.sin(2 * np.pi * 0.25 * k * 0.01) * np.array([0.0, 0.7, 0.7])
        target = AlignmentTarget(T[:3, 3] + off, T[:3, 2])
        t0 = time.perf_counter_ns()
        r = kin.solve_alignment(target, q, max_iter=20)
        times.append(time.perf_counter_ns() - t0)
        q = r.q_rad
    return float(np.median(times) * 1e-3)


def _realtime(kin, scene, T_cal, screw, duration_s: float, realtime: bool) -> dict:
    """ServoLoop at 1 kHz: each cycle reads MuJoCo, steps the controller, commands, steps physics 1 ms."""
    from spine_nav.arm.controller import ArmGuide, ArmGuideConfig
    from spine_nav.arm.servo import ServoLoop
    from spine_nav.sim.arm import MujocoArm

    cfg = ArmGuideConfig(cycle_watchdog_s=0.05)  # the bench measures timing; it must not stop on a slow cycle
    sim = MujocoArm(kin.arm, T_tracker_robotbase=scene.T_tracker_robotbase, q0_rad=scene.q_home_rad)
    guide = ArmGuide(kin, T_cal, cfg, q0_rad=scene.q_home_rad)
    t_start = time.monotonic()
    guide.on_reference(scene.T_tracker_reference, t_start)
    ok, msg = guide.align(screw, t_start)  # before the loop starts: the servo's first cycle moves
    if not ok:
        raise RuntimeError(msg)
    rest = {"hold_sim_t": None, "rest_ms": [], "done": False}
    counter = [0]

    def cycle(t_s: float) -> None:
        counter[0] += 1
        if counter[0] % 10 == 1:  # the tracker at 100 Hz, first sample in the first cycle
            guide.on_reference(scene.T_tracker_reference, t_s)
        sim_t, q, qd = sim.state()
        cmd = guide.step(t_s, q, qd, t_s)
        sim.command(cmd.q_rad)
        sim.step()
        if cmd.holding and rest["hold_sim_t"] is None:
            rest["hold_sim_t"] = sim_t
        if rest["hold_sim_t"] is not None and not rest["done"] and np.max(np.abs(qd)) < REST_RAD_S:
            rest["rest_ms"].append((sim_t - rest["hold_sim_t"]) * 1e3)
            rest["done"] = True  # recorded for this trial

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the servo thread waits less for the GIL
    loop = ServoLoop(cycle, period_s=0.001, realtime=realtime).start()
    trials = []
    try:
        # the servo thread starts with mlockall (can take ~1 s for this process): trials start once it cycles
        deadline = time.monotonic() + 20.0
        while loop.stats.cycles < 300 and time.monotonic() < deadline and loop.error is None:
            time.sleep(0.01)
        time.sleep(0.5)  # the arm is moving toward the screw
        for _ in range(3):
            if guide.state.holding:  # a watchdog stopped it (slow machine): logged, resume first
                guide.resume(time.monotonic())
                time.sleep(0.2)
            guide.on_guard_state("VIOLATION", time.monotonic(), "bench")
            request = guide.hold_request_mono_ns
            deadline = time.monotonic() + 5.0
            while guide.hold_effective_mono_ns is None or guide.hold_effective_mono_ns < request:
                if time.monotonic() > deadline or loop.error is not None:
                    raise RuntimeError(f"stop not effective within 5 s (servo error: {loop.error}, "
                                       f"cycles {loop.stats.cycles})")
                time.sleep(0.0005)
            trials.append((guide.hold_effective_mono_ns - request) * 1e-6)
            time.sleep(0.15)  # at rest
            guide.on_guard_state("ALIGNED", time.monotonic())
            rest["hold_sim_t"], rest["done"] = None, False
            ok, msg = guide.resume(time.monotonic())
            if not ok:
                raise RuntimeError(f"resume refused: {msg}")
            time.sleep(0.3)  # moving again
        remaining = duration_s - (time.monotonic() - t_start)
        if remaining > 0:
            time.sleep(remaining)
    finally:
        loop.stop()
        sys.setswitchinterval(switch)
    if loop.error is not None:
        raise RuntimeError(f"servo loop failed: {loop.error}")
    s = loop.stats.summary()
    sched = "SCHED_FIFO+mlockall" if loop.stats.realtime.get("sched_fifo") else "absolute-deadline sleep (SCHED_OTHER)"
    return {"rate_hz": float(s["rate_hz"]), "jitter_p99_ms": float(s["jitter_p99_ms"]),
            "stop_latency_ms": float(max(trials)), "rest_time_ms": float(max(rest["rest_ms"])) if rest["rest_ms"] else float("nan"),
            "scheduling": sched, "servo": s, "trials": {"stop_latency_ms": trials, "rest_time_ms": rest["rest_ms"],
                                                        "stops": [str(e) for e in guide.stops]}}


def _plot(path: str, br, nb, settle_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(nb.t_s, nb.lateral_mm, label="no compensation", lw=0.8)
    ax.plot(br.t_s, br.lateral_mm, label="motion compensation", lw=0.8)
    ax.axvline(settle_s, color="k", ls=":", lw=0.8)
    ax.set_ylim(0, max(2.5, float(np.max(nb.lateral_mm[nb.t_s > settle_s])) * 1.2))
    ax.set_xlabel("time [s]")
    ax.set_ylabel("guide to planned line [mm]")
    ax.set_title("arm guide under breathing (2 mm, 0.25 Hz) + 0.1 mm tracker noise")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
