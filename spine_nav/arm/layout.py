"""Where to put the robot base: a deterministic search over OR-plausible base poses (pure core, mm).

Frames (``T_a_b`` maps frame b coordinates to frame a)::

    Table       origin at the mean planned entry point; x = patient right, y = cranial (superior),
                z = up (posterior: the patient lies prone). For a plan in Reference (CBCT LPS):
                ``T_table_reference = [R_TABLE_REFERENCE, -R_TABLE_REFERENCE @ mean entry]``.
    RobotBase   the arm's mounting plane (URDF base link), z up; placed in Table by a
                :class:`BasePose` (position + yaw about z).

    T_robotbase_reference = inv(T_table_robotbase) @ T_table_reference

The alignment target of each screw is the one the arm controller builds
(:meth:`spine_nav.arm.controller.ArmGuide.align`): tube opening at ``entry - standoff * direction``,
guide axis along the direction, solved with the same :meth:`ArmKinematics.align` (reach check, CLIK
from ``q_seed`` and its deterministic seeds, joint-limit margin >= ``min_limit_margin``).

A layout is scored lexicographically (:attr:`LayoutScore.key`): screws reached (IK converged within
the joint limits), then the worst joint-limit margin (fraction of the joint's range, rounded to
0.01: nearly equal margins are decided by the next criterion), then the worst distance from a
singularity (smallest singular value of the 5x7 alignment-task Jacobian, position rows in metres).

Candidates (:func:`candidate_poses`) are poses a real OR uses, yaw facing the spine:

    side_left / side_right  beside the table (base disc outside the table top), from below the back
                            to an elevated cart column;
    cranial                 on the midline beyond L1 on an elevated column (over the patient: only
                            >= ``ELEVATED_MIN_MM`` above the entries).

:func:`search_layout` is coarse to fine: a vectorised reach screen of every candidate (the wrist
centre each target needs against the arm's shell, no IK), the full IK on the best few per family,
then a local refinement of the overall best (step halved each round). About 1 s of IK per pose and
plan of ten screws (pruned as soon as a pose cannot win): ~10 s for one plan, ~1 min for ten.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from spine_nav.arm.kinematics import M_PER_MM, AlignmentTarget, ArmKinematics, UnreachableTarget
from spine_nav.geometry import invert, make_transform, transform_directions, transform_points
from spine_nav.plan import Plan

#: Reference (LPS) axes in Table: x (patient left) -> -x, y (posterior) -> +z (up, prone),
#: z (superior) -> +y. Columns are the images of the Reference axes.
R_TABLE_REFERENCE = np.array([[-1.0, 0.0, 0.0],
                              [0.0, 0.0, 1.0],
                              [0.0, 1.0, 0.0]])
#: OR table top half width and the robot cart's base disc radius (mm): a base beside the table
#: stands at |x| >= their sum from the spine's midline.
TABLE_HALF_WIDTH_MM = 275.0
BASE_RADIUS_MM = 100.0
#: A base over the patient (|x| below the above) must be on an elevated column at least this far
#: above the planned entries (the patient's back is ~40-60 mm above the bone).
ELEVATED_MIN_MM = 200.0
FAMILIES = ("side_left", "side_right", "cranial")


@dataclass(frozen=True)
class BasePose:
    """The robot base in the Table frame: position (mm) and yaw about the vertical (deg)."""

    family: str
    x_mm: float
    y_mm: float
    z_mm: float
    yaw_deg: float | None = None   # None: face the spine (base +x toward the Table origin)

    @property
    def yaw(self) -> float:
        if self.yaw_deg is not None:
            return math.radians(self.yaw_deg)
        if math.hypot(self.x_mm, self.y_mm) < 1e-6:
            return 0.0
        return math.atan2(-self.y_mm, -self.x_mm)

    @property
    def T_table_robotbase(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return make_transform(np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]),
                              [self.x_mm, self.y_mm, self.z_mm])

    def plausible(self) -> str:
        """'' when a real OR could place the base here, else why not."""
        over_table = abs(self.x_mm) < TABLE_HALF_WIDTH_MM + BASE_RADIUS_MM
        if over_table and self.z_mm < ELEVATED_MIN_MM:
            return (f"base over the table/patient (|x| {abs(self.x_mm):.0f} mm < "
                    f"{TABLE_HALF_WIDTH_MM + BASE_RADIUS_MM:.0f} mm) and not elevated "
                    f"(z {self.z_mm:.0f} mm < {ELEVATED_MIN_MM:.0f} mm)")
        return ""

    def describe(self) -> str:
        return (f"{self.family}: x {self.x_mm:+.0f} mm, y {self.y_mm:+.0f} mm, z {self.z_mm:+.0f} mm "
                f"(Table: x patient right, y cranial, z up, origin mean entry), yaw {math.degrees(self.yaw):.0f} deg")


@dataclass(frozen=True)
class ScrewReach:
    screw_id: str
    reached: bool
    reason: str = ""                  # UnreachableTarget message when not reached
    limit_margin: float = float("nan")  # fraction of range to the nearest joint limit
    sigma_min: float = float("nan")     # smallest singular value of the 5x7 task Jacobian (m, rad)
    q_rad: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LayoutScore:
    pose: BasePose
    screws: tuple[ScrewReach, ...]
    reason: str = ""  # non-empty: rejected as a pose (implausible in an OR)

    @property
    def n_reached(self) -> int:
        return sum(s.reached for s in self.screws)

    @property
    def n_screws(self) -> int:
        return len(self.screws)

    @property
    def all_reached(self) -> bool:
        return not self.reason and self.n_reached == self.n_screws

    @property
    def worst_margin(self) -> float:
        m = [s.limit_margin for s in self.screws if s.reached]
        return min(m) if m else 0.0

    @property
    def worst_sigma(self) -> float:
        s = [x.sigma_min for x in self.screws if x.reached]
        return min(s) if s else 0.0

    @property
    def key(self) -> tuple:
        if self.reason:
            return (-1, 0.0, 0.0)
        return (self.n_reached, round(self.worst_margin, 2), self.worst_sigma)

    @property
    def pruned(self) -> bool:
        return any(s.reason.startswith("not evaluated") for s in self.screws)

    @property
    def failures(self) -> dict[str, str]:
        return {s.screw_id: s.reason for s in self.screws if not s.reached}

    def summary(self) -> str:
        if self.reason:
            return f"{self.pose.describe()}: rejected: {self.reason}"
        text = (f"{self.pose.describe()}: {self.n_reached}/{self.n_screws} screws reached, worst joint margin "
                f"{self.worst_margin:.3f}, worst sigma_min {self.worst_sigma:.3f}")
        for sid, why in self.failures.items():
            text += f"\n  {sid}: {why}"
        return text


# ---------------------------------------------------------------------------- frames and targets
def table_from_reference(plan_reference: Plan) -> np.ndarray:
    """``T_table_reference`` for a plan in Reference: origin at the mean planned entry."""
    entries = np.array([s.entry_mm for s in plan_reference.screws], dtype=float)
    if entries.size == 0:
        raise ValueError("plan_reference: no screws")
    return make_transform(R_TABLE_REFERENCE, -R_TABLE_REFERENCE @ entries.mean(axis=0))


def robotbase_from_reference(plan_reference: Plan, pose: BasePose) -> np.ndarray:
    """``T_robotbase_reference`` for ``pose`` (Table frame of this plan)."""
    return invert(pose.T_table_robotbase) @ table_from_reference(plan_reference)


def alignment_targets(plan_reference: Plan, standoff_mm: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(screw ids, tube points (n,3), unit axes (n,3)) in Table, as the controller builds them."""
    T = table_from_reference(plan_reference)
    ids, pts, axes = [], [], []
    for s in plan_reference.screws:
        d = s.direction
        ids.append(s.id)
        pts.append(transform_points(T, np.asarray(s.entry_mm, float) - standoff_mm * d))
        axes.append(transform_directions(T, d))
    return ids, np.array(pts), np.array(axes)


