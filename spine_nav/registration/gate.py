"""The quality gate: decides per level whether a transform may be used for navigation.

A silently wrong registration is the most dangerous failure of the stack, so every check
must pass; the first failing checks are joined into ``reason``. Checks (thresholds in
:class:`~spine_nav.registration.config.GateThresholds`):

* input: enough preop surface points for the level, enough CBCT points around it;
* plan/label consistency: the level's planned trajectories run inside its own label
  (a mislabelled level puts them in the neighbour's);
* field of view: most of the level's surface, mapped by the result, lies inside the CBCT;
* fitness and inlier RMSE against the CBCT surface;
* degeneracy: condition number of the point-to-plane Hessian;
* multi-start agreement: perturbed starts converge to the same pose;
* consistency with the whole-spine transform and with the neighbouring levels (run after all
  levels, :func:`neighbour_checks`).

With ``GateThresholds.data_derived`` (default) the residual limits are scaled to the CBCT at hand
(:func:`scaled_thresholds`, :func:`level_thresholds`) and the neighbour limits follow from
physiological segmental motion (:func:`neighbour_limits`); every refusal names the check, the
measured value and its limit (and, for the neighbour check, the neighbour and how far apart).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from spine_nav.geometry import compose, invert, rotation_angle_deg, transform_points
from spine_nav.registration.config import GateThresholds


@dataclass
class LevelQuality:
    """Quality figures of one level (mm / deg / fractions); NaN when not computed."""

    fitness: float = float("nan")
    inlier_rmse_mm: float = float("nan")
    residual_p95_mm: float = float("nan")
    fov_fraction: float = float("nan")
    condition_number: float = float("nan")
    multistart_spread_mm: float = float("nan")
    plan_in_label_fraction: float = float("nan")
    global_translation_mm: float = float("nan")
    global_rotation_deg: float = float("nan")
    neighbour_translation_mm: float = float("nan")
    neighbour_rotation_deg: float = float("nan")
    preop_points: int = 0
    cbct_points: int = 0
    retried_starts: int = 0  # extra starts tried after the first fit failed the gate (0 = none needed)
    multistart_worse_minima: int = 0  # perturbed starts that settled in a worse minimum (failing the fit checks)
    metal_distance_mm: float = float("nan")  # nearest CBCT metal voxel to the level's centre (NaN: none)
    max_inlier_rmse_limit_mm: float = float("nan")  # the residual limits applied to this level
    max_residual_p95_limit_mm: float = float("nan")
    overridden: bool = False  # accepted by an explicit operator override despite failed checks
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for k, v in self.__dict__.items():
            if k == "failures":
                continue
            out[k] = v if isinstance(v, (int, bool)) else (round(float(v), 6) if np.isfinite(v) else None)
        return out


def scaled_thresholds(g: GateThresholds, cbct, preop=None) -> GateThresholds:
    """``g`` with its residual limits scaled to the measured images: ``rmse_per_edge`` /
    ``p95_per_edge`` x the surface width mm: the CBCT's edge width + surface noise and, when ``preop``
    is given, the preop CT's in quadrature (both :class:`~spine_nav.registration.cbct_quality.CbctQuality`).
    The pipeline passes the CBCT only: with the preop CT in quadrature (meant for a 0.5 mm CBCT against
    a 1.2 mm preop CT, whose correct levels reach the 0.18 mm floor) the 1 mm CBCT limit rose to
    ~0.25 mm and another phantom's vertebra (same template) passed at ~0.2 mm. Never below the fixed
    limits (see :class:`GateThresholds` for the factors). Unchanged when not ``data_derived``."""
    if not g.data_derived:
        return g
    width = surface_width_mm(cbct, preop)
    if not np.isfinite(width):
        return g
    return replace(g, max_inlier_rmse_mm=max(g.max_inlier_rmse_mm, g.rmse_per_edge * width),
                   max_residual_p95_mm=max(g.max_residual_p95_mm, g.p95_per_edge * width))


def surface_width_mm(cbct, preop=None) -> float:
    """The width (mm) the gate's residual limits scale with: CBCT and (optional) preop CT image widths
    in quadrature (:func:`image_width_mm`)."""
    w = image_width_mm(cbct)
    return float(np.hypot(w, image_width_mm(preop))) if preop is not None else w


def image_width_mm(q) -> float:
    """How imprecisely one image places its bone surface (mm): edge width + surface noise."""
    return float(q.edge_mm) + float(q.surface_noise_mm)


def level_thresholds(g: GateThresholds, q: LevelQuality) -> GateThresholds:
    """The residual limits for one level: x ``metal_factor`` when metal lies within ``metal_radius_mm``."""
    if g.data_derived and q.metal_distance_mm <= g.metal_radius_mm:
        return replace(g, max_inlier_rmse_mm=g.metal_factor * g.max_inlier_rmse_mm,
                       max_residual_p95_mm=g.metal_factor * g.max_residual_p95_mm)
    return g


def neighbour_limits(g: GateThresholds, centroid_a_mm: np.ndarray, centroid_b_mm: np.ndarray) -> tuple[float, float]:
    """(translation mm, rotation deg) two adjacent levels may differ by (see ``level_motion_*``)."""
    if not g.data_derived:
        return g.max_neighbour_translation_mm, g.max_neighbour_rotation_deg
    lever = 0.5 * float(np.linalg.norm(np.asarray(centroid_a_mm) - np.asarray(centroid_b_mm)))
    t = 2.0 * g.level_motion_mm + 2.0 * lever * np.sin(np.radians(g.level_motion_deg))
    return float(t), 2.0 * g.level_motion_deg


def local_checks(q: LevelQuality, g: GateThresholds) -> list[str]:
    """Checks that need only this level's figures; returns the failure reasons (empty = pass).

    ``g`` is the case's (scaled) gate; the level's metal factor is applied here."""
    g = level_thresholds(g, q)
    q.max_inlier_rmse_limit_mm, q.max_residual_p95_limit_mm = g.max_inlier_rmse_mm, g.max_residual_p95_mm
    fails = []
    if q.preop_points < g.min_points:
        fails.append(f"only {q.preop_points} preop surface points < {g.min_points}")
    if q.cbct_points < g.min_points:
        fails.append(f"only {q.cbct_points} CBCT surface points near the level < {g.min_points} "
                     "(outside the field of view?)")
    if not q.plan_in_label_fraction >= g.min_plan_in_label_fraction:
        fails.append(f"planned trajectories only {q.plan_in_label_fraction:.2f} inside the level's label "
                     f"< {g.min_plan_in_label_fraction:.2f} (mislabelled level?)")
    if not q.fov_fraction >= g.min_fov_fraction:
        fails.append(f"only {q.fov_fraction:.2f} of the level inside the CBCT field of view "
                     f"< {g.min_fov_fraction:.2f}")
    if not q.fitness >= g.min_fitness:
        fails.append(f"fitness {q.fitness:.2f} < {g.min_fitness:.2f}")
    if not q.inlier_rmse_mm <= g.max_inlier_rmse_mm:
        fails.append(f"inlier RMSE {q.inlier_rmse_mm:.2f} mm > limit {g.max_inlier_rmse_mm:.2f} mm")
    if not q.residual_p95_mm <= g.max_residual_p95_mm:
        fails.append(f"95 % of residuals within {q.residual_p95_mm:.2f} mm > limit {g.max_residual_p95_mm:.2f} mm "
                     "(shape mismatch: another patient or level?)")
    if not q.condition_number <= g.max_condition_number:
        fails.append(f"degenerate: point-to-plane condition number {q.condition_number:.0f} "
                     f"> {g.max_condition_number:.0f}")
    if not q.multistart_spread_mm <= g.max_multistart_spread_mm:
        fails.append(f"perturbed starts disagree by {q.multistart_spread_mm:.2f} mm "
                     f"> {g.max_multistart_spread_mm:.2f} mm")
    return fails


def transform_gap(T_a: np.ndarray, T_b: np.ndarray, at_mm: np.ndarray) -> tuple[float, float]:
    """(distance in mm between ``at`` mapped by T_a and by T_b, rotation angle of T_a^-1 T_b in deg)."""
    d = float(np.linalg.norm(transform_points(T_a, at_mm) - transform_points(T_b, at_mm)))
    return d, rotation_angle_deg(compose(invert(T_a), T_b)[:3, :3])


def neighbour_checks(levels: list[str], transforms: dict[str, np.ndarray], centroids_mm: dict[str, np.ndarray],
                     qualities: dict[str, LevelQuality], T_global: np.ndarray, g: GateThresholds) -> None:
    """Add consistency figures and failures in place.

    Each level must agree with the whole-spine transform; and among levels that passed their
    local checks, a level that disagrees with every adjacent candidate is rejected (two that
    disagree with each other and have no third to break the tie are both rejected).
    """
    for lv in levels:
        if lv not in transforms:
            continue
        q = qualities[lv]
        q.global_translation_mm, q.global_rotation_deg = transform_gap(transforms[lv], T_global, centroids_mm[lv])
        if q.global_translation_mm > g.max_global_translation_mm or q.global_rotation_deg > g.max_global_rotation_deg:
            q.failures.append(f"whole-spine consistency: {q.global_translation_mm:.1f} mm / "
                              f"{q.global_rotation_deg:.1f} deg from the whole-spine registration (limit "
                              f"{g.max_global_translation_mm:.1f} mm / {g.max_global_rotation_deg:.1f} deg)")
    candidates = [lv for lv in levels if lv in transforms and not qualities[lv].failures]
    for i, lv in enumerate(levels):
        if lv not in candidates:
            continue
        neigh = [levels[j] for j in (i - 1, i + 1) if 0 <= j < len(levels) and levels[j] in candidates]
        if not neigh:
            continue
        gaps = []
        for nb in neigh:
            mid = 0.5 * (centroids_mm[lv] + centroids_mm[nb])
            gaps.append(transform_gap(transforms[lv], transforms[nb], mid))
        q = qualities[lv]
        limits = [neighbour_limits(g, centroids_mm[lv], centroids_mm[nb]) for nb in neigh]
        q.neighbour_translation_mm = min(t for t, _ in gaps)
        q.neighbour_rotation_deg = min(r for _, r in gaps)
        agree = [t <= lt and r <= lr for (t, r), (lt, lr) in zip(gaps, limits)]
        if not any(agree):
            q.failures.append("neighbour consistency: " + "; ".join(
                f"{nb} is {t:.1f} mm / {r:.1f} deg apart (limit {lt:.1f} mm / {lr:.1f} deg)"
                for nb, (t, r), (lt, lr) in zip(neigh, gaps, limits)))
