"""Forward kinematics, Jacobian and the guide-tube alignment IK (Pinocchio).

Frames: every pose is ``T_robotbase_<frame>`` (RobotBase coordinates, mm). Pinocchio works
in metres (the URDF's unit); this module converts at its boundary with
:func:`spine_nav.geometry.m_to_mm` / :func:`~spine_nav.geometry.mm_to_m`.

Alignment IK (5 constraints on 7 joints)::

    position:  p_GuideTube  = target.point_mm            (tube opening at the standoff point)
    axis:      z_GuideTube || target.axis                 (guide axis along the planned direction)
    free:      rotation about the axis + the arm's own redundancy (2 DOF)

Solved by damped least squares (Levenberg-Marquardt step, Pinocchio FK/Jacobian) on the 5-row
task Jacobian ``[J_v; x^T J_w; y^T J_w]`` (x, y = the tube's own x/y axes, so the rotation about
z is not constrained), with a null-space step toward mid-range joints: the free rotation and the
redundancy are used to stay away from joint limits; damping keeps steps bounded near singularities.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pinocchio as pin
from scipy.linalg.lapack import dposv as _dposv

from spine_nav.arm.model import BASE_FRAME, FLANGE_FRAME, MARKER_FRAME, TUBE_FRAME, ArmModel
from spine_nav.geometry import validate_vector3

M_PER_MM = 1e-3


class UnreachableTarget(ValueError):
    """The alignment target cannot be reached; the message says why (distance, limits, residual)."""


@dataclass(frozen=True)
class AlignmentTarget:
    """Where the guide tube must be, in RobotBase (mm): opening at ``point_mm``, +z along ``axis``."""

    point_mm: np.ndarray
    axis: np.ndarray

    def __post_init__(self) -> None:
        p = validate_vector3(self.point_mm, "point_mm")
        a = validate_vector3(self.axis, "axis")
        n = float(np.linalg.norm(a))
        if n < 1e-9:
            raise ValueError("axis: zero vector")
        object.__setattr__(self, "point_mm", p)
        object.__setattr__(self, "axis", a / n)


@dataclass(frozen=True)
class IKResult:
    q_rad: np.ndarray
    position_error_mm: float
    angle_error_deg: float
    iterations: int
    converged: bool


class ArmKinematics:
    """Pinocchio model of the arm built from the same URDF XML as MuJoCo and Gazebo."""

    def __init__(self, model: ArmModel, damping: float = 1e-3, null_gain: float = 0.1) -> None:
        self.arm = model
        self.model = pin.buildModelFromXML(model.urdf_xml)
        self.data = self.model.createData()
        names = [self.model.names[i] for i in range(1, self.model.njoints)]
        if names != model.joint_names:
            raise ValueError(f"{model.source}: Pinocchio joint order {names} differs from URDF {model.joint_names}")
        self.frame_ids = {f: self.model.getFrameId(f) for f in (BASE_FRAME, FLANGE_FRAME, TUBE_FRAME, MARKER_FRAME)}
        self.lower = self.model.lowerPositionLimit.copy()
        self.upper = self.model.upperPositionLimit.copy()
        self.mid = 0.5 * (self.lower + self.upper)
        self.range = self.upper - self.lower
        self.damping = damping
        self._damping_eye = (damping**2) * np.eye(5)
        self._damping_sq = damping**2
        self.null_gain = null_gain
        self._null_k = null_gain * 4.0 / (self.range**2)
        self._A = np.empty((5, self.model.nv))  # IK scratch (one kinematics object per thread)
        self._rhs = np.empty((5, 2))
        if model.reach_joints is not None:
            self._srs_reach(model.reach_joints)
        else:
            self._bound_reach()

    def _srs_reach(self, names: tuple[str, str, str]) -> None:
        """Reach facts of an S-R-S arm (our own) at q = 0 (metres): shoulder, elbow, wrist joints."""
        pin.forwardKinematics(self.model, self.data, np.zeros(self.model.nq))
        sh, el, wr = (self.data.oMi[self.model.getJointId(n)].translation.copy() for n in names)
        self.shoulder_m = sh
        self.upper_arm_m = float(np.linalg.norm(el - sh))
        self.forearm_m = float(np.linalg.norm(wr - el))
        self.update_frames(np.zeros(self.model.nq))
        self.wrist_to_tube_m = float(np.linalg.norm(self.data.oMf[self.frame_ids[TUBE_FRAME]].translation - wr))
        ie = self.model.getJointId(names[1]) - 1
        elbow_max = min(abs(self.lower[ie]), abs(self.upper[ie]))
        self.min_reach_m = float(np.sqrt(self.upper_arm_m**2 + self.forearm_m**2
                                         - 2 * self.upper_arm_m * self.forearm_m * np.cos(np.pi - elbow_max)))
        self.screen_min_reach_m = self.min_reach_m

    def _bound_reach(self) -> None:
        """Reach facts of any other arm: ``shoulder`` = the second joint's origin; the tube opening is at
        most the summed distances of the consecutive joint origins from there (to the tube) away, for
        every q (triangle inequality: each segment is rigid), so ``check_reach`` only refuses what no
        configuration reaches; there is no lower bound (``min_reach_m`` 0). The layout screen prefers
        targets beyond 30 % of that reach (``screen_min_reach_m``: a heuristic for ranking candidate
        base poses only, never a refusal)."""
        q0 = np.zeros(self.model.nq)
        self.update_frames(q0)
        pts = [self.data.oMi[i].translation.copy() for i in range(2, self.model.njoints)]
        pts.append(self.data.oMf[self.frame_ids[TUBE_FRAME]].translation.copy())
        self.shoulder_m = pts[0]
        self.upper_arm_m = float(sum(np.linalg.norm(b - a) for a, b in zip(pts[:-1], pts[1:])))
        self.forearm_m = 0.0
        self.wrist_to_tube_m = 0.0
        self.min_reach_m = 0.0
        self.screen_min_reach_m = 0.3 * self.upper_arm_m

    # ------------------------------------------------------------------ FK / Jacobian
    def update_frames(self, q_rad: np.ndarray) -> None:
        pin.forwardKinematics(self.model, self.data, q_rad)
        pin.updateFramePlacements(self.model, self.data)

    def fk(self, q_rad: np.ndarray, frame: str = TUBE_FRAME) -> np.ndarray:
        """``T_robotbase_<frame>`` (4x4, mm) at joint angles ``q_rad``."""
        q = self._check_q(q_rad)
        pin.forwardKinematics(self.model, self.data, q)
        fid = self.frame_ids[frame]
        M = pin.updateFramePlacement(self.model, self.data, fid)
        T = np.eye(4)
        T[:3, :3] = M.rotation
        T[:3, 3] = M.translation / M_PER_MM
        return T

    def tube_pose_raw(self, q_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, p_mm) of GuideTube in RobotBase without input checks (hot path)."""
        pin.forwardKinematics(self.model, self.data, q_rad)
        M = pin.updateFramePlacement(self.model, self.data, self.frame_ids[TUBE_FRAME])
        return M.rotation, M.translation / M_PER_MM

    def jacobian(self, q_rad: np.ndarray, frame: str = TUBE_FRAME) -> np.ndarray:
        """6x7 Jacobian of ``frame`` in RobotBase axes (rows: v in mm/rad, then omega in rad/rad)."""
        q = self._check_q(q_rad)
        J = pin.computeFrameJacobian(self.model, self.data, q, self.frame_ids[frame], pin.LOCAL_WORLD_ALIGNED)
        J = J.copy()
        J[:3] /= M_PER_MM
        return J

    def _check_q(self, q_rad) -> np.ndarray:
        q = np.asarray(q_rad, dtype=float)
        if q.shape != (self.model.nq,) or not np.all(np.isfinite(q)):
            raise ValueError(f"q_rad: expected {self.model.nq} finite joint angles, got {q!r}")
        return q

    # ------------------------------------------------------------------ alignment IK
    def alignment_error(self, q_rad: np.ndarray, target: AlignmentTarget) -> tuple[float, float]:
        """(distance of the tube opening from ``target.point_mm`` [mm], axis angle [deg])."""
        T = self.fk(q_rad)
        pos = float(np.linalg.norm(T[:3, 3] - target.point_mm))
        ang = float(np.degrees(np.arccos(np.clip(T[:3, 2] @ target.axis, -1.0, 1.0))))
        return pos, ang

    def check_reach(self, target: AlignmentTarget) -> None:
        """Raise :class:`UnreachableTarget` when the wrist centre needed is out of the arm's reach."""
        wrist = target.point_mm * M_PER_MM - target.axis * self.wrist_to_tube_m
        d = float(np.linalg.norm(wrist - self.shoulder_m))
        max_reach = self.upper_arm_m + self.forearm_m
        if d > max_reach - 1e-3:
            raise UnreachableTarget(
                f"target out of reach: the wrist would be {d * 1e3:.0f} mm from the shoulder, the arm reaches "
                f"{max_reach * 1e3:.0f} mm (move the robot base closer)")
        if d < self.min_reach_m + 1e-3:
            raise UnreachableTarget(
                f"target too close to the base: the wrist would be {d * 1e3:.0f} mm from the shoulder, "
                f"the elbow limit allows >= {self.min_reach_m * 1e3:.0f} mm")

    def ik_step(self, q: np.ndarray, target: AlignmentTarget) -> tuple[np.ndarray, float, float]:
        """One damped least-squares step toward ``target`` from ``q``: (new q, position err m, axis err rad)."""
        return self.ik_step_raw(q, target.point_mm, target.axis)

    def ik_step_raw(self, q: np.ndarray, point_mm: np.ndarray, axis: np.ndarray,
                    tol_m: float = 0.0, tol_rad: float = 0.0) -> tuple[np.ndarray, float, float]:
        """:meth:`ik_step` on unvalidated arrays (the servo's hot path: ``axis`` must be unit, all finite).

        Returns ``q`` itself (no Jacobian work) when already within ``tol_m`` / ``tol_rad``.

        Hot-path note (measured with /tmp-style line timers and in ``bench arm``: ``ik_median_us``): each
        numpy call on these 3..7-element arrays costs 3-15 us here and ``np.linalg.solve`` ~45 us with its
        wrappers, more than Pinocchio's FK + Jacobian (~4 us). So the errors are plain floats, the 5x5
        SPD system goes straight to LAPACK ``dposv``, and the FK pass is reused for the Jacobian.
        """
        fid = self.frame_ids[TUBE_FRAME]
        model, data = self.model, self.data
        pin.forwardKinematics(model, data, q)
        M = pin.updateFramePlacement(model, data, fid)
        R = M.rotation
        (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = R.tolist()
        px, py, pz = M.translation.tolist()
        tx, ty, tz = point_mm.tolist()
        ax, ay, az = axis.tolist()
        ex, ey, ez = tx * M_PER_MM - px, ty * M_PER_MM - py, tz * M_PER_MM - pz
        # rotate z (third column) toward the axis: w = z x a
        wx, wy, wz = r12 * az - r22 * ay, r22 * ax - r02 * az, r02 * ay - r12 * ax
        pos_m = math.sqrt(ex * ex + ey * ey + ez * ez)
        ang_rad = math.asin(min(1.0, math.sqrt(wx * wx + wy * wy + wz * wz)))
        if pos_m <= tol_m and ang_rad <= tol_rad and r02 * ax + r12 * ay + r22 * az > 0:
            return q, pos_m, ang_rad
        pin.computeJointJacobians(model, data)  # reuses the FK pass above
        J = pin.getFrameJacobian(model, data, fid, pin.LOCAL_WORLD_ALIGNED)
        A = self._A
        A[:3] = J[:3]
        A[3:] = R[:, :2].T @ J[3:]  # 5x7: position + rotation about the tube x, y
        rhs = self._rhs
        rhs[:, 0] = (ex, ey, ez, r00 * wx + r10 * wy + r20 * wz, r01 * wx + r11 * wy + r21 * wz)
        # Null space: pull toward mid-range (joint-limit avoidance) without disturbing the task.
        grad = self._null_k * (self.mid - q)
        rhs[:, 1] = A @ grad
        AAt = A @ A.T
        AAt.flat[::6] += self._damping_sq
        _, sol, info = _dposv(AAt, rhs, overwrite_a=1, overwrite_b=0)
        if info != 0:  # not SPD (cannot happen with damping > 0; kept as a guard)
            sol = np.linalg.solve(A @ A.T + self._damping_eye, rhs)
        dq = A.T @ (sol[:, 0] - sol[:, 1]) + grad
        # Bound the step (0.2 rad) so a far target does not jump through a singularity.
        n = max(map(abs, dq.tolist()))
        if n > 0.2:
            dq *= 0.2 / n
        q_new = np.minimum(np.maximum(q + dq, self.lower), self.upper)
        return q_new, pos_m, ang_rad

    def solve_alignment(self, target: AlignmentTarget, q_seed: np.ndarray, max_iter: int = 200,
                        tol_mm: float = 1e-3, tol_deg: float = 1e-3) -> IKResult:
        """Iterate :meth:`ik_step` from ``q_seed`` until within tolerance (no reach check, no seeds)."""
        q = np.clip(self._check_q(q_seed).copy(), self.lower, self.upper)
        tol_m, tol_rad = tol_mm * M_PER_MM, float(np.radians(tol_deg))
        for it in range(1, max_iter + 1):
            q_next, pos_m, ang_rad = self.ik_step_raw(q, target.point_mm, target.axis, tol_m, tol_rad)
            if q_next is q:  # within tolerance at q
                return IKResult(q, pos_m * 1e3, float(np.degrees(ang_rad)), it, True)
            q = q_next
        pos_mm, ang_deg = self.alignment_error(q, target)
        return IKResult(q, pos_mm, ang_deg, max_iter, pos_mm <= tol_mm and ang_deg <= tol_deg)

    def extra_seeds(self, point_mm: np.ndarray, n: int) -> list[np.ndarray]:
        """Deterministic IK seeds for a target at ``point_mm`` (RobotBase): joint 1 turned toward it.

        Our S-R-S arm (``reach_joints``): elbow up, joints 3 and 7 spread (the seeds used since the
        arm guide exists). Any other arm: ``2 n`` seeds (more: its geometry is unknown): joint 1 toward
        the target plus 0, +-90, 180 deg (where its zero points is the robot's own convention), the
        other joints at mid-range plus fixed pseudo-random offsets of up to +-40 % of their range
        (at most +-1.5 rad), clipped to the limits."""
        yaw = float(np.arctan2(point_mm[1], point_mm[0]))
        out = []
        if self.arm.reach_joints is not None:
            for k in range(n):
                s = np.array([yaw, 0.6, 0.0, -1.2, 0.0, 0.9, 0.0])
                s[2] = (k - n / 2) * 0.5  # n = n_seeds - 1: the historical spread
                s[6] = (k % 3 - 1) * 1.0
                out.append(s)
            return out
        rng = np.random.default_rng(12345)
        span = np.minimum(0.4 * self.range, 1.5)
        for k in range(2 * n):
            s = self.mid + rng.uniform(-1.0, 1.0, self.model.nq) * span
            s[0] = yaw + (0.0, 0.5 * np.pi, -0.5 * np.pi, np.pi)[k % 4]
            s[0] = (s[0] + np.pi) % (2 * np.pi) - np.pi
            out.append(np.clip(s, self.lower, self.upper))
        return out

    def builtin_seed(self, point_mm: np.ndarray) -> np.ndarray:
        """The seed :func:`spine_nav.arm.layout.builtin_seed` scores a layout with (see there)."""
        if self.arm.reach_joints is not None:
            yaw = math.atan2(float(point_mm[1]), float(point_mm[0]))
            return np.array([yaw, 0.6, -1.0, -1.2, 0.0, 0.9, -1.0])
        return self.extra_seeds(point_mm, 1)[0]

    def limit_margin(self, q_rad: np.ndarray) -> float:
        """Smallest distance to a joint limit as a fraction of the joint's range (0 = at a limit)."""
        return float(np.min(np.minimum(q_rad - self.lower, self.upper - q_rad) / self.range))

    def align(self, target: AlignmentTarget, q_seed: np.ndarray, n_seeds: int = 6,
              min_limit_margin: float = 0.02) -> IKResult:
        """Full alignment IK: reach check, then CLIK from ``q_seed`` and from deterministic extra
        seeds (joint 1 toward the target, elbow up); returns the converged solution with the
        largest joint-limit margin. Raises :class:`UnreachableTarget` with the reason."""
        self.check_reach(target)
        seeds = [np.asarray(q_seed, dtype=float)] + self.extra_seeds(target.point_mm, n_seeds - 1)
        best: IKResult | None = None
        worst_residual = (0.0, 0.0)
        for s in seeds:
            r = self.solve_alignment(target, s)
            if not r.converged:
                worst_residual = (r.position_error_mm, r.angle_error_deg)
                continue
            if best is None or self.limit_margin(r.q_rad) > self.limit_margin(best.q_rad):
                best = r
        if best is None:
            raise UnreachableTarget(
                f"no joint solution within limits: IK residual {worst_residual[0]:.2f} mm / "
                f"{worst_residual[1]:.2f} deg after {len(seeds)} seeds (target near a joint limit or singularity)")
        if self.limit_margin(best.q_rad) < min_limit_margin:
            raise UnreachableTarget(
                f"solution too close to a joint limit (margin {self.limit_margin(best.q_rad):.3f} of range "
                f"< {min_limit_margin})")
        return best
