"""Simulated runs of the arm guide used by the benchmark, the CLI and tests (MuJoCo, no ROS).

* :func:`handeye_in_sim`: a calibration motion in MuJoCo, tracker noise on the marker, then
  :func:`spine_nav.arm.handeye.calibrate_robot_tracker`.
* :func:`lockstep_run`: controller and MuJoCo stepped together in simulated time (1 ms cycles,
  deterministic, faster than real time); the patient reference moves with breathing and is
  sampled by a noisy tracker; returns the ground-truth guide-to-trajectory error in Reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spine_nav.arm.controller import ArmGuide, ArmGuideConfig, line_error
from spine_nav.arm.handeye import HandEyeResult, calibrate_robot_tracker, calibration_poses
from spine_nav.arm.kinematics import ArmKinematics
from spine_nav.geometry import invert
from spine_nav.sim.arm import ArmScene, BreathingReference, MujocoArm, noisy_pose


def handeye_in_sim(sim: MujocoArm, kin: ArmKinematics, q_center: np.ndarray, n_poses: int = 30,
                   noise_mm: float = 0.1, seed: int = 0, settle_steps: int = 30) -> HandEyeResult:
    """Move through ``n_poses`` calibration poses (settling each), sample the marker with noise."""
    rng = np.random.default_rng(seed)
    Tm, Tf = [], []
    for q in calibration_poses(q_center, n_poses, seed=seed):
        q = np.clip(q, kin.lower, kin.upper)
        sim.command(q)
        sim.reset(q)
        sim.step(settle_steps)
        _, qm, _ = sim.state()
        Tm.append(sim.marker_in_tracker(rng, noise_mm))
        Tf.append(kin.fk(qm, "Flange"))
    return calibrate_robot_tracker(Tm, Tf)


@dataclass
class RunResult:
    t_s: np.ndarray
    lateral_mm: np.ndarray
    angle_deg: np.ndarray
    guide: ArmGuide


def lockstep_run(kin: ArmKinematics, scene: ArmScene, T_tracker_robotbase_est: np.ndarray, screw,
                 duration_s: float, breathing_mm: float = 0.0, breathing_hz: float = 0.25,
                 tracker_noise_mm: float = 0.0, tracker_rate_hz: float = 100.0, seed: int = 0,
                 config: ArmGuideConfig | None = None, breathing_axis_ref=(0.0, 1.0, 1.0)) -> RunResult:
    """Align to ``screw`` (Reference) from ``scene.q_home_rad`` and keep tracking for ``duration_s``.

    The controller uses the estimated ``T_tracker_robotbase_est`` (hand-eye) and noisy reference
    samples; the error is measured against the truth (MuJoCo pose, true reference). Breathing moves
    the reference along ``breathing_axis_ref`` (given in Reference axes: default cranio-caudal +
    antero-posterior at 45 deg, so it has a component across the planned line)."""
    cfg = config or ArmGuideConfig()
    rng = np.random.default_rng(seed)
    sim = MujocoArm(kin.arm, T_tracker_robotbase=scene.T_tracker_robotbase, q0_rad=scene.q_home_rad)
    axis_tracker = scene.T_tracker_reference[:3, :3] @ np.asarray(breathing_axis_ref, float)
    ref = BreathingReference(scene.T_tracker_reference, breathing_mm, breathing_hz, tuple(axis_tracker))
    guide = ArmGuide(kin, T_tracker_robotbase_est, cfg, q0_rad=scene.q_home_rad)
    guide.on_reference(noisy_pose(ref.at(0.0), rng, tracker_noise_mm), 0.0)
    ok, msg = guide.align(screw, 0.0)
    if not ok:
        raise RuntimeError(f"align refused: {msg}")
    point_ref = np.asarray(screw.entry_mm, float) - cfg.standoff_mm * screw.direction
    d_ref = screw.direction
    n = int(round(duration_s / cfg.control_period_s))
    every = max(1, int(round(1.0 / (tracker_rate_hz * cfg.control_period_s))))
    steps_per_cycle = max(1, int(round(cfg.control_period_s / sim.dt_s)))
    T_base_tracker_true = invert(scene.T_tracker_robotbase)
    ts, lat, ang = np.empty(n), np.empty(n), np.empty(n)
    for k in range(n):
        t = (k + 1) * cfg.control_period_s
        if k % every == 0:
            guide.on_reference(noisy_pose(ref.at(t), rng, tracker_noise_mm) if tracker_noise_mm > 0 else ref.at(t), t)
        _, q, qd = sim.state()
        cmd = guide.step(t, q, qd, t)
        sim.command(cmd.q_rad)
        sim.step(steps_per_cycle)
        # truth: tube in base (MuJoCo) vs the planned line in base (true reference, true robot pose)
        T_b_tube = sim.body_pose("GuideTube")
        T_b_ref = T_base_tracker_true @ ref.at(t + cfg.control_period_s)
        R = T_b_ref[:3, :3]
        ts[k] = t
        lat[k], ang[k] = line_error(T_b_tube[:3, 3], T_b_tube[:3, 2], R @ point_ref + T_b_ref[:3, 3], R @ d_ref)
    return RunResult(ts, lat, ang, guide)
