"""Cases of the registration benchmarks (``bench registration`` and its ``--sweep``): loading a generated
phantom case, misplacing its CBCT, and the TRE at screw points (mm)."""
from __future__ import annotations

from typing import Any

import numpy as np


def tre_mm(plan, level: str, T_est: np.ndarray, T_true: np.ndarray) -> list[float]:
    """TRE (mm) at the entry and target points of ``level``'s screws: |T_est p - T_true p|."""
    from spine_nav.geometry import transform_points

    pts = np.concatenate([[s.entry_mm, s.target_mm] for s in plan.screws_at(level)])
    return np.linalg.norm(transform_points(T_est, pts) - transform_points(T_true, pts), axis=1).tolist()


def load_case(files) -> dict[str, Any]:
    """A generated case's volumes, plan and truth (:class:`spine_nav.phantom.case.CaseFiles`) loaded."""
    from spine_nav.imaging.volume_io import load_volume
    from spine_nav.plan import load_plan

    return {"preop": load_volume(files.preop_ct), "labels": load_volume(files.preop_labels),
            "cbct": load_volume(files.cbct, frame="Reference"), "plan": load_plan(files.plan),
            "truth": files.truth, "T": dict(files.T_cbct_preop)}


def misplaced(case: dict[str, Any], seed: int) -> dict[str, Any]:
    """``case`` with its CBCT misplaced by exactly 30 deg / 50 mm about its centre (truth moved with it)."""
    from spine_nav.registration import badcases as bc

    cb = case["cbct"]
    centre = cb.index_to_lps((np.array(cb.shape, float) - 1)[None] / 2)[0]
    T_mis = bc.whole_spine_misplacement(np.random.default_rng(seed), 30.0, 50.0, centre)
    cbct, truth = bc.displaced_cbct(cb, T_mis, case["T"])
    return {**case, "cbct": cbct, "T": truth}
