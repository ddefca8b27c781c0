"""A training case (no ROS): the plan, the registration that maps it into Reference, and — for a
phantom case — the ground truth whose cortex grades the placed screws.

Case directory (``spine-nav phantom`` writes one):

* ``plan.json`` (PreopCT LPS mm): required.
* registration, PreopCT -> Reference (= CBCT) per level, first found of:
  ``registration.json`` / ``result.json`` (``spine-nav register`` output: ``levels.<L>.preop_to_cbct``,
  accepted or overridden levels only), else the ground truth's ``preop_to_cbct`` (a perfectly
  registered phantom case).
* ``ground_truth.json`` (optional): the analytic phantom (its cortex grades the screws) and the true
  PreopCT -> Reference per level (maps a placed tool back into PreopCT, as the demo does).
  Without it the grade is the labelled proxy (:mod:`spine_nav.training.grading`).

Difficulties of a generated case (:func:`generate_training_case`), from the phantom family
(:class:`spine_nav.phantom.case.PhantomVariation`): ``normal``; ``osteoporotic`` (bone HU of
osteoporotic bone); ``scoliotic`` (a 25 deg Cobb curve with its apical rotation); ``narrow`` (pedicle
isthmus widths at the narrow end of published lumbar morphometry, mean - 2 SD: ``PhantomVariation
(pedicle_width_sd=-2)``, about 5.6 / 6.3 / 7.7 / 9.8 / 12.6 mm at L1-L5; sources in its docstring).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from spine_nav.geometry import invert, transform_points
from spine_nav.plan import Plan, Screw, load_plan
from spine_nav.training.grading import ScrewGrade, grade_placed_screw

DIFFICULTIES = ("normal", "osteoporotic", "scoliotic", "narrow")
#: Cobb angle (deg) of the ``scoliotic`` difficulty (the family spans 10-40 deg).
SCOLIOTIC_COBB_DEG = 25.0
#: Pedicle widths of the ``narrow`` difficulty, in SD of their published spread (the narrow end: -2 SD).
NARROW_PEDICLE_SD = -2.0
REGISTRATION_FILES = ("registration.json", "result.json")


class CaseError(ValueError):
    """A case directory that cannot be trained on (message names the file and what is wrong)."""


@dataclass
class TrainingCase:
    """Everything a training session needs from a case directory (frames in the field names)."""

    case_dir: Path
    plan: Plan                                   # PreopCT
    T_reference_preop: dict[str, np.ndarray]     # registration used to show the plan in Reference
    registration_source: str                     # the file it came from
    bone: Any = None                             # PhantomSpine (PreopCT) or None: proxy grading
    T_true_reference_preop: dict[str, np.ndarray] = field(default_factory=dict)  # ground truth (empty: none)
    seed: int | None = None
    variant: str = ""

    @property
    def has_ground_truth(self) -> bool:
        return self.bone is not None

    def plan_in_reference(self) -> Plan:
        """The registered plan (Reference), levels without a registration left out."""
        return self.plan.transformed_per_level(self.T_reference_preop, frame="Reference")

    def screw(self, screw_id: str) -> Screw:
        try:
            return self.plan.screw(screw_id)
        except (KeyError, ValueError) as exc:
            raise CaseError(f"screw {screw_id!r} is not in {self.case_dir / 'plan.json'} "
                            f"(have {', '.join(self.plan.ids)})") from exc

    def preop_to_reference(self, level: str, tip_mm, axis) -> np.ndarray:
        """T_reference_tooltip (4x4 mm) of a tool whose tip is at ``tip_mm`` with its shaft (+z, toward the
        tip) along ``axis``, both PreopCT, through the case's registration of ``level``."""
        T = self._registration(level)
        tip = transform_points(T, np.asarray(tip_mm, dtype=float))
        d = T[:3, :3] @ np.asarray(axis, dtype=float)
        return tool_pose(tip, d)

    def reference_to_preop(self, level: str, T_reference_tooltip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tip, unit axis) in PreopCT of a tool pose in Reference: through the ground truth (where the
        bone really is, as the demo grades) when the case has it, else through the registration."""
        T = self.T_true_reference_preop.get(level) if self.T_true_reference_preop else None
        if T is None:
            T = self._registration(level)
        T_preop_ref = invert(T)
        tip = transform_points(T_preop_ref, np.asarray(T_reference_tooltip)[:3, 3])
        axis = T_preop_ref[:3, :3] @ np.asarray(T_reference_tooltip)[:3, 2]
        return tip, axis / np.linalg.norm(axis)

    def grade(self, screw_id: str, T_reference_tooltip: np.ndarray) -> ScrewGrade:
        """Grade the screw placed with the tool at ``T_reference_tooltip`` (the end of insertion)."""
        planned = self.screw(screw_id)
        tip, axis = self.reference_to_preop(planned.level, T_reference_tooltip)
        return grade_placed_screw(planned, tip, axis, self.bone)

    def _registration(self, level: str) -> np.ndarray:
        if level not in self.T_reference_preop:
            raise CaseError(f"level {level} has no registration in {self.registration_source}")
        return self.T_reference_preop[level]

    def describe(self) -> dict[str, Any]:
        return {"case_dir": str(self.case_dir), "seed": self.seed, "variant": self.variant,
                "registration": self.registration_source, "ground_truth": self.has_ground_truth,
                "screws": list(self.plan.ids)}


def tool_pose(tip_mm: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """T_reference_tooltip with the tip at ``tip_mm`` and +z along ``axis`` (the roll about the shaft is
    fixed by the world z axis, as :func:`spine_nav.bench.console.tool_pose_on_screw`)."""
    d = np.asarray(axis, dtype=float)
    n = float(np.linalg.norm(d))
    if not np.isfinite(n) or n < 1e-9:
        raise CaseError(f"tool axis {list(d)}: not a direction")
    d = d / n
    side = np.cross(d, [0.0, 0.0, 1.0])
    if np.linalg.norm(side) < 1e-6:
        side = np.cross(d, [1.0, 0.0, 0.0])
    side /= np.linalg.norm(side)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([side, np.cross(d, side), d])
    T[:3, 3] = np.asarray(tip_mm, dtype=float)
    return T


def _levels_from_registration(path: Path) -> dict[str, np.ndarray]:
    try:
        data = json.loads(path.read_text())
        levels = data["levels"]
        out = {lv: np.asarray(v["preop_to_cbct"], dtype=float) for lv, v in levels.items()
               if v.get("status", "accepted") in ("accepted", "overridden") and v.get("preop_to_cbct") is not None}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaseError(f"{path}: not a registration result (levels.<L>.preop_to_cbct): {exc}") from exc
    for lv, T in out.items():
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise CaseError(f"{path}: levels.{lv}.preop_to_cbct is not a finite 4x4 matrix")
    return out


def load_training_case(case_dir: str | Path) -> TrainingCase:
    """Load a case directory (see module doc). Raises CaseError naming the missing/bad file."""
    from spine_nav.plan import PlanError

    d = Path(case_dir)
    if not d.is_dir():
        raise CaseError(f"--case {d}: not a directory")
    try:
        plan = load_plan(d / "plan.json")
    except (PlanError, OSError) as exc:
        raise CaseError(f"{d / 'plan.json'}: {exc}") from exc
    bone, T_true, seed, variant = None, {}, None, ""
    gt = d / "ground_truth.json"
    if gt.exists():
        from spine_nav.phantom.case import PhantomSpine, load_truth

        try:
            truth, T_true = load_truth(gt)
            bone = PhantomSpine.from_truth_file(gt)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CaseError(f"{gt}: not a phantom ground truth: {exc}") from exc
        seed = truth.get("seed")
        var = truth.get("variation") or {}
        variant = truth.get("bone", "normal") + ("" if not var else " " + json.dumps(var, sort_keys=True))
    reg, source = None, ""
    for name in REGISTRATION_FILES:
        if (d / name).exists():
            reg, source = _levels_from_registration(d / name), str(d / name)
            break
    if reg is None:
        if not T_true:
            raise CaseError(f"{d}: no registration (registration.json / result.json from `spine-nav register`) "
                            "and no ground_truth.json: the plan cannot be placed in Reference")
        reg, source = dict(T_true), f"{gt} (ground truth: perfect registration)"
    if seed is None:
        seed = (plan.metadata or {}).get("seed")
    return TrainingCase(d, plan, reg, source, bone, dict(T_true), seed, variant)


def generate_training_case(out_dir: str | Path, seed: int, difficulty: str = "normal",
                           levels: tuple[str, ...] = ("L3", "L4"), voxel_mm: float = 1.0,
                           progress: Callable[[str], None] | None = None) -> TrainingCase:
    """Generate a seeded phantom case of ``difficulty`` in ``out_dir`` and load it."""
    from spine_nav.phantom.case import PhantomVariation, generate_case

    if difficulty not in DIFFICULTIES:
        raise CaseError(f"difficulty {difficulty!r}: must be one of {', '.join(DIFFICULTIES)}")
    bone = "osteoporotic" if difficulty == "osteoporotic" else "normal"
    variation = {"scoliotic": PhantomVariation(cobb_deg=SCOLIOTIC_COBB_DEG),
                 "narrow": PhantomVariation(pedicle_width_sd=NARROW_PEDICLE_SD)}.get(difficulty)
    out = Path(out_dir)
    if not (out / "ground_truth.json").exists():
        generate_case(out, seed=seed, levels=levels, bone=bone, voxel_mm=voxel_mm, cbct_voxel_mm=max(voxel_mm, 1.0),
                      variation=variation, progress=progress)
    case = load_training_case(out)
    case.variant = difficulty
    return case


def case_key(case: TrainingCase) -> Mapping[str, Any]:
    """What identifies the case in the session store."""
    return {"case_dir": str(case.case_dir.resolve()), "seed": case.seed, "variant": case.variant or "unknown",
            "ground_truth": case.has_ground_truth}
