"""Rod seats: where the rod's centreline crosses each screw's axis (the tulip head's centre).

Geometry (plan frame, mm)::

      seat = entry - seat_offset_mm * direction        direction = unit(target - entry)

i.e. on the screw axis, ``seat_offset_mm`` outside the bone entry point. The default
:data:`SEAT_OFFSET_MM` = 10 mm is an assumption for a typical polyaxial pedicle screw (head
height about 12-14 mm above a 2-4 mm exposed neck, rod centre about halfway up the saddle);
set it per screw system. The polyaxial head's angulation is ignored for the seat position
(it moves the seat by offset * (1 - cos a), 0.9 mm at 25 deg, along the rod).

Seats are grouped per side and ordered cranial to caudal by vertebral level
(:data:`spine_nav.plan.KNOWN_LEVELS` order); :func:`check_seats` rejects sides whose seats do
not progress monotonically along the rod or lie closer than the bend spacing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from spine_nav.plan import KNOWN_LEVELS, Screw
from spine_nav.rod import RodError

#: Distance (mm) from the entry point out along the screw axis to the rod centre (assumption, see module doc).
SEAT_OFFSET_MM = 10.0


@dataclass(frozen=True)
class Seat:
    """One rod seat: the screw's id/level/side, the seat point and the screw's unit axis (entry -> tip), mm."""

    screw_id: str
    level: str
    side: str
    point_mm: np.ndarray
    axis: np.ndarray

    def to_dict(self) -> dict:
        return {"screw_id": self.screw_id, "level": self.level, "point_mm": [round(float(v), 4) for v in self.point_mm]}


def seat_of(screw: Screw, seat_offset_mm: float = SEAT_OFFSET_MM) -> Seat:
    """The seat of one screw (see module doc)."""
    if not (0.0 <= seat_offset_mm <= 40.0):
        raise RodError(f"seat_offset_mm: {seat_offset_mm:g} mm is outside 0-40 mm")
    u = screw.direction
    return Seat(screw.id, screw.level, screw.side, np.asarray(screw.entry_mm, float) - seat_offset_mm * u, u)


def seats_by_side(screws: Iterable[Screw], seat_offset_mm: float = SEAT_OFFSET_MM,
                  offsets_mm: dict[str, float] | None = None) -> dict[str, list[Seat]]:
    """{side: seats cranial first} for ``left`` and ``right``; ``offsets_mm`` overrides per screw id."""
    out: dict[str, list[Seat]] = {"left": [], "right": []}
    for s in screws:
        off = (offsets_mm or {}).get(s.id, seat_offset_mm)
        out[s.side].append(seat_of(s, off))
    for side, seats in out.items():
        seats.sort(key=lambda st: KNOWN_LEVELS.index(st.level))
        for a, b in zip(seats, seats[1:]):
            if a.level == b.level:
                raise RodError(f"screws {a.screw_id} and {b.screw_id}: two {side} screws at level {a.level}")
    return out


def check_seats(seats: Sequence[Seat], min_spacing_mm: float) -> None:
    """RodError naming the screws when a side has < 2 seats, seats out of cranio-caudal order, or too close.

    Order: each seat must lie further along the first->last seat direction than the one before it
    (levels run cranial to caudal; a seat that goes back is a wrong level label or a wrong point).
    Spacing: consecutive seats closer than ``min_spacing_mm`` leave no room for a bend between them.
    """
    if len(seats) < 2:
        names = ", ".join(s.screw_id for s in seats) or "none"
        side = seats[0].side if seats else "this side"
        raise RodError(f"{side}: a rod needs at least two seats, got {len(seats)} ({names})")
    pts = np.array([s.point_mm for s in seats])
    axis = pts[-1] - pts[0]
    axis /= max(np.linalg.norm(axis), 1e-12)
    proj = pts @ axis
    for i in range(len(seats) - 1):
        a, b = seats[i], seats[i + 1]
        if proj[i + 1] <= proj[i]:
            raise RodError(f"screws {a.screw_id}, {b.screw_id}: seats out of cranio-caudal order "
                           f"({b.screw_id} is {proj[i] - proj[i + 1]:.1f} mm cranial of {a.screw_id})")
        gap = float(np.linalg.norm(pts[i + 1] - pts[i]))
        if gap < min_spacing_mm:
            raise RodError(f"screws {a.screw_id}, {b.screw_id}: seats {gap:.1f} mm apart, closer than the "
                           f"bend spacing {min_spacing_mm:g} mm allows")
