"""Plan pictures and CLI: PNGs per screw (decodable, with the screw drawn), phantom CLI, plan convert."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.cli.main import main
from spine_nav.imaging import load_volume
from spine_nav.plan import load_plan
from spine_nav.plan.render import oblique_slice


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "case"
    assert main(["phantom", "--out", str(out), "--levels", "L4", "--seed", "1", "--voxel-mm", "1.2",
                 "--cbct-voxel-mm", "2.0"]) == 0
    return out


def test_phantom_cli_refuses_existing_and_bad_levels(case_dir, capsys):
    assert main(["phantom", "--out", str(case_dir), "--levels", "L4", "--voxel-mm", "1.2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["phantom", "--out", str(case_dir / "x"), "--levels", "L5-L1"]) == 2
    assert "superior level first" in capsys.readouterr().err


def test_render_pngs(case_dir, tmp_path, capsys):
    import matplotlib.image as mpimg

    out = tmp_path / "png"
    assert main(["plan", "render", "--plan", str(case_dir / "plan.json"), "--ct", str(case_dir / "preop_ct.nii.gz"),
                 "--out", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["L4_left.png", "L4_right.png"]
    img = mpimg.imread(files[0])
    assert img.shape[0] > 300 and img.shape[1] > 600
    red = (img[..., 0] > 0.6) & (img[..., 1] < 0.35) & (img[..., 2] < 0.35)  # the screw outline
    assert red.sum() > 200
    assert main(["plan", "render", "--plan", str(case_dir / "plan.json"), "--ct", str(case_dir / "preop_ct.nii.gz"),
                 "--out", str(out)]) == 2


def test_oblique_slice_through_screw_is_bone(case_dir):
    ct = load_volume(case_dir / "preop_ct.nii.gz")
    s = load_plan(case_dir / "plan.json").screws[0]
    n = np.cross(s.direction, [0, 0, 1.0])
    n /= np.linalg.norm(n)
    img = oblique_slice(ct, 0.5 * (s.entry_mm + s.target_mm), s.direction, n, 10.0, 1.0)
    assert np.median(img) > 150  # along the planned path: bone (cancellous ~250 HU)


def test_convert_to_slicer_and_back(case_dir, tmp_path):
    mrk = tmp_path / "plan.mrk.json"
    assert main(["plan", "convert", "--in", str(case_dir / "plan.json"), "--out", str(mrk),
                 "--coordinate-system", "RAS"]) == 0
    assert json.loads(mrk.read_text())["markups"][0]["coordinateSystem"] == "RAS"
    back = tmp_path / "back.json"
    assert main(["plan", "convert", "--in", str(mrk), "--out", str(back)]) == 0
    assert list(load_plan(back).screws) == list(load_plan(case_dir / "plan.json").screws)
