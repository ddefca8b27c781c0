"""How far a placed screw is from its plan (all in one frame, mm / deg).

Definitions (written once; the guard uses the same geometry live)::

                 planned entry E                planned target P
    planned  ------o------------------------------------o------->  d (unit)
                   |\\ entry_error_mm
                   | o  placed axis crosses the plane through E, normal d
                   |   \\
    placed           ----o-------------------------------o  placed tip
                                                           \\ tip_error_mm = |placed tip - P|

    angular_error_deg = angle(placed axis, d)

The placed screw is the drill's true (noise-free) path: its axis direction and
its tip at the end of insertion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spine_nav.geometry import angle_between_deg, validate_vector3
from spine_nav.plan import Screw


@dataclass(frozen=True)
class PlacementError:
    entry_error_mm: float
    tip_error_mm: float
    angular_error_deg: float


def placement_error(planned: Screw, placed_tip_mm: np.ndarray, placed_direction: np.ndarray) -> PlacementError:
    """Errors of a placed screw (tip + unit axis toward the tip) against ``planned``, same frame.

    Raises ValueError when the placed axis is parallel to the entry plane (no crossing).
    """
    tip = validate_vector3(placed_tip_mm, "placed_tip_mm")
    u = validate_vector3(placed_direction, "placed_direction")
    norm = float(np.linalg.norm(u))
    if norm == 0.0:
        raise ValueError("placed_direction: zero-length vector")
    u = u / norm
    d = planned.direction
    denom = float(np.dot(u, d))
    if abs(denom) < 1e-9:
        raise ValueError("placed axis is parallel to the entry plane: no entry crossing")
    s = float(np.dot(planned.entry_mm - tip, d)) / denom
    crossing = tip + s * u
    return PlacementError(
        entry_error_mm=float(np.linalg.norm(crossing - planned.entry_mm)),
        tip_error_mm=float(np.linalg.norm(tip - planned.target_mm)),
        angular_error_deg=angle_between_deg(u, d),
    )
