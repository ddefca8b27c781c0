"""Patient-specific rods: time per rod and seat gaps on phantom cases (placed-like and planned screws).

Cases: the phantom's plan (``plan_screws(case_geometry(seed))``, exactly ``spine-nav phantom``'s
plan.json) for each seed of ``--seeds`` (default 10-29: fresh seeds; seeds 0-9 are the ones the
design constants were checked on in tests/test_rod.py). "Placed" screws are the planned ones moved
by demo-like errors (:func:`perturb`: entry 0.5 mm, axis 1 deg, depth 0.3 mm standard deviations,
5 to 20 times the demo's measured mean errors of 0.09 mm / 0.05 deg, docs/demo.md), one rod per
side, titanium 5.5 mm, defaults (bends <= 15 deg, >= 10 mm apart).

Metrics: ``rod_time_median_ms`` / ``rod_time_max_ms`` (design + forward simulation + checks, one rod;
target < 2000 ms), ``max_seat_gap_mm`` (forward simulation of the JSON instructions; target <= 0.5),
``max_seat_gap_sheet_mm`` (bent from the sheet's 0.1 mm / 0.1 deg numbers), max bend, min spacing
and warnings. Baseline ``chord_polyline``: bend points on the contour at the same stations without
the least-squares seat fit (what the fit buys).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

from spine_nav.bench import BenchResult

PERTURB_ENTRY_MM, PERTURB_AXIS_DEG, PERTURB_DEPTH_MM = 0.5, 1.0, 0.3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="10-29", help="phantom seeds, e.g. 10-29 or 0,3,5 (default 10-29)")
    p.add_argument("--material", default="ti")
    p.add_argument("--diameter-mm", type=float, default=5.5)


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    return [int(t) for t in text.split(",") if t.strip()]


def perturb(screws, rng: np.random.Generator):
    """Placed-like screws: the planned ones with random entry, axis and depth errors (see module doc)."""
    from spine_nav.plan import Screw

    out = []
    for s in screws:
        u = s.direction + np.radians(PERTURB_AXIS_DEG) * rng.normal(size=3)
        u /= np.linalg.norm(u)
        e = s.entry_mm + rng.normal(scale=PERTURB_ENTRY_MM, size=3)
        out.append(Screw(s.id, s.level, s.side, e, e + (s.depth_mm + rng.normal(scale=PERTURB_DEPTH_MM)) * u,
                         s.diameter_mm, s.length_mm))
    return out


@functools.lru_cache(maxsize=64)
def phantom_plan(seed: int) -> tuple:
    """The screws of ``spine-nav phantom --seed SEED``'s plan.json (geometry only, no volumes)."""
    from spine_nav.phantom.case import case_geometry, plan_screws

    return tuple(plan_screws(case_geometry(seed)[0]))


def phantom_cases(seeds, placed: bool = True):
    """(seed, screws) per seed: the phantom plan, perturbed when ``placed`` (rng seeded [seed, 22])."""
    for seed in seeds:
        screws = list(phantom_plan(int(seed)))
        yield seed, (perturb(screws, np.random.default_rng([seed, 22])) if placed else screws)


def _chord_gap(rod) -> float:
    from spine_nav.rod.bending import point_to_polyline
    from spine_nav.rod.design import stations

    c = rod.contour
    return float(np.max(point_to_polyline(c.seats_mm, c.point(stations(c, rod.params)))[0]))


def run(args: argparse.Namespace) -> BenchResult:
    from spine_nav.rod.design import RodParams, design_rods
    from spine_nav.rod.seats import seats_by_side
    from spine_nav.rod.springback import rod_stock

    seeds = parse_seeds(args.seeds)
    stock = rod_stock(args.material, args.diameter_mm)
    out: dict[str, dict] = {}
    for label, placed in (("placed", True), ("planned", False)):
        times, gaps, sheet, bends, spacing, chord, warns, per_seed = [], [], [], [], [], [], [], {}
        for seed, screws in phantom_cases(seeds, placed):
            seats = seats_by_side(screws)
            for side in ("left", "right"):
                t0 = time.perf_counter()
                rod = design_rods({side: seats[side]}, (side,), stock, RodParams()).rods[side]
                times.append(time.perf_counter() - t0)
                d = rod.to_dict()
                gaps.append(d["max_seat_gap_mm"])
                sheet.append(d["max_seat_gap_sheet_mm"])
                bends.append(d["max_bend_deg"])
                spacing.append(d["min_bend_spacing_mm"])
                warns += rod.warnings
                chord.append(_chord_gap(rod))
                per_seed[f"{seed}_{side}"] = {"max_seat_gap_mm": d["max_seat_gap_mm"], "bends": d["bends"],
                                              "cut_length_mm": d["cut_length_mm"]}
        out[label] = {
            "rods": len(times),
            "rod_time_median_ms": round(statistics.median(times) * 1e3, 2),
            "rod_time_max_ms": round(max(times) * 1e3, 2),
            "max_seat_gap_mm": round(max(gaps), 4),
            "max_seat_gap_sheet_mm": round(max(sheet), 4),
            "max_bend_deg": round(max(bends), 2),
            "min_bend_spacing_mm": round(min(spacing), 2),
            "warnings": len(warns),
            "chord_polyline_max_seat_gap_mm": round(max(chord), 4),
            "per_rod": per_seed,
        }
    p = out["placed"]
    metrics = {k: v for k, v in p.items() if k not in ("per_rod", "chord_polyline_max_seat_gap_mm")}
    metrics["seeds"] = args.seeds
    metrics["planned_max_seat_gap_mm"] = out["planned"]["max_seat_gap_mm"]
    return BenchResult("rod", metrics,
                       baselines={"chord_polyline": {"max_seat_gap_mm": p["chord_polyline_max_seat_gap_mm"],
                                                     "planned_max_seat_gap_mm":
                                                         out["planned"]["chord_polyline_max_seat_gap_mm"]}},
                       env={"material": args.material, "diameter_mm": args.diameter_mm},
                       details={k: {"per_rod": v["per_rod"], **{m: x for m, x in v.items() if m != "per_rod"}}
                                for k, v in out.items()})