def task_sigma_min(kin: ArmKinematics, q_rad: np.ndarray) -> float:
    """Smallest singular value of the alignment task Jacobian ``[J_v; x^T J_w; y^T J_w]`` (m, rad)."""
    J = kin.jacobian(q_rad) * np.array([[M_PER_MM]] * 3 + [[1.0]] * 3)
    R = kin.fk(q_rad)[:3, :3]
    A = np.vstack([J[:3], R[:, :2].T @ J[3:]])
    return float(np.linalg.svd(A, compute_uv=False)[-1])


# ---------------------------------------------------------------------------- evaluation
def builtin_seed(kin: ArmKinematics, target_point_mm: np.ndarray) -> np.ndarray:
    """The first of :meth:`ArmKinematics.align`'s own deterministic seeds (n_seeds = 6) for a target.

    Passed as ``q_seed`` it makes a score independent of where the arm happens to be: the demo seeds
    align() with the arm's current joints, *plus* these seeds, and keeps the converged solution with
    the largest margin, so its margin is at least the one scored here."""
    return kin.builtin_seed(target_point_mm)


def evaluate_pose(kin: ArmKinematics, pose: BasePose, targets: tuple[list[str], np.ndarray, np.ndarray],
                  q_seed: np.ndarray | None = None, min_limit_margin: float = 0.02,
                  max_failures: int | None = None, beat_margin: float | None = None) -> LayoutScore:
    """Align every target (Table frame) from ``pose`` with :meth:`ArmKinematics.align` (the demo's path).

    ``q_seed``: the arm's current joints; None: only align()'s own seeds (see :func:`builtin_seed`).
    Search pruning (the rest are marked "not evaluated": the layout cannot beat the best one any
    more): ``max_failures`` unreachable screws, or, with ``beat_margin``, one reached screw whose
    margin is below it when no failure is allowed.
    """
    why = pose.plausible()
    ids, pts, axes = targets
    if why:
        return LayoutScore(pose, tuple(ScrewReach(i, False, why) for i in ids), reason=why)
    T_b_t = invert(pose.T_table_robotbase)
    p_b = transform_points(T_b_t, pts)
    a_b = transform_directions(T_b_t, axes)
    out: list[ScrewReach] = []
    failed, pruned = 0, False
    for k, sid in enumerate(ids):
        if pruned or (max_failures is not None and failed > max_failures):
            out.append(ScrewReach(sid, False, "not evaluated (search pruned this layout)"))
            continue
        seed = builtin_seed(kin, p_b[k]) if q_seed is None else q_seed
        try:
            r = kin.align(AlignmentTarget(p_b[k], a_b[k]), seed, min_limit_margin=min_limit_margin)
        except UnreachableTarget as exc:
            out.append(ScrewReach(sid, False, str(exc)))
            failed += 1
            continue
        margin = kin.limit_margin(r.q_rad)
        out.append(ScrewReach(sid, True, "", margin, task_sigma_min(kin, r.q_rad), r.q_rad))
        pruned = beat_margin is not None and max_failures == 0 and margin < beat_margin
    return LayoutScore(pose, tuple(out))


