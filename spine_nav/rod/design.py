"""One rod: seats -> contour -> bend points -> bender steps -> forward-simulated check.

Bend points (the polyline the bender makes): stations at equal arc length ``h`` along the contour,
with ``h`` the largest of ``min_bend_spacing_mm`` (+ :data:`SPACING_MARGIN_MM`) and the smallest of
(a) the spacing at which the contour's sharpest curvature needs :data:`BEND_USE` of ``max_bend_deg``,
(b) the spacing whose chord sag ``h^2 k / 8`` is :data:`SAG_TOL_MM`, (c) :data:`MAX_SPACING_MM`, (d) the
closest two seats along the rod (so a segment holds at most one seat: two segments with two seats
each could not share their bend point); the number of segments is rounded down (fewest bends)
unless that puts two seats in one segment. The
station points are then moved, by linear least squares, so that every seat lies on the polyline
(seat rows weighted :data:`SEAT_WEIGHT`) while the polyline keeps the contour's second differences
(bend sizes, weight 1) and position (weight :data:`POSITION_WEIGHT`). Bends under
:data:`MERGE_BEND_DEG` are dropped (their points removed) where the seats stay within
:data:`MERGE_GAP_MM` of the polyline. These constants are design choices
checked on phantom seeds 0-9 (tests/test_rod.py) and reported on fresh seeds (``spine-nav bench rod``).

Checks (each a warning naming the screws, with the amount): a bend above ``max_bend_deg``, bend
points closer than ``min_bend_spacing_mm``, a bend tighter than the material's minimum radius (a
bend's radius = mean of its two segment lengths / its angle), and a seat where the rod is further
from perpendicular to the screw axis than the polyaxial head's ``max_angulation_deg``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spine_nav.rod import RodError
from spine_nav.rod.bending import Step, point_to_polyline, round_steps, simulate, steps_from_polyline
from spine_nav.rod.contour import OVERHANG_MM, Contour
from spine_nav.rod.seats import Seat, check_seats
from spine_nav.rod.springback import RodStock

MIN_BEND_SPACING_MM = 10.0  #: issue default
MAX_BEND_DEG = 15.0  #: issue default (no notching)
#: Polyaxial head angulation, half cone (deg): an assumption for a typical polyaxial screw (+-25 deg).
MAX_ANGULATION_DEG = 25.0
SPACING_MARGIN_MM = 0.5
BEND_USE = 0.8
SAG_TOL_MM = 0.25
MAX_SPACING_MM = 25.0
SEAT_WEIGHT = 100.0
POSITION_WEIGHT = 0.05
MERGE_BEND_DEG = 0.05
MERGE_GAP_MM = 0.01


@dataclass(frozen=True)
class RodParams:
    min_bend_spacing_mm: float = MIN_BEND_SPACING_MM
    max_bend_deg: float = MAX_BEND_DEG
    overhang_mm: float = OVERHANG_MM
    max_angulation_deg: float = MAX_ANGULATION_DEG


@dataclass
class Rod:
    """A designed and verified rod (plan frame, mm, deg); ``vertices`` are rebuilt from the steps."""

    side: str
    seats: list[Seat]
    stock: RodStock
    params: RodParams
    start_mm: np.ndarray
    start_dir: np.ndarray
    start_normal: np.ndarray
    steps: list[Step]
    vertices: np.ndarray
    seat_gaps_mm: np.ndarray
    seat_gaps_sheet_mm: np.ndarray
    seat_angulation_deg: np.ndarray
    bend_radii_mm: np.ndarray
    contour: Contour
    warnings: list[str] = field(default_factory=list)

    @property
    def rod_length_mm(self) -> float:
        return float(sum(s.feed_mm for s in self.steps))

    @property
    def cut_length_mm(self) -> float:
        """Stock to cut: the rod length rounded up to the whole millimetre (point bends keep the centreline length)."""
        return float(math.ceil(self.rod_length_mm - 1e-6))

    @property
    def max_seat_gap_mm(self) -> float:
        return float(np.max(self.seat_gaps_mm))

    @property
    def min_bend_radius_mm(self) -> float | None:
        return float(np.min(self.bend_radii_mm)) if len(self.bend_radii_mm) else None

    def to_dict(self) -> dict:
        r = lambda v: [round(float(x), 6) for x in v]  # noqa: E731
        return {
            "seats": [{**s.to_dict(), "gap_mm": round(float(g), 4), "angulation_deg": round(float(a), 2)}
                      for s, g, a in zip(self.seats, self.seat_gaps_mm, self.seat_angulation_deg)],
            "material": self.stock.material.key, "diameter_mm": self.stock.diameter_mm,
            "springback_deg": round(self.stock.springback_deg, 3),
            "start_mm": r(self.start_mm), "start_dir": r(self.start_dir), "start_normal": r(self.start_normal),
            "steps": [s.to_dict() for s in self.steps],
            "rod_length_mm": round(self.rod_length_mm, 3), "cut_length_mm": self.cut_length_mm,
            "max_seat_gap_mm": round(self.max_seat_gap_mm, 4),
            "max_seat_gap_sheet_mm": round(float(np.max(self.seat_gaps_sheet_mm)), 4),
            "min_bend_radius_mm": None if self.min_bend_radius_mm is None else round(self.min_bend_radius_mm, 2),
            "material_min_bend_radius_mm": round(self.stock.min_bend_radius_mm, 2),
            "max_bend_deg": round(max((s.bend_deg for s in self.steps), default=0.0), 3),
            "min_bend_spacing_mm": round(_min_spacing(self.vertices), 3),
            "bends": sum(1 for s in self.steps if s.bend_deg > 0),
            "warnings": list(self.warnings),
        }


def _min_spacing(vertices: np.ndarray) -> float:
    inner = np.linalg.norm(np.diff(vertices[1:-1], axis=0), axis=1)
    return float(inner.min()) if len(inner) else float("inf")


def station_spacing(contour: Contour, p: RodParams) -> float:
    s = np.linspace(0.0, contour.length_mm, max(int(contour.length_mm * 2), 50))
    kmax = float(np.max(contour.curvature(s)))
    lo = p.min_bend_spacing_mm + SPACING_MARGIN_MM
    h = min(MAX_SPACING_MM, float(np.min(np.diff(contour.seat_s))))  # at most one seat inside a segment
    if kmax > 1e-9:
        h = min(h, BEND_USE * math.radians(p.max_bend_deg) / kmax, math.sqrt(8.0 * SAG_TOL_MM / kmax))
    return max(lo, h)


def stations(contour: Contour, p: RodParams) -> np.ndarray:
    """Arc lengths (N+1,) of the rod ends and the bend points before the seat fit (see module doc)."""
    L = contour.length_mm
    h_target = station_spacing(contour, p)
    n = max(1, int(math.floor(L / h_target)))  # fewest bends for the spacing ...
    seat_gap = float(np.min(np.diff(contour.seat_s)))
    if L / n > seat_gap:  # ... unless a segment would then hold two seats
        n = int(math.ceil(L / seat_gap - 1e-9))
    if L / n < p.min_bend_spacing_mm + SPACING_MARGIN_MM:  # never closer than the spacing (+ margin)
        n = max(1, int(math.floor(L / (p.min_bend_spacing_mm + SPACING_MARGIN_MM))))
    return np.arange(n + 1) * (L / n)


def fit_bend_points(contour: Contour, p: RodParams) -> np.ndarray:
    """Polyline (N+1, 3) of rod ends and bend points: equal stations, seats put on it by least squares."""
    sig = stations(contour, p)
    n, h = len(sig) - 1, float(sig[1])
    C = contour.point(sig)
    rows, rhs = [], []
    for s_seat, S in zip(contour.seat_s, contour.seats_mm):
        k = min(int(s_seat // h), n - 1)
        t = s_seat / h - k
        row = np.zeros(n + 1)
        row[k], row[k + 1] = (1 - t) * SEAT_WEIGHT, t * SEAT_WEIGHT
        rows.append(row)
        rhs.append(SEAT_WEIGHT * S)
    for i in range(n + 1):
        row = np.zeros(n + 1)
        row[i] = POSITION_WEIGHT
        rows.append(row)
        rhs.append(POSITION_WEIGHT * C[i])
    for i in range(1, n):
        row = np.zeros(n + 1)
        row[i - 1:i + 2] = (1.0, -2.0, 1.0)
        rows.append(row)
        rhs.append(C[i - 1] - 2 * C[i] + C[i + 1])
    P = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return _merge_straight(P, contour.seats_mm)


def _bend_angles(P: np.ndarray) -> np.ndarray:
    d = np.diff(P, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = np.clip(np.einsum("ij,ij->i", d[:-1], d[1:]), -1.0, 1.0)
    return np.degrees(np.arccos(c))


def _merge_straight(P: np.ndarray, seats: np.ndarray) -> np.ndarray:
    """Drop bend points whose bend is under MERGE_BEND_DEG while the seats stay within MERGE_GAP_MM."""
    P = np.asarray(P)
    while len(P) > 2:
        ang = _bend_angles(P)
        for i in np.argsort(ang):
            if ang[i] >= MERGE_BEND_DEG:
                return P
            Q = np.delete(P, i + 1, axis=0)
            if point_to_polyline(seats, Q)[0].max() <= MERGE_GAP_MM:
                P = Q
                break
        else:
            return P
    return P


def _between(seats: Sequence[Seat], contour: Contour, s: float) -> str:
    """'between A and B' / 'cranial of A' / 'caudal of B' for a point at arc length s."""
    ss = contour.seat_s
    if s <= ss[0]:
        return f"at/cranial of {seats[0].screw_id}"
    if s >= ss[-1]:
        return f"at/caudal of {seats[-1].screw_id}"
    i = int(np.searchsorted(ss, s)) - 1
    return f"between {seats[i].screw_id} and {seats[i + 1].screw_id}"


def design_rod(seats: Sequence[Seat], stock: RodStock, params: RodParams = RodParams()) -> Rod:
    """Design, simulate and check one rod through ``seats`` (one side, cranial first)."""
    seats = list(seats)
    check_seats(seats, params.min_bend_spacing_mm)
    side = seats[0].side
    contour = Contour(np.array([s.point_mm for s in seats]), params.overhang_mm)
    P = fit_bend_points(contour, params)
    start, tdir, normal, steps = steps_from_polyline(P, stock.commanded_deg)
    # verification uses the instructions alone: what the bender makes from the commanded angles
    verts = simulate(start, tdir, normal, steps, bend_of=lambda st: stock.residual_deg(st.commanded_bend_deg))
    seat_pts = np.array([s.point_mm for s in seats])
    gaps, seg = point_to_polyline(seat_pts, verts)
    sheet = simulate(start, tdir, normal, round_steps(steps),
                     bend_of=lambda st: stock.residual_deg(st.commanded_bend_deg))
    gaps_sheet, _ = point_to_polyline(seat_pts, sheet)
    d = np.diff(verts, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    angul = np.array([math.degrees(math.asin(min(1.0, abs(float(d[k] @ s.axis))))) for k, s in zip(seg, seats)])
    seglen = np.linalg.norm(np.diff(verts, axis=0), axis=1)
    bends = np.array([st.bend_deg for st in steps[:-1]])
    radii = np.array([0.5 * (seglen[i] + seglen[i + 1]) / math.radians(b) for i, b in enumerate(bends) if b > 0])
    s_vert = np.concatenate([[0.0], np.cumsum(seglen)])
    warnings: list[str] = []
    for i, b in enumerate(bends):
        where = _between(seats, contour, s_vert[i + 1])
        if b > params.max_bend_deg + 1e-9:
            warnings.append(f"{side} bend {i + 1} {where}: {b:.1f} deg exceeds max_bend_deg "
                            f"{params.max_bend_deg:g} by {b - params.max_bend_deg:.1f} deg")
        if b > 0:
            r = 0.5 * (seglen[i] + seglen[i + 1]) / math.radians(b)
            if r < stock.min_bend_radius_mm:
                warnings.append(f"{side} bend {i + 1} {where}: radius {r:.0f} mm is tighter than the "
                                f"{stock.material.key} {stock.diameter_mm:g} mm minimum "
                                f"{stock.min_bend_radius_mm:.0f} mm "
                                f"(by {stock.min_bend_radius_mm - r:.0f} mm)")
    for i in range(1, len(seglen) - 1):
        if seglen[i] < params.min_bend_spacing_mm - 1e-6:
            warnings.append(f"{side} bends {i} and {i + 1} {_between(seats, contour, s_vert[i])}: "
                            f"{seglen[i]:.1f} mm apart, under min_bend_spacing_mm {params.min_bend_spacing_mm:g}")
    for s, a in zip(seats, angul):
        if a > params.max_angulation_deg:
            warnings.append(f"{s.screw_id}: the rod needs {a:.1f} deg of head angulation, the polyaxial head "
                            f"takes {params.max_angulation_deg:g} deg ({a - params.max_angulation_deg:.1f} deg more)")
    return Rod(side, seats, stock, params, start, tdir, normal, steps, verts, gaps, gaps_sheet, angul, radii,
               contour, warnings)


def check_params(p: RodParams) -> None:
    """RodError naming the field for implausible bender parameters."""
    if not (1.0 <= p.min_bend_spacing_mm <= 100.0):
        raise RodError(f"min_bend_spacing_mm: {p.min_bend_spacing_mm:g} is outside 1-100 mm")
    if not (0.5 <= p.max_bend_deg <= 90.0):
        raise RodError(f"max_bend_deg: {p.max_bend_deg:g} is outside 0.5-90 deg")
    if not (0.0 <= p.overhang_mm <= 100.0):
        raise RodError(f"overhang_mm: {p.overhang_mm:g} is outside 0-100 mm")


@dataclass
class RodSet:
    """The rods of one case: {side: Rod} plus sides left without a rod and why."""

    rods: dict[str, Rod]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return list(self.skipped.values()) + [w for r in self.rods.values() for w in r.warnings]


def design_rods(seats_by_side: dict[str, list[Seat]], sides: Sequence[str], stock: RodStock,
                params: RodParams = RodParams()) -> RodSet:
    """Rods for ``sides``. With both sides asked for, a side with < 2 seats is skipped with a warning
    (a unilateral construct); asked for alone, it is a RodError. Every other problem is a RodError."""
    check_params(params)
    rods: dict[str, Rod] = {}
    skipped: dict[str, str] = {}
    for side in sides:
        seats = seats_by_side.get(side, [])
        if len(seats) < 2:
            names = ", ".join(s.screw_id for s in seats) or "no screws"
            if len(sides) == 1:
                raise RodError(f"{side}: a rod needs at least two seats, got {len(seats)} ({names})")
            skipped[side] = f"{side}: no rod, a rod needs at least two seats ({names})"
            continue
        rods[side] = design_rod(seats, stock, params)
    if not rods:
        raise RodError("; ".join(skipped.values()) or "no side to build a rod for")
    return RodSet(rods, skipped)
