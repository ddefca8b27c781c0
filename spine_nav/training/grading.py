"""Grading of a placed screw against its plan and the cortex (no ROS). ONE function, used by the
demo's report (:mod:`spine_nav.demo.run`) and by trainee mode.

Frames and units: everything in the plan's frame (PreopCT, LPS mm), angles in degrees.

* Placement errors: :func:`spine_nav.plan.placement.placement_error` (entry error in the plane
  through the planned entry, tip error, angle between axes).
* Breach: the placed screw is the cylinder of the planned diameter from ``tip - depth * axis`` to
  the tip (planned depth: the screw that was chosen for this pedicle), scored against the bone of
  its level by :func:`spine_nav.imaging.breach.cortical_breach_mm`; the Gertzbein-Robbins grade by
  :func:`spine_nav.imaging.breach.gertzbein_robbins_grade` with breaches up to
  :data:`GR_NO_BREACH_TOL_MM` counted as none (sub-voxel: a postoperative CT with 0.7 mm voxels
  does not see them either).
* Without the phantom's ground truth (``bone is None``) there is no cortex to grade against: the
  breach is the *proxy* of the console's training table (the tip's lateral deviation from the planned
  line beyond :data:`PROXY_FREE_LATERAL_MM`), and the result says so in ``grade_basis``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from spine_nav.imaging.breach import BoneModel, cortical_breach_mm, gertzbein_robbins_grade
from spine_nav.plan import Screw
from spine_nav.plan.placement import placement_error

#: Breaches at or below this (mm) grade A: thinner than the CT's voxel (0.7 mm), not seen postoperatively.
GR_NO_BREACH_TOL_MM = 0.5
#: Proxy (no ground truth): lateral tip deviation (mm) allowed before it counts as a breach (console page).
PROXY_FREE_LATERAL_MM = 1.0

BASIS_CORTEX = "cortex"
BASIS_PROXY = "proxy"
PROXY_LABEL = ("PROXY grade: no phantom ground truth in the case, so no cortex to grade against; "
               f"breach = tip lateral deviation from the planned line beyond {PROXY_FREE_LATERAL_MM:g} mm")


@dataclass(frozen=True)
class ScrewGrade:
    """A placed screw graded against its plan (PreopCT mm / deg)."""

    screw_id: str
    level: str
    entry_error_mm: float
    tip_error_mm: float
    angular_error_deg: float
    breach_mm: float
    gr_grade: str
    grade_basis: str           # BASIS_CORTEX or BASIS_PROXY
    grade_note: str = ""       # PROXY_LABEL for proxy grades

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def breach_and_grade(planned: Screw, tip_mm: np.ndarray, axis: np.ndarray, bone: BoneModel,
                     no_breach_tol_mm: float = GR_NO_BREACH_TOL_MM) -> tuple[float, str]:
    """(breach mm, Gertzbein-Robbins grade) of the placed screw (tip + axis toward the tip, planned
    depth and diameter) against the cortex of ``planned.level`` in ``bone`` (same frame as the plan)."""
    tip = np.asarray(tip_mm, dtype=float)
    u = np.asarray(axis, dtype=float)
    u = u / np.linalg.norm(u)
    entry = tip - planned.depth_mm * u
    breach = float(cortical_breach_mm(entry, tip, planned.diameter_mm, planned.level, bone))
    return breach, gertzbein_robbins_grade(breach, no_breach_tol_mm=no_breach_tol_mm)


def proxy_breach_mm(planned: Screw, tip_mm: np.ndarray) -> float:
    """Tip's lateral deviation (mm) from the planned line beyond :data:`PROXY_FREE_LATERAL_MM` (>= 0)."""
    tip = np.asarray(tip_mm, dtype=float)
    d = planned.direction
    v = tip - planned.entry_mm
    lateral = float(np.linalg.norm(v - np.dot(v, d) * d))
    return max(0.0, lateral - PROXY_FREE_LATERAL_MM)


def grade_placed_screw(planned: Screw, tip_mm: np.ndarray, axis: np.ndarray, bone: BoneModel | None,
                       no_breach_tol_mm: float = GR_NO_BREACH_TOL_MM) -> ScrewGrade:
    """Grade a placed screw (``tip_mm``, unit ``axis`` toward the tip; the plan's frame) against
    ``planned``: placement errors and the Gertzbein-Robbins grade from ``bone``'s cortex, or the
    labelled proxy when ``bone`` is None (no ground truth)."""
    err = placement_error(planned, tip_mm, axis)
    if bone is not None:
        breach, grade = breach_and_grade(planned, tip_mm, axis, bone, no_breach_tol_mm)
        basis, note = BASIS_CORTEX, ""
    else:
        breach = proxy_breach_mm(planned, tip_mm)
        grade = gertzbein_robbins_grade(breach)
        basis, note = BASIS_PROXY, PROXY_LABEL
    return ScrewGrade(planned.id, planned.level, err.entry_error_mm, err.tip_error_mm, err.angular_error_deg,
                      breach, grade, basis, note)
