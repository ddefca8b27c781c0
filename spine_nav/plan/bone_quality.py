"""Bone quality along each planned screw, from the preoperative CT (no ROS).

For every screw (PreopCT LPS mm) and the preop CT (HU):

* ``mean_hu`` / ``min_hu``: HU sampled inside the screw's cylinder (its diameter)
  from 2 mm past the entry (where the head meets the bone surface) to the target.
* ``body_hu``: vertebral-body trabecular HU by the three-region method (clinical
  notes): circular ROIs (``roi_radius_mm``) below the superior endplate, mid-body
  and above the inferior endplate, on a vertical line through the level's screw
  tips; cortical voxels (>= ``cortex_hu``) are excluded from the ROIs.
* ``pedicle_width_mm``: the narrowest outer-to-outer bone chord across the screw
  path, perpendicular to it in the axial plane (rays from the axis outward until
  they have crossed the cortex; positions on the axis that are themselves cortex are
  skipped); ``margin_mm`` = (width - diameter) / 2, the bone
  left each side (the breach margin).

Flags (short codes; a message explains each):

* ``low_bone_density``: body HU below ``low_hu_threshold`` (configurable within the
  reported 73-202 HU range): consider cement augmentation, a larger diameter or a
  cortical-bone trajectory. HU is a screening aid, not a diagnosis (DEXA is).
* ``narrow_pedicle``: ``margin_mm`` below ``min_margin_mm``.
* ``outside_ct``: part of the screw lies outside the CT volume.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import map_coordinates

from spine_nav.geometry import axial_perpendicular_frame
from spine_nav.imaging.volume import Volume
from spine_nav.plan.model import Plan, PlanError, Screw

#: Published CT thresholds for poor bone mineral density span this range (HU).
HU_THRESHOLD_RANGE = (73.0, 202.0)


@dataclass(frozen=True)
class BoneQualityConfig:
    """Thresholds of the report (HU, mm)."""

    low_hu_threshold: float = 110.0
    min_margin_mm: float = 0.75
    cortex_hu: float = 400.0
    roi_radius_mm: float = 5.0
    step_mm: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = HU_THRESHOLD_RANGE
        if not lo <= self.low_hu_threshold <= hi:
            raise ValueError(f"low_hu_threshold: {self.low_hu_threshold:g} HU is outside the published "
                             f"{lo:g}-{hi:g} HU range")
        if not 0.0 <= self.min_margin_mm <= 5.0:
            raise ValueError(f"min_margin_mm: {self.min_margin_mm:g} mm is outside 0-5 mm")


@dataclass
class LevelBodyHU:
    level: str
    body_hu: float
    region_hu: dict[str, float]          # superior / mid / inferior
    endplates_found: bool


@dataclass
class ScrewBoneQuality:
    id: str
    level: str
    side: str
    diameter_mm: float
    mean_hu: float
    min_hu: float
    body_hu: float
    pedicle_width_mm: float | None
    margin_mm: float | None
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _sample(ct: Volume, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HU at LPS points (trilinear) and a mask of points inside the volume."""
    ijk = ct.lps_to_index(pts)
    inside = np.all((ijk >= -0.5) & (ijk <= np.array(ct.shape) - 0.5), axis=1)
    vals = map_coordinates(ct.data, ijk.T, output=np.float32, order=1, mode="nearest")  # no full-volume copy
    return vals, inside


def cylinder_points(screw: Screw, step_mm: float = 0.5, skip_entry_mm: float = 2.0) -> np.ndarray:
    """Points filling the screw's cylinder (axis + two rings) from ``skip_entry_mm`` past the entry
    (the head sits on the bone surface) to the target (LPS mm)."""
    d = screw.direction
    n, m = axial_perpendicular_frame(d)
    s = np.arange(min(skip_entry_mm, screw.depth_mm), screw.depth_mm + 1e-9, step_mm)
    offsets = [np.zeros(3)]
    for r, k in ((0.25 * screw.diameter_mm, 6), (0.45 * screw.diameter_mm, 12)):
        for a in np.linspace(0, 2 * math.pi, k, endpoint=False):
            offsets.append(r * (math.cos(a) * n + math.sin(a) * m))
    axis = screw.entry_mm + s[:, None] * d
    return (axis[:, None, :] + np.asarray(offsets)[None, :, :]).reshape(-1, 3)


def _edge_along(profile: np.ndarray, cortex_hu: float) -> int | None:
    """Index where a ray from inside bone has crossed the cortex (first sample below it after it), or None."""
    hit = np.nonzero(profile >= cortex_hu)[0]
    if len(hit) == 0:
        return None
    after = np.nonzero(profile[hit[0]:] < cortex_hu)[0]
    return None if len(after) == 0 else int(hit[0] + after[0])


def pedicle_width_mm(ct: Volume, screw: Screw, cfg: BoneQualityConfig = BoneQualityConfig(),
                     max_ray_mm: float = 20.0) -> float | None:
    """Narrowest transverse outer bone chord across the screw path (mm), or None if not measurable."""
    d = screw.direction
    n, _ = axial_perpendicular_frame(d)
    ray_step = 0.2
    r = np.arange(0.0, max_ray_mm, ray_step)
    widths = []
    for s in np.arange(3.0, 0.6 * screw.depth_mm, cfg.step_mm):
        c = screw.entry_mm + s * d
        if _sample(ct, c[None])[0][0] >= cfg.cortex_hu:
            continue  # starting inside the cortex would find its inner edge, not the outer one
        sides = []
        for sign in (1.0, -1.0):
            prof, _ = _sample(ct, c + sign * r[:, None] * n)
            i = _edge_along(prof, cfg.cortex_hu)
            if i is None:
                break
            # interpolate the outer edge between the last cortex sample and the first one below
            a, b = prof[i - 1], prof[i]
            frac = (a - cfg.cortex_hu) / (a - b) if a != b else 0.0
            sides.append(r[i - 1] + frac * ray_step)
        if len(sides) == 2:
            widths.append(sides[0] + sides[1])
    return float(min(widths)) if widths else None


