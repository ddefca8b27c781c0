"""Three-point bender instructions and their forward simulation (plan frame, mm, deg).

Semantics (exactly those of rods.json): the rod's frame starts at ``start_mm`` with unit tangent
``start_dir`` and unit normal ``start_normal`` (perpendicular to it). Each :class:`Step`

1. advances ``feed_mm`` along the tangent (the bend point is where the feed ends),
2. turns the normal about the tangent by ``rotate_deg`` (right hand: the normal moves toward
   tangent x normal), i.e. the rod is rotated about its own axis in the bender,
3. turns the tangent toward the normal by ``bend_deg`` (the frame rotates rigidly about the
   binormal tangent x normal, so the new normal is -sin(b) tangent + cos(b) normal).

``bend_deg`` is the shape the rod keeps; ``commanded_bend_deg`` is what the bender is told (see
:mod:`spine_nav.rod.springback`). The last step only feeds (rotate 0, bend 0) and ends the rod.
Bends are point bends (the bent zone is short against the spacing between bends), so the rod is
the polyline through the bend points; its length is the sum of the feeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Step:
    feed_mm: float
    rotate_deg: float
    bend_deg: float
    commanded_bend_deg: float

    def to_dict(self, digits: int = 4) -> dict:
        return {k: round(float(getattr(self, k)), digits)
                for k in ("feed_mm", "rotate_deg", "bend_deg", "commanded_bend_deg")}


def _unit(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v, float)
    n = float(np.linalg.norm(v))
    if v.shape != (3,) or not math.isfinite(n) or n < 1e-12:
        raise ValueError(f"{name}: expected a non-zero 3-vector, got {v!r}")
    return v / n


def simulate(start_mm: Sequence[float], start_dir: Sequence[float], start_normal: Sequence[float],
             steps: Sequence[Step], bend_of: Callable[[Step], float] | None = None) -> np.ndarray:
    """Rebuild the rod from instructions alone: the polyline (N+1, 3) of its start, bend points and end.

    ``bend_of(step)`` gives the angle the rod keeps at each step (default ``step.bend_deg``; pass
    ``lambda st: stock.residual_deg(st.commanded_bend_deg)`` to simulate what the bender makes).
    """
    p = np.asarray(start_mm, float).copy()
    t = _unit(start_dir, "start_dir")
    n = _unit(start_normal, "start_normal")
    if abs(float(t @ n)) > 1e-6:
        raise ValueError("start_normal: must be perpendicular to start_dir")
    n = _unit(n - (n @ t) * t, "start_normal")
    pts = [p.copy()]
    for st in steps:
        p = p + st.feed_mm * t
        pts.append(p.copy())
        r = math.radians(st.rotate_deg)
        n = math.cos(r) * n + math.sin(r) * np.cross(t, n)
        b = math.radians(st.bend_deg if bend_of is None else bend_of(st))
        t, n = math.cos(b) * t + math.sin(b) * n, -math.sin(b) * t + math.cos(b) * n
    return np.array(pts)


def steps_from_polyline(vertices: np.ndarray, commanded: Callable[[float], float] = lambda b: b
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Step]]:
    """(start_mm, start_dir, start_normal, steps) that :func:`simulate` turns back into ``vertices``.

    Bends are >= 0 (the bender bends one way; the rod is rotated instead), rotations in (-180, 180].
    The start normal is the first bend's direction, so the first rotation is 0.
    """
    P = np.asarray(vertices, float)
    d = np.diff(P, axis=0)
    lengths = np.linalg.norm(d, axis=1)
    if len(P) < 2 or np.any(lengths < 1e-9):
        raise ValueError("vertices: need >= 2 distinct consecutive points")
    d = d / lengths[:, None]
    t = d[0]
    n = None
    for di in d[1:]:
        perp = di - (di @ t) * t
        if np.linalg.norm(perp) > 1e-9:
            n = perp / np.linalg.norm(perp)
            break
    if n is None:  # straight rod: any normal
        ref = np.eye(3)[int(np.argmin(np.abs(t)))]
        n = ref - (ref @ t) * t
        n /= np.linalg.norm(n)
    start_normal = n.copy()
    steps: list[Step] = []
    for i in range(1, len(d)):
        di = d[i]
        perp = di - (di @ t) * t
        if np.linalg.norm(perp) < 1e-12:
            steps.append(Step(float(lengths[i - 1]), 0.0, 0.0, 0.0))
            continue
        target_n = perp / np.linalg.norm(perp)
        rot = math.atan2(float(np.cross(t, n) @ target_n), float(n @ target_n))
        if rot <= -math.pi + 1e-12:
            rot += 2 * math.pi
        n = target_n
        b = math.atan2(float(di @ n), float(di @ t))
        bend = math.degrees(b)
        steps.append(Step(float(lengths[i - 1]), math.degrees(rot), bend, commanded(bend)))
        t, n = math.cos(b) * t + math.sin(b) * n, -math.sin(b) * t + math.cos(b) * n
    steps.append(Step(float(lengths[-1]), 0.0, 0.0, 0.0))
    return P[0].copy(), d[0].copy(), start_normal, steps


def point_to_polyline(points: np.ndarray, vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance (N,), index of the nearest segment (N,)) of each point to the polyline, mm."""
    pts = np.atleast_2d(np.asarray(points, float))
    a, b = vertices[:-1], vertices[1:]
    ab = b - a
    L2 = np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-18)
    rel = pts[:, None, :] - a[None]
    t = np.clip(np.einsum("nij,ij->ni", rel, ab) / L2, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    dist = np.linalg.norm(pts[:, None, :] - closest, axis=2)
    k = np.argmin(dist, axis=1)
    return dist[np.arange(len(pts)), k], k


def round_steps(steps: Sequence[Step], feed_mm: float = 0.1, angle_deg: float = 0.1) -> list[Step]:
    """Steps as printed on the sheet (feed to 0.1 mm, angles to 0.1 deg); bend_deg kept for reference."""
    q = lambda v, r: round(v / r) * r  # noqa: E731
    return [Step(q(s.feed_mm, feed_mm), q(s.rotate_deg, angle_deg), s.bend_deg, q(s.commanded_bend_deg, angle_deg))
            for s in steps]
