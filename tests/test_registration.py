"""Registration core: known transforms recovered, the quality gate refuses bad cases with a reason,
result.json and the CLI's exit codes. Real open3d / small_gicp on phantom data (no mocks)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from spine_nav.geometry import make_transform, transform_points
from spine_nav.registration import RegistrationConfig, register_volumes
from spine_nav.registration import align
from spine_nav.registration import badcases as bc
from spine_nav.registration.config import GateThresholds
from spine_nav.registration.gate import LevelQuality, local_checks, neighbour_checks
from tests.registration_fixtures import TEST_SEEDS, loaded_case, screw_tre_mm, small_cases  # noqa: F401


def _toy_cloud(seed: int, n: int = 6000) -> np.ndarray:
    """An asymmetric vertebra-like point set (body cylinder + three unequal processes), mm."""
    import open3d as o3d

    parts = [o3d.geometry.TriangleMesh.create_cylinder(20, 25, resolution=60)]
    for size, at in (((8, 30, 10), (-4, 15, -5)), ((35, 6, 8), (5, 10, -4)), ((25, 6, 8), (-30, 10, -4))):
        b = o3d.geometry.TriangleMesh.create_box(*size)
        b.translate(at)
        parts.append(b)
    mesh = parts[0]
    for p in parts[1:]:
        mesh += p
    o3d.utility.random.seed(seed)
    return np.asarray(mesh.sample_points_uniformly(n).points)


def _rot(deg_xyz):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", deg_xyz, degrees=True).as_matrix()


@pytest.mark.parametrize("method", ["small_gicp", "open3d"])
def test_gicp_recovers_known_transform(method):
    src = _toy_cloud(0)
    T = make_transform(_rot([3, -2, 4]), [2.0, -1.5, 3.0])
    tgt = transform_points(T, _toy_cloud(1))  # different samples of the same surface
    T_est = align.refine(src, tgt, np.eye(4), (6.0, 3.0, 1.0), voxel_mm=1.0, method=method)
    assert align.rms_displacement_mm(T_est, T, src) < 0.15


def test_global_init_recovers_30deg_50mm():
    src = _toy_cloud(0)
    T = make_transform(_rot([25, -10, 15]), [40.0, -20.0, 25.0])  # 30.6 deg, 51 mm
    tgt = transform_points(T, _toy_cloud(1)) + np.random.default_rng(0).normal(0, 0.1, (6000, 3))
    T0 = align.global_init(src, tgt, voxel_mm=4.0)
    T_est = align.refine(src, tgt, T0, (3.0, 1.0), voxel_mm=1.0)
    assert align.rms_displacement_mm(T_est, T, src) < 0.15


def test_point_to_plane_condition_flags_a_plane():
    rng = np.random.default_rng(0)
    plane = np.c_[rng.uniform(0, 50, (2000, 2)), np.zeros(2000)]
    assert align.point_to_plane_condition(plane, np.tile([0.0, 0.0, 1.0], (2000, 1))) > 1e6
    sphere = rng.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    # a sphere slides in rotation: degenerate too; the toy vertebra is well conditioned
    assert align.point_to_plane_condition(20 * sphere, sphere) > 1e6
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_toy_cloud(0)))
    pc.estimate_normals()
    assert align.point_to_plane_condition(np.asarray(pc.points), np.asarray(pc.normals)) < 50


def test_gate_local_checks_name_each_failure():
    g = GateThresholds()
    good = LevelQuality(fitness=0.99, inlier_rmse_mm=0.1, residual_p95_mm=0.2, fov_fraction=1.0, condition_number=3.0,
                        multistart_spread_mm=0.0, plan_in_label_fraction=1.0, preop_points=5000, cbct_points=4000)
    assert local_checks(good, g) == []
    bad = LevelQuality(fitness=0.5, inlier_rmse_mm=0.9, residual_p95_mm=2.0, fov_fraction=0.4, condition_number=1e5,
                       multistart_spread_mm=3.0, plan_in_label_fraction=0.0, preop_points=5000, cbct_points=10)
    reasons = " | ".join(local_checks(bad, g))
    for word in ("fitness", "RMSE", "field of view", "degenerate", "perturbed starts", "mislabelled", "CBCT surface",
                 "residuals"):
        assert word in reasons
    nan = LevelQuality(preop_points=5000, cbct_points=5000)  # nothing measured: must not pass
    assert local_checks(nan, g)


def test_gate_neighbour_consistency_rejects_the_outlier():
    g = GateThresholds()
    levels = ["L1", "L2", "L3"]
    cents = {lv: np.array([0.0, 0.0, -35.0 * i]) for i, lv in enumerate(levels)}
    T = {lv: np.eye(4) for lv in levels}
    T["L2"] = make_transform(_rot([0, 0, 20]), [9.0, 0, 0])
    q = {lv: LevelQuality() for lv in levels}
    neighbour_checks(levels, T, cents, q, np.eye(4), g)
    assert q["L2"].failures and not q["L1"].failures and not q["L3"].failures
    assert "whole-spine" in " ".join(q["L2"].failures)


def _run(preop, labels, cbct, plan):
    return register_volumes(preop, labels, cbct, plan, RegistrationConfig())


def test_phantom_levels_recovered_after_30deg_50mm_misplacement(loaded_case):
    preop, labels, cbct, plan, _truth, gt = loaded_case
    rng = np.random.default_rng(3)
    centre = cbct.index_to_lps((np.array(cbct.shape, float) - 1)[None] / 2)[0]
    cbct_d, gt_d = bc.displaced_cbct(cbct, bc.whole_spine_misplacement(rng, 30.0, 50.0, centre), gt)
    res = _run(preop, labels, cbct_d, plan)
    assert res.all_accepted, {lv: r.reason for lv, r in res.levels.items()}
    for lv, r in res.levels.items():
        tre = screw_tre_mm(plan, lv, r.T_cbct_preop, gt_d[lv])
        assert tre.max() < 0.5, (lv, tre)
    assert res.registered_plan.frame == "Reference" and len(res.registered_plan) == len(plan)
    assert not res.not_navigable


def test_level_stuck_in_a_wrong_minimum_is_retried_from_wider_starts(loaded_case, monkeypatch):
    """Seed 0's L3 case: the whole-spine pose is ~6-8 mm off a level, its first fit settles in a wrong
    minimum and fails the gate; the retry (well-fitted neighbour's pose, wider first step) finds the
    level and the gate accepts it on its merits."""
    import spine_nav.registration.pipeline as pipeline
    from spine_nav.geometry import make_transform

    refine = pipeline.align.refine
    monkeypatch.setattr(pipeline.align, "refine",
                        lambda *a, **k: make_transform(None, [6.0, 0.0, 0.0]) @ refine(*a, **k))
    preop, labels, cbct, plan, _truth, gt = loaded_case
    res = _run(preop, labels, cbct, plan)
    assert any(r.quality.retried_starts > 0 for r in res.levels.values())
    assert res.all_accepted, {lv: r.reason for lv, r in res.levels.items()}
    for lv, r in res.levels.items():
        assert screw_tre_mm(plan, lv, r.T_cbct_preop, gt[lv]).max() < 0.5, lv


def _assert_refused(res, levels, word):
    for lv in levels:
        r = res.levels[lv]
        assert not r.accepted and r.T_cbct_preop is None, (lv, r.reason)
        assert word in r.reason, (lv, r.reason)


def test_gate_refuses_level_cut_out_of_fov(loaded_case):
    preop, labels, cbct, plan, truth, gt = loaded_case
    lv0, lv1 = list(gt)
    c0 = bc.level_centre_in_cbct(gt, truth["levels"][lv0]["body_centre_preop_mm"], lv0)
    c1 = bc.level_centre_in_cbct(gt, truth["levels"][lv1]["body_centre_preop_mm"], lv1)
    res = _run(preop, labels, bc.cut_fov(cbct, c0, c1), plan)
    _assert_refused(res, [lv0], "field of view")
    assert res.levels[lv1].accepted  # the level still inside stays navigable
    assert screw_tre_mm(plan, lv1, res.levels[lv1].T_cbct_preop, gt[lv1]).max() < 0.5
    assert all(lv0 in reason for sid, reason in res.not_navigable.items() if sid.startswith(lv0))
    assert {s.level for s in res.registered_plan} == {lv1}


def test_gate_refuses_mislabelled_level(loaded_case):
    preop, labels, cbct, plan, _truth, gt = loaded_case
    res = _run(preop, bc.swap_labels(labels, 1, 2), cbct, plan)
    _assert_refused(res, list(gt), "mislabelled")


def test_gate_refuses_cbct_of_another_phantom(loaded_case, small_cases):
    from spine_nav.imaging.volume_io import load_volume

    preop, labels, _cbct, plan, _truth, gt = loaded_case
    other = load_volume(small_cases[TEST_SEEDS[1]].cbct, frame="Reference")
    res = _run(preop, labels, other, plan)
    _assert_refused(res, list(gt), "")
    assert not res.accepted_transforms


def test_gate_refuses_heavy_noise(loaded_case):
    preop, labels, cbct, plan, _truth, gt = loaded_case
    res = _run(preop, labels, bc.noisy(cbct, 800.0, seed=1), plan)
    _assert_refused(res, list(gt), "")
    assert not res.accepted_transforms


# --- CLI ---------------------------------------------------------------------------------------

def _cli_args(case, out, **override):
    args = {"--preop": case.preop_ct, "--labels": case.preop_labels, "--cbct": case.cbct, "--plan": case.plan,
            "--out": out}
    args.update(override)
    return [x for k, v in args.items() for x in (k, str(v))]


def test_cli_register_exit_0_writes_result_plan_and_overlays(small_cases, tmp_path, capsys):
    from spine_nav.cli.main import main
    from spine_nav.plan import load_plan

    case = small_cases[TEST_SEEDS[0]]
    out = tmp_path / "result.json"
    assert main(["register", *_cli_args(case, out)]) == 0
    err = capsys.readouterr().err
    assert "level L2: ACCEPTED" in err and "level L3: ACCEPTED" in err
    data = json.loads(out.read_text())
    for lv in ("L2", "L3"):
        e = data["levels"][lv]
        assert e["status"] == "accepted" and np.asarray(e["preop_to_cbct"]).shape == (4, 4)
        assert screw_tre_mm(load_plan(case.plan), lv, np.asarray(e["preop_to_cbct"]), case.T_cbct_preop[lv]).max() < 0.5
        for k in ("fitness", "inlier_rmse_mm", "condition_number", "multistart_spread_mm", "reason"):
            assert k in e
        png = tmp_path / f"result.overlay_{lv}.png"
        assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    reg = load_plan(tmp_path / "result.registered_plan.json")
    assert reg.frame == "Reference" and len(reg) == 4
    # never overwrites silently
    assert main(["register", *_cli_args(case, out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_register_exit_3_when_a_level_fails(small_cases, tmp_path, capsys):
    from spine_nav.cli.main import main
    from spine_nav.imaging.volume_io import load_volume, save_volume

    case = small_cases[TEST_SEEDS[0]]
    labels = load_volume(case.preop_labels)
    lab = np.asarray(labels.data).copy()
    lab[lab == 2] = 0  # L3 has no voxels left: it cannot be registered
    save_volume(type(labels)(lab, labels.affine_lps, labels.frame), tmp_path / "labels.nii.gz")
    out = tmp_path / "result.json"
    assert main(["register", *_cli_args(case, out, **{"--labels": tmp_path / "labels.nii.gz"}),
                 "--no-overlays"]) == 3
    data = json.loads(out.read_text())
    assert data["levels"]["L2"]["status"] == "accepted" and "preop_to_cbct" in data["levels"]["L2"]
    assert data["levels"]["L3"]["status"] == "failed" and "preop_to_cbct" not in data["levels"]["L3"]
    assert data["levels"]["L3"]["reason"]
    assert "FAILED" in capsys.readouterr().err


def test_cli_register_exit_2_on_bad_input(small_cases, tmp_path):
    import subprocess
    import sys

    case = small_cases[TEST_SEEDS[0]]
    bad = tmp_path / "cbct.nii.gz"
    bad.write_bytes(b"not a volume")
    for override, word in (({"--cbct": tmp_path / "missing.nii.gz"}, "missing.nii.gz"), ({"--cbct": bad}, "cbct")):
        proc = subprocess.run([sys.executable, "-m", "spine_nav.cli.main", "register",
                               *_cli_args(case, tmp_path / "r.json", **override)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("spine-nav: error:") and word in last, proc.stderr
        assert not (tmp_path / "r.json").exists()


def test_osteoporotic_bone_registers_with_adaptive_threshold(tmp_path):
    """Osteoporotic bone (cortex ~750 HU) never reaches a fixed 400 HU in the blurred CBCT; the
    adaptive iso-value (30 % from soft tissue to the cortex) still registers every level."""
    from spine_nav.phantom.case import generate_case
    from spine_nav.registration.pipeline import register_case
    from tests.registration_fixtures import SMALL

    case = generate_case(tmp_path / "osteo", seed=13, bone="osteoporotic", **SMALL)
    res, inputs = register_case(case.preop_ct, case.preop_labels, case.cbct, case.plan)
    assert res.timings_s["bone_threshold_hu"] < 300
    assert res.all_accepted, {lv: r.reason for lv, r in res.levels.items()}
    for lv, r in res.levels.items():
        assert screw_tre_mm(inputs["plan"], lv, r.T_cbct_preop, case.T_cbct_preop[lv]).max() < 0.5


def test_fill_holes_matches_scipy_binary_fill_holes():
    """The labelling-based hole filling of the bone surface gives exactly ndimage.binary_fill_holes."""
    from scipy import ndimage

    from spine_nav.registration.surface import fill_holes

    rng = np.random.default_rng(3)
    shell = np.zeros((12, 13, 14), bool)
    shell[2:10, 2:11, 2:12] = True
    shell[4:8, 4:9, 4:10] = False  # an enclosed cavity (cancellous bone inside the cortex)
    cases = [shell, np.zeros((5, 6, 7), bool), np.ones((5, 6, 7), bool)]
    cases += [ndimage.binary_closing(rng.random((16, 15, 17)) > p) for p in (0.3, 0.5, 0.7)]
    for m in cases:
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))
    assert fill_holes(shell)[5, 5, 5] and not shell[5, 5, 5]
