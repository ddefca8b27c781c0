"""`spine-nav arm urdf` / `spine-nav arm calibrate` (in-process CLI)."""
from __future__ import annotations

import json

from spine_nav.cli.main import main


def test_arm_urdf_writes_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "spine_arm.urdf"
    assert main(["arm", "urdf", str(out)]) == 0
    assert "<robot" in out.read_text() and "GuideTube" in out.read_text()
    assert main(["arm", "urdf", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["arm", "urdf", str(out), "--force"]) == 0


def test_arm_calibrate_json(capsys):
    assert main(["arm", "calibrate", "--poses", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tracker_robotbase_xyz_mm"]) == 3 and len(out["tracker_robotbase_quat_xyzw"]) == 4
    assert out["residual_rms_mm"] < 0.3 and out["error_vs_sim_truth_mm"] < 0.5
    assert main(["arm", "calibrate", "--poses", "2"]) == 2


def test_arm_check_bad_input_is_one_line(tmp_path, capsys):
    """`arm check`: a missing link, a non-rigid tool, a missing case: exit 2 with one line naming it."""
    urdf = "package://example-robot-data/robots/ur_description/urdf/ur5_robot.urdf"
    assert main(["arm", "check", "--urdf", urdf, "--base-link", "base_link", "--flange-link", "flange_tip",
                 "--case", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "flange_link 'flange_tip'" in err and "ur5_robot.urdf" in err
    assert main(["arm", "check", "--urdf", urdf, "--base-link", "base_link", "--flange-link", "tool0",
                 "--tool-quat-xyzw", "0", "0", "0", "3", "--case", str(tmp_path)]) == 2
    assert "not a unit quaternion" in capsys.readouterr().err
    assert main(["arm", "check", "--urdf", urdf, "--base-link", "base_link", "--flange-link", "tool0",
                 "--case", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spine-nav: error: --case") and "plan.json" in err
    assert main(["arm", "check", "--base-link", "base_link", "--case", str(tmp_path)]) == 2