def evaluate_layout(kin: ArmKinematics, plan_reference: Plan, pose: BasePose, q_seed: np.ndarray | None = None,
                    standoff_mm: float = 25.0, min_limit_margin: float = 0.02) -> LayoutScore:
    """Score ``pose`` for one plan (Reference frame); see :func:`evaluate_pose`."""
    return evaluate_pose(kin, pose, alignment_targets(plan_reference, standoff_mm), q_seed, min_limit_margin)


def combine(scores: Sequence[LayoutScore]) -> LayoutScore:
    """One score for a pose over several plans (screw ids prefixed by the plan's index)."""
    screws = tuple(ScrewReach(f"{i}:{s.screw_id}", s.reached, s.reason, s.limit_margin, s.sigma_min, s.q_rad)
                   for i, sc in enumerate(scores) for s in sc.screws)
    reason = next((sc.reason for sc in scores if sc.reason), "")
    return LayoutScore(scores[0].pose, screws, reason)


# ---------------------------------------------------------------------------- candidates + screen
def candidate_poses(families: Iterable[str] = FAMILIES, step_mm: float = 50.0) -> list[BasePose]:
    """The coarse grid of OR-plausible poses (Table frame, mm), yaw facing the spine."""
    out: list[BasePose] = []
    zs = np.arange(-300.0, 500.0 + 1e-9, step_mm)
    for fam in families:
        if fam in ("side_left", "side_right"):
            sign = -1.0 if fam == "side_left" else 1.0
            for ax in np.arange(TABLE_HALF_WIDTH_MM + BASE_RADIUS_MM, 800.0 + 1e-9, step_mm):
                for y in np.arange(-300.0, 300.0 + 1e-9, step_mm):
                    out += [BasePose(fam, sign * float(ax), float(y), float(z)) for z in zs]
        elif fam == "cranial":
            for y in np.arange(150.0, 900.0 + 1e-9, step_mm):
                out += [BasePose(fam, 0.0, float(y), float(z)) for z in zs if z >= ELEVATED_MIN_MM]
        else:
            raise ValueError(f"family: unknown {fam!r} (known: {', '.join(FAMILIES)})")
    return out


