"""Active screw selection: explicit, or automatic (nearest planned trajectory, with hysteresis).

Distance used for automatic selection: from the tool tip to the planned *segment*
entry..target (clamped), in mm, Reference frame.

Rules (automatic mode):

* no screw active: pick the nearest screw whose segment distance <= ``capture_radius_mm``.
* a screw active: keep it while its distance <= ``capture_radius_mm + switch_margin_mm``;
  switch to another screw only when that one is within the capture radius AND closer than
  the active one by more than ``switch_margin_mm``. Neighbouring screws (left/right of one
  level, ~25-40 mm apart at the entry) therefore never flicker.
* once the tool is engaged on the active screw (the guard is not in APPROACH: the tip is
  near the entry or in bone), the selection is held: the guard never re-targets a screw
  while drilling. The guard core passes ``hold=True`` for that.

Explicit mode (service / parameter): the named screw stays active whatever the distances.

Two implementations of the nearest search: :meth:`SegmentSet.distances_numpy` (vectorised
over all screws) and :meth:`SegmentSet.distances_plain` (a loop on floats);
``spine-nav bench guard`` measures both for 20 screws and the guard uses the faster
(see ``details.selection`` in the bench JSON).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from spine_nav.guard.metrics import ScrewGeometry


class SegmentSet:
    """Planned segments of all screws, precomputed for fast distance queries (mm)."""

    def __init__(self, screws: Sequence[ScrewGeometry]) -> None:
        self.screws = tuple(screws)
        self.ids = [g.screw_id for g in self.screws]
        self._E = np.array([g.entry for g in self.screws], dtype=float).reshape(-1, 3)
        self._D = np.array([g.direction for g in self.screws], dtype=float).reshape(-1, 3)
        self._L = np.array([g.depth_mm for g in self.screws], dtype=float)
        self._plain = [(g.entry, g.direction, g.depth_mm) for g in self.screws]

    def __len__(self) -> int:
        return len(self.screws)

    def distances_numpy(self, tip: Sequence[float]) -> np.ndarray:
        v = np.asarray(tip, dtype=float) - self._E
        t = np.clip(np.einsum("ij,ij->i", v, self._D), 0.0, self._L)
        r = v - t[:, None] * self._D
        return np.sqrt(np.einsum("ij,ij->i", r, r))

    def distances_plain(self, tip: Sequence[float]) -> list[float]:
        return [math.sqrt(d2) for d2 in self.squared_distances_plain(tip)]

    def squared_distances_plain(self, tip: Sequence[float]) -> list[float]:
        px, py, pz = tip
        out = []
        for (ex, ey, ez), (dx, dy, dz), L in self._plain:
            vx, vy, vz = px - ex, py - ey, pz - ez
            t = vx * dx + vy * dy + vz * dz
            t = 0.0 if t < 0.0 else (L if t > L else t)
            rx, ry, rz = vx - t * dx, vy - t * dy, vz - t * dz
            out.append(rx * rx + ry * ry + rz * rz)
        return out

    def nearest(self, tip: Sequence[float], method: str = "plain") -> tuple[int, list[float]]:
        """(index of the nearest segment, distances). ``method``: ``plain`` or ``numpy``."""
        if method == "numpy":
            dist = self.distances_numpy(tip)
            return int(dist.argmin()), dist.tolist()
        d2 = self.squared_distances_plain(tip)
        best = d2.index(min(d2))
        return best, [math.sqrt(v) for v in d2]


class ScrewSelector:
    """Which screw is active. ``explicit_id`` None = automatic."""

    def __init__(self, capture_radius_mm: float, switch_margin_mm: float, method: str = "plain") -> None:
        self.capture_radius_mm = capture_radius_mm
        self.switch_margin_mm = switch_margin_mm
        self.method = method
        self.segments = SegmentSet(())
        self.explicit_id: str | None = None
        self.active_index: int | None = None
        self.last_reason = ""
        self.searches = 0
        self._p0: tuple[float, float, float] | None = None
        self._safe2 = -1.0

    def set_screws(self, screws: Sequence[ScrewGeometry]) -> None:
        """New plan: keep the active screw if it still exists (by id), else none."""
        old = self.active_id
        self._p0 = None
        self.segments = SegmentSet(screws)
        self.active_index = self.segments.ids.index(old) if old in self.segments.ids else None
        if self.explicit_id is not None and self.explicit_id in self.segments.ids:
            self.active_index = self.segments.ids.index(self.explicit_id)

    def invalidate(self) -> None:
        """Forget the search cache (after a change of capture radius or switch margin)."""
        self._p0 = None

    @property
    def active_id(self) -> str | None:
        return None if self.active_index is None else self.segments.ids[self.active_index]

    def select(self, screw_id: str | None) -> None:
        """Explicit selection (``None`` or ``""``: automatic). Raises KeyError for an unknown id."""
        self._p0 = None
        if not screw_id:
            self.explicit_id = None
            return
        if screw_id not in self.segments.ids:
            raise KeyError(f"no screw {screw_id!r} in the plan (have: {', '.join(self.segments.ids) or 'none'})")
        self.explicit_id = screw_id
        self.active_index = self.segments.ids.index(screw_id)

    def update(self, tip: Sequence[float], hold: bool = False) -> ScrewGeometry | None:
        """The active screw for this tip (automatic rules in the module docstring)."""
        if self.explicit_id is not None:
            return None if self.active_index is None else self.segments.screws[self.active_index]
        if not self.segments.screws:
            self.active_index = None
            self.last_reason = "plan has no screws"
            return None
        if hold and self.active_index is not None:
            return self.segments.screws[self.active_index]
        if self._skip_search(tip):
            return None if self.active_index is None else self.segments.screws[self.active_index]
        best, dist = self.segments.nearest(tip, self.method)
        self.searches += 1
        cur = self.active_index
        cap, sw = self.capture_radius_mm, self.switch_margin_mm
        if cur is not None and dist[cur] <= cap + sw:
            if best != cur and dist[best] <= cap and dist[best] < dist[cur] - sw:
                self.active_index = best
        elif dist[best] <= cap:
            self.active_index = best
        else:
            self.active_index = None
            self.last_reason = (f"no screw within capture radius {cap:g} mm "
                                f"(nearest {self.segments.ids[best]} at {dist[best]:.1f} mm)")
        self._remember(tip, dist)
        return None if self.active_index is None else self.segments.screws[self.active_index]

    # Exact search skipping. Each segment distance changes by at most m = |p - p0| when the tip
    # moves from p0 (last full search) to p. The rules above give the same answer at p as at p0
    # while m < safe radius, where (cur = active after the search at p0, d = distances at p0):
    #   keep cur:        d_cur + m <= cap + sw                 -> m <= cap + sw - d_cur
    #   no switch to i:  d_i - m > cap  or  d_i - m >= d_cur + m - sw  -> m < max(d_i - cap, (d_i - d_cur + sw) / 2)
    #   no capture (cur None): d_i - m > cap for all i         -> m < d_i - cap
    # The full search over 20 screws costs more than the rest of an evaluation; this keeps it
    # to the samples where the answer could change (measured in `spine-nav bench guard`).
    def _remember(self, tip: Sequence[float], dist: list[float]) -> None:
        cap, sw, cur = self.capture_radius_mm, self.switch_margin_mm, self.active_index
        if cur is None:
            safe = min(d - cap for d in dist)
        else:
            dc = dist[cur]
            safe = cap + sw - dc
            for i, d in enumerate(dist):
                if i != cur:
                    safe = min(safe, max(d - cap, (d - dc + sw) / 2.0))
        self._p0 = (float(tip[0]), float(tip[1]), float(tip[2]))
        self._safe2 = safe * safe if safe > 1e-9 else -1.0

    def _skip_search(self, tip: Sequence[float]) -> bool:
        if self._p0 is None or self._safe2 <= 0.0:
            return False
        x, y, z = tip[0] - self._p0[0], tip[1] - self._p0[1], tip[2] - self._p0[2]
        return x * x + y * y + z * z < self._safe2 * (1.0 - 1e-9)
