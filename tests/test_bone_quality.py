"""Bone quality along planned screws: osteoporotic phantom flags every screw, normal none; CLI report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.cli.main import main
from spine_nav.imaging import load_volume
from spine_nav.phantom.case import BONE_HU, generate_case
from spine_nav.plan import load_plan
from spine_nav.plan.bone_quality import BoneQualityConfig, assess_plan, pedicle_width_mm


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    base = tmp_path_factory.mktemp("bq")
    # L1-L2: the narrowest pedicles (hardest case for "no false flags"); L4-L5 osteoporotic
    normal = generate_case(base / "normal", seed=2, levels=("L1", "L2"), voxel_mm=1.0, cbct_voxel_mm=2.0)
    porotic = generate_case(base / "porotic", seed=2, levels=("L4", "L5"), bone="osteoporotic", voxel_mm=1.0,
                            cbct_voxel_mm=2.0)
    return normal, porotic


def test_normal_none_flagged_osteoporotic_all_flagged(cases):
    normal, porotic = cases
    rep_n = assess_plan(load_volume(normal.preop_ct), load_plan(normal.plan))
    rep_p = assess_plan(load_volume(porotic.preop_ct), load_plan(porotic.plan))
    assert [r["flags"] for r in rep_n["screws"]] == [[]] * 4
    assert all("low_bone_density" in r["flags"] for r in rep_p["screws"]) and len(rep_p["screws"]) == 4
    assert all("cement augmentation" in r["messages"][0] for r in rep_p["screws"])
    # three-region body HU recovers the phantom's cancellous HU
    for rep, bone in ((rep_n, "normal"), (rep_p, "osteoporotic")):
        for lv in rep["levels"].values():
            assert lv["endplates_found"]
            assert lv["body_hu"] == pytest.approx(BONE_HU[bone]["cancellous_hu"], abs=15)
            assert set(lv["region_hu"]) == {"superior", "mid", "inferior"}


def test_pedicle_width_matches_phantom(cases):
    normal, _ = cases
    ct = load_volume(normal.preop_ct)
    for s in load_plan(normal.plan).screws:
        true_w = normal.spine.shapes[s.level].pedicle_width_mm[0 if s.side == "left" else 1]
        assert pedicle_width_mm(ct, s) == pytest.approx(true_w, abs=1.0), s.id


def test_threshold_configurable_within_published_range(cases):
    normal, _ = cases
    ct, plan = load_volume(normal.preop_ct), load_plan(normal.plan)
    # the normal phantom (~250 HU) stays unflagged even at the top of the range ...
    rep = assess_plan(ct, plan, BoneQualityConfig(low_hu_threshold=202))
    assert all(r["flags"] == [] for r in rep["screws"])
    # ... and an over-large diameter is flagged as a narrow pedicle
    fat = plan.with_screws([s.__class__(s.id, s.level, s.side, s.entry_mm, s.target_mm, 9.0, s.length_mm)
                            for s in plan.screws])
    assert all("narrow_pedicle" in r["flags"] for r in assess_plan(ct, fat)["screws"] if r["level"] == "L1")
    for bad in (50.0, 250.0):
        with pytest.raises(ValueError, match="low_hu_threshold.*73-202"):
            BoneQualityConfig(low_hu_threshold=bad)


def test_cli_report_json(cases, tmp_path, capsys):
    _, porotic = cases
    out = tmp_path / "report.json"
    rc = main(["plan", "report", "--plan", str(porotic.plan), "--ct", str(porotic.preop_ct), "--json",
               "--out", str(out), "--png-dir", str(tmp_path / "png")])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in printed["screws"]] == ["L4_left", "L4_right", "L5_left", "L5_right"]
    assert all(r["flags"] == ["low_bone_density"] for r in printed["screws"])
    assert json.loads(out.read_text())["screws"] == printed["screws"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [f"{r['id']}.png" for r in printed["screws"]]
    # never overwrites an explicit --out without --force; bad CT named
    assert main(["plan", "report", "--plan", str(porotic.plan), "--ct", str(porotic.preop_ct), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["plan", "report", "--plan", str(porotic.plan), "--ct", str(tmp_path / "nope.nii.gz")]) == 2
    assert "nope.nii.gz: volume file not found" in capsys.readouterr().err
    assert main(["plan", "report", "--plan", str(porotic.plan), "--ct", str(porotic.preop_ct),
                 "--threshold-hu", "300"]) == 2
    assert np.isfinite(printed["screws"][0]["mean_hu"])