def reach_screen(kin: ArmKinematics, poses: Sequence[BasePose], pts: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Per pose (n_poses, 2): screws passing the reach check, and the worst slack (mm) of the wrist
    centre to the arm's shell (negative: out of reach / too close). No IK: vectorised."""
    P = np.array([[p.x_mm, p.y_mm, p.z_mm] for p in poses])
    yaw = np.array([p.yaw for p in poses])
    c, s = np.cos(yaw), np.sin(yaw)
    wrist_t = pts - axes * (kin.wrist_to_tube_m / M_PER_MM)          # (m, 3) Table
    rel = wrist_t[None, :, :] - P[:, None, :]                        # (n, m, 3)
    x = c[:, None] * rel[..., 0] + s[:, None] * rel[..., 1]          # rotate into RobotBase
    y = -s[:, None] * rel[..., 0] + c[:, None] * rel[..., 1]
    z = rel[..., 2] - kin.shoulder_m[2] / M_PER_MM
    d = np.sqrt((x - kin.shoulder_m[0] / M_PER_MM) ** 2 + (y - kin.shoulder_m[1] / M_PER_MM) ** 2 + z ** 2)
    far = (kin.upper_arm_m + kin.forearm_m) / M_PER_MM - d
    near = d - kin.screen_min_reach_m / M_PER_MM
    slack = np.minimum(far, near)
    return np.stack([(slack > 1.0).sum(axis=1), slack.min(axis=1)], axis=1)


@dataclass
class SearchResult:
    best: LayoutScore
    per_family: dict[str, LayoutScore]
    evaluated: int
    screened: int


def search_layout(kin: ArmKinematics, plans_reference: Sequence[Plan], q_seed: np.ndarray | None = None,
                  standoff_mm: float = 25.0, min_limit_margin: float = 0.02, families: Iterable[str] = FAMILIES,
                  per_family: int = 3, refine_rounds: int = 2, coarse_step_mm: float = 50.0,
                  log=None) -> SearchResult:
    """Best base pose for all ``plans_reference`` (each in its own Table frame), coarse to fine.

    1. reach screen of :func:`candidate_poses` (vectorised, no IK);
    2. full alignment IK (:func:`evaluate_pose`) on the ``per_family`` best-screened poses per family;
    3. refinement around the best: neighbours at +-step in x, y, z, step halved each round.
    Deterministic (fixed grid, fixed seeds, stable sorts).
    """
    say = log or (lambda _m: None)
    families = tuple(families)
    targets = [alignment_targets(p, standoff_mm) for p in plans_reference]
    pts = np.vstack([t[1] for t in targets])
    axes = np.vstack([t[2] for t in targets])
    n_total = len(pts)
    cands = candidate_poses(families, coarse_step_mm)
    screen = reach_screen(kin, cands, pts, axes)
    evaluated = 0
    cache: dict[tuple, LayoutScore] = {}

    def full(pose: BasePose, to_beat: LayoutScore | None = None) -> LayoutScore:
        """All plans from ``pose``; pruned as soon as it cannot beat ``to_beat``."""
        nonlocal evaluated
        k = (pose.family, round(pose.x_mm, 3), round(pose.y_mm, 3), round(pose.z_mm, 3), pose.yaw_deg)
        if k in cache and (to_beat is None or not cache[k].pruned):
            return cache[k]
        budget = None if to_beat is None else n_total - to_beat.n_reached  # failures allowed
        beat = None if to_beat is None else round(to_beat.worst_margin, 2) - 0.005
        sc = []
        for t in targets:
            one = evaluate_pose(kin, pose, t, q_seed, min_limit_margin, max_failures=budget, beat_margin=beat)
            sc.append(one)
            if budget is not None:
                budget -= one.n_screws - one.n_reached
                if one.pruned:
                    budget = -1
        evaluated += 1
        res = combine(sc)
        cache[k] = res
        return res

    best_by_family: dict[str, LayoutScore] = {}
    best: LayoutScore | None = None
    for fam in families:
        idx = [i for i, p in enumerate(cands) if p.family == fam]
        # most screws passing the reach check, then the largest worst slack (deterministic: stable sort)
        idx.sort(key=lambda i: (-screen[i, 0], -screen[i, 1]))
        for i in idx[:per_family]:
            sc = full(cands[i], to_beat=best_by_family.get(fam))
            if fam not in best_by_family or sc.key > best_by_family[fam].key:
                best_by_family[fam] = sc
        say(f"layout search: {fam}: {best_by_family[fam].summary().splitlines()[0]}")
        if best is None or best_by_family[fam].key > best.key:
            best = best_by_family[fam]
    assert best is not None
    step = coarse_step_mm / 2.0
    for _ in range(refine_rounds):
        improved = True
        while improved:
            improved = False
            p = best.pose
            moves = [(0, step, 0), (0, -step, 0), (0, 0, step), (0, 0, -step)]
            if p.family != "cranial":  # the cranial column stays on the midline
                moves = [(step, 0, 0), (-step, 0, 0)] + moves
            for dx, dy, dz in moves:
                q = BasePose(p.family, p.x_mm + dx, p.y_mm + dy, p.z_mm + dz, p.yaw_deg)
                if q.plausible():
                    continue
                sc = full(q, to_beat=best)
                if sc.key > best.key:
                    best, improved = sc, True
                    say(f"layout search: refined (step {step:g} mm): {sc.summary().splitlines()[0]}")
                    break
        step /= 2.0
    return SearchResult(best, best_by_family, evaluated, len(cands))
