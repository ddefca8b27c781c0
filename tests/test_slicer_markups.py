"""3D Slicer markups import/export: round trips in LPS and RAS, Slicer-drawn lines, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.plan import Plan, PlanError, Screw
from spine_nav.plan.slicer import load_slicer_markups, plan_to_markups, save_slicer_markups


def _plan():
    return Plan(screws=(
        Screw("L4_left", "L4", "left", [27.4, 35.1, -163.8], [10.8, -6.3, -169.5], 7.5, 45.0),
        Screw("L4_right", "L4", "right", [-27.9, 35.1, -163.8], [-11.3, -6.3, -169.5], 7.0, 45.0),
    ))


@pytest.mark.parametrize("cs", ["LPS", "RAS"])
def test_round_trip(tmp_path, cs):
    plan = _plan()
    path = save_slicer_markups(plan, tmp_path / "plan.mrk.json", coordinate_system=cs)
    data = json.loads(path.read_text())
    m = data["markups"][0]
    assert m["type"] == "Line" and m["coordinateSystem"] == cs and m["name"] == "L4_left"
    flip = np.array([-1, -1, 1]) if cs == "RAS" else np.ones(3)
    np.testing.assert_allclose(m["controlPoints"][0]["position"], flip * plan.screws[0].entry_mm)
    np.testing.assert_allclose(m["controlPoints"][1]["position"], flip * plan.screws[0].target_mm)
    back = load_slicer_markups(path)
    assert back.coordinate_system == "LPS"
    assert list(back.screws) == list(plan.screws)
    with pytest.raises(FileExistsError, match="plan.mrk.json"):
        save_slicer_markups(plan, path)


def test_line_drawn_in_slicer_without_extras(tmp_path):
    data = {"markups": [{"type": "Line", "coordinateSystem": "RAS", "name": "L5_right",
                         "controlPoints": [{"position": [20.0, -30.0, -200.0]}, {"position": [10.0, 10.0, -202.0]}]}]}
    p = tmp_path / "drawn.mrk.json"
    p.write_text(json.dumps(data))
    plan = load_slicer_markups(p, default_diameter_mm=6.0)
    s = plan.screw("L5_right")
    assert (s.level, s.side, s.diameter_mm) == ("L5", "right", 6.0)
    np.testing.assert_allclose(s.entry_mm, [-20.0, 30.0, -200.0])  # RAS -> LPS
    assert s.length_mm == round(float(np.linalg.norm(s.target_mm - s.entry_mm)))


@pytest.mark.parametrize("markup, match", [
    ({"type": "Fiducial", "name": "L4_left", "controlPoints": []}, r"markups\[0\]\.type.*Line"),
    ({"type": "Line", "name": "L4_left", "controlPoints": [{"position": [0, 0, 0]}]}, "controlPoints.*2 points"),
    ({"type": "Line", "name": "screw 1", "controlPoints": [{"position": [0, 0, 0]}, {"position": [0, 40, 0]}]},
     "name.*level and side"),
    ({"type": "Line", "name": "L4_left", "coordinateSystem": "XYZ",
      "controlPoints": [{"position": [0, 0, 0]}, {"position": [0, 40, 0]}]}, "coordinateSystem"),
    ({"type": "Line", "name": "L4_left", "controlPoints": [{"position": [0, 0, 0]}, {"position": [0, 1, 0]}]},
     "target_mm.*entry"),
])
def test_invalid_markups_named(tmp_path, markup, match):
    p = tmp_path / "bad.mrk.json"
    p.write_text(json.dumps({"markups": [markup]}))
    with pytest.raises(PlanError, match=match) as exc:
        load_slicer_markups(p)
    assert "bad.mrk.json" in str(exc.value)


def test_not_markups(tmp_path):
    p = tmp_path / "x.mrk.json"
    p.write_text("{not json")
    with pytest.raises(PlanError, match="x.mrk.json.*not valid JSON"):
        load_slicer_markups(p)
    p.write_text("{}")
    with pytest.raises(PlanError, match="not a Slicer markups"):
        load_slicer_markups(p)
    with pytest.raises(PlanError, match="coordinateSystem"):
        plan_to_markups(_plan(), "XYZ")