def level_body_hu(ct: Volume, plan: Plan, level: str, cfg: BoneQualityConfig = BoneQualityConfig(),
                  max_mm: float = 40.0) -> LevelBodyHU:
    """Three-region trabecular HU of ``level``'s body, on a vertical line through the mean screw tip."""
    tips = np.array([s.target_mm for s in plan.screws_at(level)])
    if len(tips) == 0:
        raise PlanError(f"level {level}: no screws in the plan")
    c = tips.mean(axis=0)
    z = np.arange(0.0, max_mm, 0.25)
    ends = []
    for sign in (1.0, -1.0):  # +z = superior (LPS)
        prof, _ = _sample(ct, c + sign * z[:, None] * np.array([0.0, 0.0, 1.0]))
        hit = np.nonzero(prof >= cfg.cortex_hu)[0]
        ends.append(z[hit[0]] * sign if len(hit) else None)
    found = ends[0] is not None and ends[1] is not None
    z_sup, z_inf = (ends[0], ends[1]) if found else (8.0, -8.0)
    h = z_sup - z_inf
    centres = {"superior": z_sup - 0.2 * h, "mid": z_inf + 0.5 * h, "inferior": z_inf + 0.2 * h}
    rr, aa = np.meshgrid(np.arange(0.0, cfg.roi_radius_mm + 1e-9, 0.5), np.linspace(0, 2 * math.pi, 24,
                                                                                  endpoint=False))
    disc = np.stack([(rr * np.cos(aa)).ravel(), (rr * np.sin(aa)).ravel(), np.zeros(rr.size)], axis=1)
    region = {}
    for name, dz in centres.items():
        pts = np.concatenate([disc + c + np.array([0.0, 0.0, dz + t]) for t in (-1.0, 0.0, 1.0)])
        vals, inside = _sample(ct, pts)
        keep = inside & (vals < cfg.cortex_hu) & (vals > -200.0)  # trabecular bone only
        region[name] = float(np.mean(vals[keep])) if keep.any() else float("nan")
    return LevelBodyHU(level, float(np.nanmean(list(region.values()))), region, found)


def assess_plan(ct: Volume, plan: Plan, cfg: BoneQualityConfig = BoneQualityConfig()) -> dict[str, Any]:
    """The bone-quality report of every screw (JSON-ready dict with ``screws`` and ``levels``)."""
    levels = {lv: level_body_hu(ct, plan, lv, cfg) for lv in plan.levels}
    rows = []
    for s in plan.screws:
        vals, inside = _sample(ct, cylinder_points(s, cfg.step_mm))
        width = pedicle_width_mm(ct, s, cfg)
        margin = None if width is None else 0.5 * (width - s.diameter_mm)
        body = levels[s.level].body_hu
        q = ScrewBoneQuality(s.id, s.level, s.side, s.diameter_mm, float(vals.mean()), float(vals.min()), body,
                             width, margin)
        if body < cfg.low_hu_threshold:
            q.flags.append("low_bone_density")
            q.messages.append(f"vertebral body {body:.0f} HU < {cfg.low_hu_threshold:g} HU: consider cement "
                              "augmentation / larger diameter / cortical trajectory (HU screens; DEXA diagnoses)")
        if margin is not None and margin < cfg.min_margin_mm:
            q.flags.append("narrow_pedicle")
            q.messages.append(f"pedicle {width:.1f} mm for a {s.diameter_mm:g} mm screw leaves {margin:.1f} mm "
                              f"per side (< {cfg.min_margin_mm:g} mm): breach risk, consider a smaller diameter")
        if not inside.all():
            q.flags.append("outside_ct")
            q.messages.append("part of the screw lies outside the CT volume")
        rows.append(q)
    return {
        "config": asdict(cfg),
        "levels": {lv: asdict(v) for lv, v in levels.items()},
        "screws": [asdict(r) for r in rows],
    }


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width text table of a report (one line per screw)."""
    head = f"{'screw':10s} {'diam':>5s} {'meanHU':>7s} {'minHU':>6s} {'bodyHU':>7s} {'pedicle':>8s} {'margin':>7s}  flags"
    lines = [head, "-" * len(head)]
    for r in report["screws"]:
        w = "-" if r["pedicle_width_mm"] is None else f"{r['pedicle_width_mm']:.1f}"
        mg = "-" if r["margin_mm"] is None else f"{r['margin_mm']:.1f}"
        lines.append(f"{r['id']:10s} {r['diameter_mm']:5.1f} {r['mean_hu']:7.0f} {r['min_hu']:6.0f} "
                     f"{r['body_hu']:7.0f} {w:>8s} {mg:>7s}  {', '.join(r['flags']) or 'ok'}")
    for r in report["screws"]:
        for m in r["messages"]:
            lines.append(f"  {r['id']}: {m}")
    return "\n".join(lines)
