"""The phantom family (PhantomVariation): defaults unchanged, variants deterministic and as asked."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.geometry import invert, rotation_angle_deg
from spine_nav.imaging import load_volume
from spine_nav.phantom.case import PhantomError, PhantomVariation, case_geometry, generate_case

KW = dict(levels=("L4", "L5"), voxel_mm=1.6, cbct_voxel_mm=2.0)
NAMES = ("preop_ct", "preop_labels", "cbct", "plan", "ground_truth")


def test_default_variation_gives_the_default_bytes(tmp_path):
    a = generate_case(tmp_path / "a", seed=3, **KW)
    b = generate_case(tmp_path / "b", seed=3, variation=PhantomVariation(), **KW)
    for name in NAMES:
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    assert "variation" not in json.loads(a.ground_truth.read_text())


def test_variant_is_deterministic_and_recorded(tmp_path):
    v = PhantomVariation(cbct_noise_hu=70.0, cbct_blur_sigma_vox=1.0, cobb_deg=25.0, morphometry=True,
                         breathing_mm=2.0, manipulation_mm=1.5)
    a = generate_case(tmp_path / "a", seed=8, variation=v, **KW)
    b = generate_case(tmp_path / "b", seed=8, variation=v, **KW)
    for name in NAMES:
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes(), name
    truth = json.loads(a.ground_truth.read_text())
    assert truth["variation"]["cobb_deg"] == 25.0 and truth["variation"]["morphometry"] is True
    assert truth["cbct"]["noise_hu"] == 70.0
    d = generate_case(tmp_path / "d", seed=8, **KW)
    assert a.cbct.read_bytes() != d.cbct.read_bytes()


def test_scoliosis_tilts_the_end_levels_by_the_cobb_angle():
    levels = ("L1", "L2", "L3", "L4", "L5")
    spine0, _, _ = case_geometry(4, levels)
    spine, _, _ = case_geometry(4, levels, variation=PhantomVariation(cobb_deg=30.0))
    sup = spine.T_preop_local["L1"][:3, 2]
    inf = spine.T_preop_local["L5"][:3, 2]
    # coronal-plane angle between the end vertebrae's cranial axes (x-z components)
    ang = np.degrees(abs(np.arctan2(sup[0], sup[2]) - np.arctan2(inf[0], inf[2])))
    assert 27.0 <= ang <= 33.0
    # the apex (L3) is rotated axially, the plan still fits (case_geometry -> plan_screws in generate_case)
    R = invert(spine0.T_preop_local["L3"])[:3, :3] @ spine.T_preop_local["L3"][:3, :3]
    assert rotation_angle_deg(R) > 10.0


def test_motion_ranges_are_honoured():
    v = PhantomVariation(level_angle_deg=(0.0, 1.0), level_offset_mm=(0.0, 1.0))
    spine, T_whole, T = case_geometry(6, ("L2", "L3", "L4"), variation=v)
    for lv, Tl in T.items():
        rel = invert(T_whole) @ Tl
        assert rotation_angle_deg(rel[:3, :3]) <= 1.0 + 1e-6


def test_coarse_noisy_cbct_has_the_asked_voxel_and_noise(tmp_path):
    c = generate_case(tmp_path / "c", seed=2, levels=("L3",), voxel_mm=1.6, cbct_voxel_mm=1.5,
                      variation=PhantomVariation(cbct_noise_hu=80.0))
    cb = load_volume(c.cbct, frame="Reference")
    np.testing.assert_allclose(cb.spacing_mm, 1.5, atol=1e-5)
    from spine_nav.registration.cbct_quality import measure_noise_hu

    assert 70.0 <= measure_noise_hu(cb) <= 90.0


def test_bad_variation_names_the_field():
    with pytest.raises(PhantomError, match="cbct_noise_hu"):
        PhantomVariation(cbct_noise_hu=-1.0)
    with pytest.raises(PhantomError, match="level_angle_deg"):
        PhantomVariation(level_angle_deg=(5.0, 1.0))
    with pytest.raises(PhantomError, match="pedicle_width_sd"):
        PhantomVariation(pedicle_width_sd=-3.0)
