"""Patient-specific rods: forward simulation vs analytic cases, springback, seat gaps on phantom cases,
outputs, the demo report hook and bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spine_nav.bench.rod import perturb, phantom_cases
from spine_nav.cli.main import main
from spine_nav.plan import Plan, Screw
from spine_nav.plan.io import save_plan
from spine_nav.rod import RodError
from spine_nav.rod.bending import Step, point_to_polyline, simulate, steps_from_polyline
from spine_nav.rod.design import design_rod, design_rods
from spine_nav.rod.export import tube_mesh
from spine_nav.rod.seats import check_seats, seat_of, seats_by_side
from spine_nav.rod.springback import MATERIALS, rod_stock

TI = rod_stock("ti", 5.5)
X, Y, Z = np.eye(3)


def step(feed, rotate=0.0, bend=0.0):
    return Step(feed, rotate, bend, bend)


# ---- forward simulation against analytic cases ---------------------------------------------------
def test_straight_rod_is_a_line_of_the_summed_feeds():
    start = np.array([1.0, 2.0, 3.0])
    pts = simulate(start, Z, X, [step(10.0, 30.0), step(20.0, -45.0), step(15.5)])
    assert np.allclose(pts[-1], start + 45.5 * Z)
    assert np.allclose(np.cross(pts - start, Z), 0.0)


def test_single_planar_bend_turns_the_tangent_toward_the_normal():
    a, b, th = 30.0, 40.0, math.radians(12.0)
    pts = simulate(np.zeros(3), Z, X, [step(a, 0.0, 12.0), step(b)])
    assert np.allclose(pts[1], [0, 0, a])
    assert np.allclose(pts[2], [b * math.sin(th), 0, a + b * math.cos(th)])


def test_rotation_is_right_handed_about_the_tangent():
    # rotating the normal X by +90 deg about Z gives Y (Z x X = Y): the bend then goes toward +Y
    pts = simulate(np.zeros(3), Z, X, [step(10.0, 90.0, 30.0), step(10.0)])
    assert np.allclose(pts[2], [0, 10 * math.sin(math.radians(30)), 10 + 10 * math.cos(math.radians(30))])


def test_helix_like_rod_round_trips_with_constant_bend_and_rotation():
    r, c, dlt = 60.0, 8.0, math.radians(10.0)   # helix x=r cos s, y=r sin s, z=c s sampled every dlt
    s = np.arange(12) * dlt
    V = np.stack([r * np.cos(s), r * np.sin(s), c * s], axis=1)
    start, t, n, steps = steps_from_polyline(V)
    bends = [st.bend_deg for st in steps[:-1]]
    rotates = [st.rotate_deg for st in steps[1:-1]]
    q = 4 * r * r * math.sin(dlt / 2) ** 2
    expected = math.degrees(math.acos((q * math.cos(dlt) + (c * dlt) ** 2) / (q + (c * dlt) ** 2)))
    assert np.allclose(bends, expected, atol=1e-9)
    assert np.ptp(rotates) < 1e-9 and abs(rotates[0]) > 0.1  # constant, non-zero torsion: a 3D rod
    assert np.allclose([st.feed_mm for st in steps], np.linalg.norm(V[1] - V[0]))
    assert np.allclose(simulate(start, t, n, steps), V, atol=1e-9)


def test_steps_from_polyline_round_trip_on_a_random_3d_polyline():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(8, 3)) * 0.15 + Z
    V = np.concatenate([[np.zeros(3)], np.cumsum(15.0 * d / np.linalg.norm(d, axis=1, keepdims=True), axis=0)])
    start, t, n, steps = steps_from_polyline(V)
    assert all(st.bend_deg >= 0 and -180 < st.rotate_deg <= 180 for st in steps)
    assert steps[-1].rotate_deg == 0 and steps[-1].bend_deg == 0
    assert np.allclose(simulate(start, t, n, steps), V, atol=1e-9)


# ---- springback -----------------------------------------------------------------------------------
def test_springback_model_values_and_inverse():
    assert TI.springback_deg == pytest.approx(math.degrees(32 * 795 * 10 / (3 * math.pi * 114e3 * 5.5)))
    assert TI.springback_deg == pytest.approx(2.47, abs=0.01)
    cocr = rod_stock("cocr", 5.5)
    assert TI.springback_deg > 1.8 * cocr.springback_deg  # titanium springs back about twice as much
    assert rod_stock("ti", 6.0).springback_deg < TI.springback_deg
    for b in (0.0, 0.3, 5.0, 15.0):
        assert TI.residual_deg(TI.commanded_deg(b)) == pytest.approx(b)
    assert TI.residual_deg(1.0) == 0.0  # under the springback the rod stays straight
    assert rod_stock("ti", 5.5, springback_deg=3.0).commanded_deg(5.0) == 8.0  # a calibrated value wins


def test_springback_correction_is_needed_and_sufficient_on_a_phantom_rod():
    _, screws = next(phantom_cases([0], placed=False))
    rod = design_rod(seats_by_side(screws)["left"], TI)
    seats = np.array([s.point_mm for s in rod.seats])
    corrected = simulate(rod.start_mm, rod.start_dir, rod.start_normal, rod.steps,
                         bend_of=lambda st: TI.residual_deg(st.commanded_bend_deg))
    uncorrected = simulate(rod.start_mm, rod.start_dir, rod.start_normal, rod.steps,
                           bend_of=lambda st: TI.residual_deg(st.bend_deg))
    assert point_to_polyline(seats, corrected)[0].max() < 0.01
    assert point_to_polyline(seats, uncorrected)[0].max() > 2.0


# ---- seats and phantom cases ----------------------------------------------------------------------
def _screw(id_, level, side, entry, d=(0.0, -1.0, 0.0)):
    e = np.asarray(entry, float)
    return Screw(id_, level, side, e, e + 45.0 * np.asarray(d, float), 6.5, 45.0)


def test_seat_is_on_the_axis_outside_the_entry():
    s = _screw("L4_left", "L4", "left", [20, 30, -180])
    assert np.allclose(seat_of(s, 12.0).point_mm, [20, 42, -180])


@pytest.mark.parametrize("placed", [False, True], ids=["planned", "placed-like"])
def test_seat_gaps_on_phantom_seeds_0_to_9(placed):
    worst = 0.0
    for seed, screws in phantom_cases(range(10), placed=placed):
        rods = design_rods(seats_by_side(screws), ("left", "right"), TI)
        for side, rod in rods.rods.items():
            d = rod.to_dict()
            assert [s.screw_id for s in rod.seats] == [f"L{i}_{side}" for i in range(1, 6)]
            assert d["max_bend_deg"] <= 15.0 and d["min_bend_spacing_mm"] >= 10.0, (seed, side)
            assert d["max_seat_gap_sheet_mm"] <= 0.5, (seed, side)
            assert not rod.warnings, (seed, side, rod.warnings)
            assert d["rod_length_mm"] == pytest.approx(sum(st["feed_mm"] for st in d["steps"]), abs=1e-3)
            worst = max(worst, d["max_seat_gap_mm"])
    assert worst <= 0.5


def test_rods_json_alone_rebuilds_the_rod(tmp_path):
    _, screws = next(phantom_cases([4]))
    plan = tmp_path / "plan.json"
    save_plan(Plan(tuple(screws)), plan)
    assert main(["rod", "--plan", str(plan), "--out", str(tmp_path / "out"), "--material", "cocr"]) == 0
    doc = json.loads((tmp_path / "out" / "rods.json").read_text())
    stock = rod_stock(doc["material"], doc["diameter_mm"])
    for side, r in doc["sides"].items():
        steps = [Step(**st) for st in r["steps"]]
        pts = simulate(r["start_mm"], r["start_dir"], r["start_normal"], steps,
                       bend_of=lambda st: stock.residual_deg(st.commanded_bend_deg))
        gaps = point_to_polyline(np.array([s["point_mm"] for s in r["seats"]]), pts)[0]
        assert gaps.max() < 0.01 and r["max_seat_gap_mm"] < 0.01
        assert sum(st.feed_mm for st in steps) == pytest.approx(r["rod_length_mm"], abs=1e-3)
    for name in ("rods.md", "rods.html", "rods.png", "rod_left.stl", "rod_right.stl"):
        assert (tmp_path / "out" / name).stat().st_size > 100
    assert "| step | feed (mm)" in (tmp_path / "out" / "rods.md").read_text()
    # an earlier result is not overwritten without --force
    assert main(["rod", "--plan", str(plan), "--out", str(tmp_path / "out")]) == 2
    assert main(["rod", "--plan", str(plan), "--out", str(tmp_path / "out"), "--force", "--side", "left"]) == 0


def test_stl_tube_has_the_rod_radius():
    V = np.array([[0, 0, 0], [0, 0, 20], [0, 3, 40.0], [0, 6, 60.0], [4, 6, 80]])  # incl. a straight joint
    tri = tube_mesh(V, 2.75, sides=16)
    assert tri.shape == (4 * 16 * 2 + 2 * 16, 3, 3)
    dist = point_to_polyline(tri.reshape(-1, 3), V)[0]
    ring = dist[dist > 1e-9]
    assert ring.min() > 2.75 * 0.99 and ring.max() < 2.75 * 1.01
    # closed surface: every edge is shared by exactly two triangles
    from collections import Counter

    key = lambda p: tuple(np.round(p, 6))  # noqa: E731
    edges = Counter(frozenset((key(t[i]), key(t[(i + 1) % 3]))) for t in tri for i in range(3))
    assert set(edges.values()) == {2}


def test_rod_core_does_not_import_ros():
    import ast
    from pathlib import Path

    import spine_nav.rod

    for path in Path(spine_nav.rod.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m.split(".")[0] in {"rclpy", "spine_nav_interfaces"} or m.startswith("spine_nav.nodes")
                           for m in mods), path


# ---- the demo report hook ---------------------------------------------------------------------------
def test_demo_report_includes_the_rods_of_the_placed_screws(tmp_path, capsys):
    from types import SimpleNamespace

    from spine_nav.demo.report import CaseReport, write_report
    from spine_nav.demo.rods import case_rods

    _, planned = next(phantom_cases([1], placed=False))
    plan = Plan(tuple(planned))
    rng = np.random.default_rng(5)
    placed, results = {}, []
    for s in planned:
        if s.id == "L5_right":   # not placed: the right rod has 4 seats
            results.append(SimpleNamespace(id=s.id, status="stopped"))
            continue
        tip = s.target_mm + rng.normal(scale=0.2, size=3)
        placed[s.id] = (tip, s.direction)
        results.append(SimpleNamespace(id=s.id, status="placed"))
    rods = case_rods(plan, placed, results, tmp_path)
    assert len(rods["placed_screws"]) == 9 and set(rods["sides"]) == {"left", "right"}
    assert [s["screw_id"] for s in rods["sides"]["right"]["seats"]] == [f"L{i}_right" for i in range(1, 5)]
    assert max(r["max_seat_gap_mm"] for r in rods["sides"].values()) <= 0.5
    assert (tmp_path / "rods" / "rods.png").exists()
    write_report(CaseReport(screws=[], latency={}, duration_s=1.0, rods=rods), tmp_path)
    assert "## Rods (placed screws)" in (tmp_path / "report.md").read_text()
    # spine-nav rod reads the report's placed screws
    assert main(["rod", "--report", str(tmp_path / "report.json"), "--out", str(tmp_path / "again"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sides"]["left"]["steps"] == rods["sides"]["left"]["steps"]


# ---- bad input --------------------------------------------------------------------------------------
def _line(n=3, dz=-35.0, side="left"):
    return [_screw(f"L{i + 1}_{side}", f"L{i + 1}", side, [20, 30, -80 + dz * i]) for i in range(n)]


def test_fewer_than_two_seats_names_the_screws():
    by = seats_by_side(_line(1))
    with pytest.raises(RodError, match=r"at least two seats.*L1_left"):
        design_rods(by, ("left",), TI)
    both = seats_by_side(_line(1) + _line(3, side="right"))
    rods = design_rods(both, ("left", "right"), TI)  # both sides asked for: skipped with a warning
    assert set(rods.rods) == {"right"} and "L1_left" in rods.skipped["left"]
    with pytest.raises(RodError, match=r"^left: a rod needs at least two seats, got 0 \(no screws\)"):
        design_rods(seats_by_side(_line(3, side="right")), ("left",), TI)


def test_seats_out_of_order_or_too_close_name_the_screws():
    screws = _line(3)
    swapped = [screws[0], Screw("L2_left", "L2", "left", screws[2].entry_mm, screws[2].target_mm, 6.5, 45),
               Screw("L3_left", "L3", "left", screws[1].entry_mm, screws[1].target_mm, 6.5, 45)]
    with pytest.raises(RodError, match=r"L2_left, L3_left: seats out of cranio-caudal order"):
        check_seats(seats_by_side(swapped)["left"], 10.0)
    with pytest.raises(RodError, match=r"L1_left, L2_left: seats 6.0 mm apart"):
        design_rods(seats_by_side(_line(3, dz=-6.0)), ("left",), TI)


def test_a_curve_beyond_the_material_is_a_warning_naming_the_screws():
    # seats on a 40 mm radius arc: tighter than titanium's 55 mm minimum and needs > 15 deg bends
    ang = np.radians([0, 40, 80])
    screws = [_screw(f"L{i + 1}_left", f"L{i + 1}", "left", [0, 40 * math.sin(a), -40 * math.cos(a)])
              for i, a in enumerate(ang)]
    rod = design_rods(seats_by_side(screws), ("left",), TI).rods["left"]
    text = " ".join(rod.warnings)
    assert "tighter than the ti 5.5 mm minimum 55 mm" in text and "L1_left" in text
    assert "exceeds max_bend_deg" in text or "head angulation" in text


def test_unknown_material_diameter_and_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(RodError, match="--material 'tin'"):
        rod_stock("tin", 5.5)
    with pytest.raises(RodError, match="--diameter-mm 4.5"):
        rod_stock("ti", 4.5)
    assert set(MATERIALS) == {"ti", "cocr", "ss"}
    plan = tmp_path / "plan.json"
    save_plan(Plan(tuple(_line(3))), plan)
    assert main(["rod", "--plan", str(plan), "--out", str(tmp_path / "o"), "--material", "tin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tin" in err[0]
    assert main(["rod", "--plan", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "r.json").write_text("{}")
    assert main(["rod", "--report", str(tmp_path / "r.json"), "--out", str(tmp_path / "o")]) == 2
    assert "rods.placed_screws" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_perturbed_screws_stay_close_to_the_plan():
    _, planned = next(phantom_cases([2], placed=False))
    moved = perturb(planned, np.random.default_rng(0))
    dev = [np.linalg.norm(a.entry_mm - b.entry_mm) for a, b in zip(planned, moved)]
    assert 0.0 < max(dev) < 3.0


def test_demo_report_with_one_screw_per_side_records_why_there_is_no_rod(tmp_path):
    from types import SimpleNamespace

    from spine_nav.demo.rods import case_rods, rods_section

    _, planned = next(phantom_cases([1], placed=False))
    plan = Plan(tuple(planned))
    l4 = [s for s in planned if s.level == "L4"]
    rods = case_rods(plan, {s.id: (s.target_mm, s.direction) for s in l4},
                     [SimpleNamespace(id=s.id, status="placed") for s in l4], tmp_path)
    assert "at least two seats" in rods["error"] and "L4_left" in rods["error"]
    assert len(rods["placed_screws"]) == 2 and not (tmp_path / "rods").exists()
    assert any("No rod" in line for line in rods_section(rods))


def test_closely_spaced_nearly_straight_seats_keep_every_seat_on_the_rod():
    # 7 seats 16 mm apart with a 2 mm wiggle: the straight-rod spacing (25 mm) would put two seats in one
    # segment, and two such segments cannot share a bend point
    z = -16.0 * np.arange(7)
    screws = [_screw(f"T{i + 6}_left", f"T{i + 6}", "left", [20 + 2.2 * math.sin(2 * math.pi * zz / 254), 30, zz])
              for i, zz in enumerate(z)]
    rod = design_rods(seats_by_side(screws), ("left",), TI).rods["left"]
    assert rod.max_seat_gap_mm < 0.01 and not rod.warnings
