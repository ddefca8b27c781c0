"""Plan model and JSON I/O: invalid plans first, then round trips and safe saving."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.geometry import make_transform
from spine_nav.plan import Plan, PlanError, Screw, load_plan, plan_to_dict, save_plan


def screw_dict(**over):
    d = {"id": "L4_left", "level": "L4", "side": "left", "entry_mm": [10.0, 20.0, 30.0],
         "target_mm": [15.0, 60.0, 30.0], "diameter_mm": 6.5, "length_mm": 45.0}
    d.update(over)
    return d


@pytest.mark.parametrize("over, match", [
    ({"target_mm": [10.0, 20.0, 30.0]}, "target_mm.*entry"),
    ({"entry_mm": [1.0, float("nan"), 2.0]}, "entry_mm.*finite"),
    ({"entry_mm": [1.0, 2.0]}, "entry_mm.*3 numbers"),
    ({"diameter_mm": 25.0}, "diameter_mm.*plausible"),
    ({"length_mm": 5.0}, "length_mm.*plausible"),
    ({"length_mm": "45"}, "length_mm.*number"),
    ({"level": "L9"}, "level.*unknown"),
    ({"side": "middle"}, "side"),
    ({"id": ""}, "id"),
])
def test_invalid_screw_rejected_with_field(over, match):
    with pytest.raises(PlanError, match=match):
        Screw.from_dict(screw_dict(**over))


def test_missing_field_named():
    d = screw_dict()
    del d["target_mm"]
    with pytest.raises(PlanError, match="missing field.*target_mm"):
        Screw.from_dict(d)


def test_duplicate_ids_rejected():
    s = Screw.from_dict(screw_dict())
    with pytest.raises(PlanError, match="duplicate"):
        Plan(screws=(s, s))


def test_corrupt_file_named(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text("{ not json")
    with pytest.raises(PlanError, match="plan.json.*not valid JSON"):
        load_plan(p)
    p.write_text(json.dumps({"screws": [screw_dict(diameter_mm=-1)]}))
    with pytest.raises(PlanError, match=r"plan.json: screws\[0\].*diameter_mm"):
        load_plan(p)
    with pytest.raises(PlanError, match="not found"):
        load_plan(tmp_path / "missing.json")


def test_schema_version_checked(tmp_path):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"schema_version": 99, "screws": []}))
    with pytest.raises(PlanError, match="schema_version 99"):
        load_plan(p)


def test_round_trip_and_never_overwrite(tmp_path):
    plan = Plan(screws=(Screw.from_dict(screw_dict()), Screw.from_dict(screw_dict(id="L4_right", side="right"))),
                case_id="t")
    p = save_plan(plan, tmp_path / "plan.json")
    assert load_plan(p) == plan
    before = p.read_text()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_plan(plan.with_screws(plan.screws[:1]), p)
    assert p.read_text() == before
    save_plan(plan.with_screws(plan.screws[:1]), p, overwrite=True)
    assert len(load_plan(p)) == 1


def test_ras_plan_converted_to_lps(tmp_path):
    d = {"coordinate_system": "RAS", "screws": [screw_dict()]}
    p = tmp_path / "ras.json"
    p.write_text(json.dumps(d))
    plan = load_plan(p)
    assert plan.coordinate_system == "LPS"
    assert np.allclose(plan.screws[0].entry_mm, [-10.0, -20.0, 30.0])
    assert plan_to_dict(plan)["coordinate_system"] == "LPS"


def test_trajectory_geometry_and_transform():
    s = Screw.from_dict(screw_dict(entry_mm=[0, 0, 0], target_mm=[0, 0, 40]))
    assert s.depth_mm == pytest.approx(40.0)
    assert np.allclose(s.direction, [0, 0, 1])
    moved = s.transformed(make_transform(translation_mm=[1, 2, 3]))
    assert np.allclose(moved.entry_mm, [1, 2, 3]) and np.allclose(moved.target_mm, [1, 2, 43])
    assert s.entry_mm.flags.writeable is False


def test_transformed_per_level_leaves_out_unregistered_levels():
    a = Screw.from_dict(screw_dict())
    b = Screw.from_dict(screw_dict(id="L5_left", level="L5"))
    plan = Plan(screws=(a, b))
    out = plan.transformed_per_level({"L4": make_transform(translation_mm=[0, 0, 1])}, frame="Reference")
    assert out.ids == ["L4_left"] and out.frame == "Reference"
