"""Small phantom cases for the registration tests (generated once per session, ~2 levels, coarse voxels)."""
from __future__ import annotations

import numpy as np
import pytest

#: Seeds used by the tests; the bench uses other (fresh) seeds.
TEST_SEEDS = (11, 12)
SMALL = dict(levels=("L2", "L3"), voxel_mm=1.2, cbct_voxel_mm=1.0)


@pytest.fixture(scope="session")
def small_cases(tmp_path_factory):
    """Two small phantom cases (different seeds): {seed: CaseFiles}."""
    from spine_nav.phantom.case import generate_case

    root = tmp_path_factory.mktemp("registration_cases")
    return {s: generate_case(root / f"seed{s}", seed=s, **SMALL) for s in TEST_SEEDS}


@pytest.fixture(scope="session")
def loaded_case(small_cases):
    """(preop, labels, cbct, plan, truth dict, {level: T_cbct_preop}) of the first small case."""
    from spine_nav.imaging.volume_io import load_volume
    from spine_nav.plan import load_plan

    c = small_cases[TEST_SEEDS[0]]
    return (load_volume(c.preop_ct), load_volume(c.preop_labels), load_volume(c.cbct, frame="Reference"),
            load_plan(c.plan), c.truth, dict(c.T_cbct_preop))


def screw_tre_mm(plan, level: str, T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """Target registration error (mm) at the level's screw entry and target points."""
    from spine_nav.geometry import transform_points

    pts = np.concatenate([[s.entry_mm, s.target_mm] for s in plan.screws_at(level)])
    return np.linalg.norm(transform_points(T_est, pts) - transform_points(T_true, pts), axis=1)
