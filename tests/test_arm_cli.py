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
