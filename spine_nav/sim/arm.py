"""MuJoCo simulation of the arm (pure core, no ROS).

:class:`MujocoArm` loads the URDF expanded from ``urdf/spine_arm.urdf.xacro`` with MuJoCo's URDF
importer (``mujoco.MjSpec.from_string``) and adds the actuator overlay
``sim/mujoco/actuators.yaml`` (position servos, gravity compensation) through MjSpec, so the
URDF remains the single source. It steps in simulated time (``step``), as fast as the CPU allows,
or in real time (``run_realtime``); the ground-truth poses are exposed for benchmarks.

Also here: :class:`BreathingReference`, the patient reference array moving with breathing as the
tracker sees it, and :func:`noisy_pose`, tracker position noise. Units: mm, s, rad.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
import yaml

from spine_nav.arm.model import ArmModel, BASE_FRAME, MARKER_FRAME, TUBE_FRAME, load_arm_model
from spine_nav.geometry import compose, validate_transform
from spine_nav.resources import share_path

DEFAULT_OVERLAY = share_path("sim", "mujoco", "actuators.yaml")


def load_overlay(path: str | Path = DEFAULT_OVERLAY) -> dict:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p}: MuJoCo actuator overlay not found") from None
    if not isinstance(data, dict) or not isinstance(data.get("actuators"), dict):
        raise ValueError(f"{p}: expected a mapping with an 'actuators' mapping")
    return data


def generated_overlay(arm: ArmModel, stiffness_rad: float = 0.01, damping_ratio: float = 1.0,
                      armature_kg_m2: float = 0.02, q_rad: np.ndarray | None = None) -> dict:
    """The actuator overlay of any arm, generated from its URDF (for arms without a hand-tuned file).

    Position servo per joint: ``kp = effort limit / stiffness_rad`` (the servo reaches its torque limit
    at 10 mrad of error, as our own arm's tuned gains do: 320 N m / 30000 N m/rad = 10.7 mrad), and
    ``kv`` for ``damping_ratio`` (critical: 1) on the joint's own inertia at mid-range (or ``q_rad``)
    plus the armature: ``kv = 2 zeta sqrt(kp (M_ii + armature))``. Gravity compensated, 1 ms steps."""
    m = mujoco.MjSpec.from_string(arm.urdf_xml).compile()
    d = mujoco.MjData(m)
    q = 0.5 * (arm.lower_rad + arm.upper_rad) if q_rad is None else np.asarray(q_rad, float)
    for name, v in zip(arm.joint_names, q):
        d.qpos[m.joint(name).qposadr[0]] = v
    mujoco.mj_forward(m, d)
    M = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, M)
    acts = {}
    for j in arm.joints:
        i = m.joint(j.name).dofadr[0]
        kp = j.effort_nm / stiffness_rad
        kv = 2.0 * damping_ratio * float(np.sqrt(kp * (M[i, i] + armature_kg_m2)))
        acts[j.name] = {"kp": float(kp), "kv": kv}
    return {"timestep_s": 0.001, "integrator": "implicitfast", "gravity_compensation": True,
            "armature_kg_m2": armature_kg_m2, "actuators": acts}


def build_mj_model(arm: ArmModel, overlay: dict) -> mujoco.MjModel:
    """MjModel from the URDF XML plus position actuators, armature and gravity compensation."""
    spec = mujoco.MjSpec.from_string(arm.urdf_xml)
    spec.option.timestep = float(overlay.get("timestep_s", 0.001))
    integ = overlay.get("integrator", "implicitfast")
    spec.option.integrator = {"euler": mujoco.mjtIntegrator.mjINT_EULER,
                              "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
                              "rk4": mujoco.mjtIntegrator.mjINT_RK4}[integ]
    if overlay.get("gravity_compensation", True):
        for body in spec.bodies:
            body.gravcomp = 1.0
    act_cfg = overlay["actuators"]
    missing = [j.name for j in arm.joints if j.name not in act_cfg]
    if missing:
        raise ValueError(f"actuator overlay: no actuator for joint(s) {', '.join(missing)}")
    for j in arm.joints:
        sj = spec.joint(j.name)
        sj.armature = float(overlay.get("armature_kg_m2", 0.0))
        cfg = act_cfg[j.name]
        act = spec.add_actuator(name=f"{j.name}_position", target=j.name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=float(cfg["kp"]), kv=float(cfg["kv"]))
        act.ctrlrange = [j.lower_rad, j.upper_rad]
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-j.effort_nm, j.effort_nm]
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    # Robot on a fixed cart: no self-collision for the guide-tube benchmarks.
    for g in spec.geoms:
        g.contype = 0
        g.conaffinity = 0
    return spec.compile()


class MujocoArm:
    """The simulated arm. Joint positions in rad, poses ``T_robotbase_<frame>`` in mm.

    ``T_tracker_robotbase`` (mm) places the robot in the tracker frame (the ground truth that
    hand-eye calibration estimates). Thread-safe: ``command``/``state`` may be called from a
    controller thread while :meth:`run_realtime` steps.
    """

    def __init__(self, arm: ArmModel | None = None, overlay: dict | str | Path | None = None,
                 T_tracker_robotbase: np.ndarray | None = None, q0_rad: np.ndarray | None = None) -> None:
        self.arm = arm or load_arm_model()
        if overlay is None:  # our arm: its tuned file; any other arm (description.py): generated from its URDF
            overlay = DEFAULT_OVERLAY if self.arm.reach_joints is not None else generated_overlay(self.arm)
        self.overlay = overlay if isinstance(overlay, dict) else load_overlay(overlay)
        self.model = build_mj_model(self.arm, self.overlay)
        self.data = mujoco.MjData(self.model)
        self.dt_s = float(self.model.opt.timestep)
        self.T_tracker_robotbase = validate_transform(
            np.eye(4) if T_tracker_robotbase is None else T_tracker_robotbase, "T_tracker_robotbase")
        self.joint_qpos = np.array([self.model.joint(n).qposadr[0] for n in self.arm.joint_names])
        self.joint_dof = np.array([self.model.joint(n).dofadr[0] for n in self.arm.joint_names])
        self.body_ids = {f: self.model.body(f).id for f in (BASE_FRAME, TUBE_FRAME, MARKER_FRAME, "Flange")}
        self._lock = threading.Lock()
        q0 = np.zeros(self.arm.dof) if q0_rad is None else np.asarray(q0_rad, dtype=float)
        self.reset(q0)

    def reset(self, q_rad: np.ndarray) -> None:
        with self._lock:
            mujoco.mj_resetData(self.model, self.data)
            self.data.qpos[self.joint_qpos] = q_rad
            self.data.ctrl[:] = q_rad
            mujoco.mj_forward(self.model, self.data)

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def command(self, q_cmd_rad: np.ndarray) -> None:
        """Set the joint position command (clipped to the joint range by MuJoCo's ctrlrange)."""
        with self._lock:
            self.data.ctrl[:] = q_cmd_rad

    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps of ``dt_s``."""
        with self._lock:
            mujoco.mj_step(self.model, self.data, nstep=n)

    def state(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(sim time s, q rad, qd rad/s) — what the joint encoders read."""
        with self._lock:
            return float(self.data.time), self.data.qpos[self.joint_qpos].copy(), self.data.qvel[self.joint_dof].copy()

    def body_pose(self, frame: str) -> np.ndarray:
        """Ground truth ``T_robotbase_<frame>`` (mm) from MuJoCo's own kinematics."""
        with self._lock:
            bid, base = self.body_ids[frame], self.body_ids[BASE_FRAME]
            R_wb, p_wb = self.data.xmat[base].reshape(3, 3).copy(), self.data.xpos[base].copy()
            R_wf, p_wf = self.data.xmat[bid].reshape(3, 3).copy(), self.data.xpos[bid].copy()
        T = np.eye(4)
        T[:3, :3] = R_wb.T @ R_wf
        T[:3, 3] = R_wb.T @ (p_wf - p_wb) * 1000.0
        return T

    def marker_in_tracker(self, rng: np.random.Generator | None = None, noise_mm: float = 0.0) -> np.ndarray:
        """``T_tracker_armmarker`` (mm) as the tracker sees it (optional isotropic position noise)."""
        T = compose(self.T_tracker_robotbase, self.body_pose(MARKER_FRAME))
        return noisy_pose(T, rng, noise_mm) if rng is not None and noise_mm > 0 else T

    def run_realtime(self, stop: threading.Event, before_step=None, max_s: float = 60.0) -> None:
        """Step in real time (absolute deadlines, one physics step per ``dt_s``) until ``stop`` or ``max_s``.

        ``before_step(sim_time_s)`` runs before each step (e.g. to read a command)."""
        period_ns = int(self.dt_s * 1e9)
        t0 = time.monotonic_ns()
        k = 0
        while not stop.is_set() and k * self.dt_s < max_s:
            if before_step is not None:
                before_step(self.time_s)
            self.step()
            k += 1
            delay = (t0 + k * period_ns - time.monotonic_ns()) * 1e-9
            if delay > 0:
                time.sleep(delay)


def noisy_pose(T: np.ndarray, rng: np.random.Generator, noise_mm: float) -> np.ndarray:
    """``T`` with isotropic Gaussian position noise of ``noise_mm`` RMS (3-D, i.e. noise_mm/sqrt(3) per axis)."""
    out = np.array(T, dtype=float)
    out[:3, 3] += rng.normal(0.0, noise_mm / np.sqrt(3.0), 3)
    return out


@dataclass(frozen=True)
class BreathingReference:
    """The patient reference array in the tracker: ``T_tracker_reference(t)`` (mm, s).

    Breathing moves the spine (and its clamped reference) by ``amplitude_mm`` along ``axis``
    (unit, tracker frame) with a sinusoid of ``frequency_hz``: offset = A sin(2 pi f t).
    """

    T_tracker_reference0: np.ndarray
    amplitude_mm: float = 2.0
    frequency_hz: float = 0.25
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def at(self, t_s: float) -> np.ndarray:
        T = np.array(self.T_tracker_reference0, dtype=float)
        a = np.asarray(self.axis, dtype=float)
        T[:3, 3] += a / np.linalg.norm(a) * self.amplitude_mm * np.sin(2 * np.pi * self.frequency_hz * t_s)
        return T


@dataclass(frozen=True)
class ArmScene:
    """A synthetic OR layout for tests and benchmarks (mm, tracker frame).

    The tracker looks at the table; the robot base stands beside it; the patient reference is
    clamped near the lumbar spine; screws are given in Reference (like ``plan/registered``).
    """

    T_tracker_robotbase: np.ndarray
    T_tracker_reference: np.ndarray
    q_home_rad: np.ndarray

    def screws(self):
        """Two lumbar screws (L4 left/right) in Reference, pointing into the bone (-z of Reference
        is anterior here), converging 10 deg medially."""
        from spine_nav.plan import Screw

        out = []
        for side, sx in (("left", 1.0), ("right", -1.0)):
            entry = np.array([sx * 22.0, 40.0, 0.0])
            d = np.array([-sx * np.sin(np.radians(10)), 0.05, -np.cos(np.radians(10))])
            d /= np.linalg.norm(d)
            out.append(Screw(id=f"L4_{side}", level="L4", side=side, entry_mm=entry,
                             target_mm=entry + 45.0 * d, diameter_mm=6.5, length_mm=45.0))
        return out


def default_scene() -> ArmScene:
    """Robot base 1.9 m in front of the camera; the reference ~550 mm from the base at table height."""
    from spine_nav.geometry import make_transform
    from scipy.spatial.transform import Rotation

    T_tracker_robotbase = make_transform(Rotation.from_euler("xyz", [170, 5, 30], degrees=True).as_matrix(),
                                         [300.0, -150.0, 1900.0])
    # Reference 520 mm in front of the base, 120 mm above its mounting plane, z up.
    T_robotbase_reference = make_transform(Rotation.from_euler("z", 15, degrees=True).as_matrix(),
                                           [520.0, 40.0, 120.0])
    return ArmScene(T_tracker_robotbase=T_tracker_robotbase,
                    T_tracker_reference=compose(T_tracker_robotbase, T_robotbase_reference),
                    q_home_rad=np.array([0.0, 0.4, 0.0, -1.3, 0.0, 1.0, 0.0]))
