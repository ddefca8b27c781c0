"""Tunable numbers of the registration and its gate (one dataclass each, mm/deg units).

The gate's residual limits are derived from the CBCT being registered (its measured edge
width and noise, :mod:`~spine_nav.registration.cbct_quality`) and its neighbour limits from
physiological segmental motion; the factors were set on the tuning seeds of
``spine-nav bench registration --sweep`` (a family of phantoms: CBCT voxel 0.5-1.5 mm, noise
10-80 HU, blur, metal, FOV crops, scoliosis, morphometry) and are reported on fresh seeds
(docs/registration.md). ``OLD_FIXED_GATE`` keeps the limits tuned on the one default phantom
as the bench's baseline. The node reads overrides from ``config/nodes.yaml``
(``registration: ros__parameters: gate.*``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class GateThresholds:
    """A level is accepted only when every check passes.

    Attributes:
        min_fitness: fraction of the level's preop surface points (those inside the CBCT
            field of view) with a CBCT surface point within ``inlier_distance_mm``.
        max_inlier_rmse_mm: RMS point-to-plane distance of those inlier pairs.
        max_residual_p95_mm: 95th percentile of the same distances (a different patient's vertebra
            differs locally - processes, endplates - more than noise does).
        inlier_distance_mm: distance that counts as a match.
        min_fov_fraction: fraction of the level's surface (mapped by the result) inside the CBCT volume.
            0.70, set on the tuning sweep (seeds 2000-2003, 2500; docs/registration.md): the lowest
            correct level there was 0.77 inside (fov_crop, TRE 0.06 mm; refused by the earlier 0.80),
            a level cut half out of view 0.37; the residual and fit checks keep their own say.
        max_condition_number: of the (length-normalised) point-to-plane Hessian; high = a sliding
            direction the surface does not constrain (degenerate, e.g. a cylinder-like patch).
        max_multistart_spread_mm: RMS displacement of the level's points between the result and the
            results from perturbed starts (disagreement = local minimum / symmetry).
        max_neighbour_translation_mm / max_neighbour_rotation_deg: allowed difference between adjacent
            levels' transforms (evaluated at the mid-point of their centroids); vertebrae move
            relative to each other by a few mm/deg between supine CT and prone surgery, not more.
        max_global_translation_mm / max_global_rotation_deg: allowed difference to the whole-spine transform.
        min_plan_in_label_fraction: fraction of the planned screw trajectory samples of a level that lie
            inside that level's label (dilated); catches a mislabelled level.
        min_points: minimum surface points of the level (preop) and in the CBCT crop.
        data_derived: scale the residual limits with the measured CBCT and bound the neighbour check
            by physiological motion (below); False = the fixed limits above (the old gate).
        rmse_per_edge: inlier RMSE limit per mm of (CBCT edge width + surface noise), see
            :mod:`~spine_nav.registration.cbct_quality`. On the tuning seeds a correct level's RMSE
            is 0.10-0.15 x that sum for every CBCT quality of the family (0.5 mm / 10 HU: 0.08 mm;
            1.5 mm / 80 HU / blurred: 0.54 mm); 0.20 leaves a 1.3x margin over the worst and still
            refuses another patient's vertebra at ordinary CBCT quality (RMSE 0.43 mm at 1 mm / 30 HU,
            limit 0.21 mm). The fixed ``max_inlier_rmse_mm`` stays as a floor. Adding the preop CT's
            width in quadrature (:func:`~spine_nav.registration.gate.surface_width_mm`) was tried and
            reverted: it let another phantom's vertebra pass (see :func:`~spine_nav.registration.gate.scaled_thresholds`).
        p95_per_edge: the same for the 95th percentile (a correct level's p95 is ~2x its RMSE).
        metal_hu / metal_radius_mm / metal_factor: a level with CBCT voxels >= ``metal_hu`` (metal:
            cortical bone stays below ~2000 HU) within ``metal_radius_mm`` of its centre has its residual
            limits multiplied by ``metal_factor``: streaks bend the bone iso-surface near metal (the
            level under the phantom's clamp: RMSE 2.4x its neighbours' on the tuning seeds).
        level_motion_deg / level_motion_mm: largest physiological change of one vertebra's pose between
            the preop CT (supine) and surgery (prone, breathing, manipulation), relative to the whole
            spine: a few deg / mm per segment (lumbar segmental flexion-extension 12-17 deg and
            translation 2-3 mm full range, White & Panjabi 1990; breathing 1-2 mm, manipulation
            ~1.5 mm, issue 15), bounded here by 6 deg / 6 mm. Two adjacent levels may then differ by up
            to twice that plus the rotation's lever: the neighbour check allows
            ``2 * level_motion_mm + 2 * (half the centroid distance) * sin(level_motion_deg)`` mm and
            ``2 * level_motion_deg`` deg (~16 mm / 12 deg for lumbar levels 40 mm apart). A level
            registered one vertebra off is ~35-45 mm away from its neighbour, far outside.
    """

    min_fitness: float = 0.80
    max_inlier_rmse_mm: float = 0.18
    max_residual_p95_mm: float = 0.35
    inlier_distance_mm: float = 1.5
    min_fov_fraction: float = 0.70
    max_condition_number: float = 200.0
    max_multistart_spread_mm: float = 0.30
    max_neighbour_translation_mm: float = 8.0
    max_neighbour_rotation_deg: float = 12.0
    max_global_translation_mm: float = 10.0
    max_global_rotation_deg: float = 15.0
    min_plan_in_label_fraction: float = 0.6
    min_points: int = 300
    data_derived: bool = True
    rmse_per_edge: float = 0.20
    p95_per_edge: float = 0.40
    metal_hu: float = 2500.0
    metal_radius_mm: float = 50.0
    metal_factor: float = 2.5
    level_motion_deg: float = 6.0
    level_motion_mm: float = 6.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "GateThresholds":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"gate thresholds: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in values.items()})


#: The gate as tuned on the one default phantom (residual limits 0.18 / 0.35 mm, neighbours 8 mm /
#: 12 deg, no scaling): the baseline of ``spine-nav bench registration --sweep``.
OLD_FIXED_GATE = GateThresholds(data_derived=False)


@dataclass(frozen=True)
class RegistrationConfig:
    """How surfaces are extracted and aligned.

    Attributes:
        bone_threshold_hu: iso-value of the bone surface (same for CT and CBCT); cancellous bone
            enclosed by the cortex is filled (see :func:`~spine_nav.registration.surface.bone_surface`).
            0 = adaptive (default): ``50 + 0.25 * (p90 of the labelled preop HU - 50)``, i.e. 25 % of
            the way from soft tissue to cortical bone: ~340 HU for normal bone, ~225 HU for
            osteoporotic bone (whose blurred CBCT cortex does not reliably reach 300 HU).
        smoothing_sigma_mm: Gaussian smoothing before marching cubes (suppresses CBCT noise).
        surface_voxel_mm: voxel-grid down-sampling of the surface points used by ICP.
        global_voxel_mm: voxel size for the FPFH + RANSAC whole-spine initialisation.
        crop_margin_mm: CBCT points farther than this from the level (mapped by the whole-spine
            estimate) are not used for that level.
        icp_max_distances_mm: coarse-to-fine max correspondence distances of the per-level GICP.
        multistart_max_distances_mm: the same for the perturbed starts (they start closer).
        retry_max_distances_mm: the schedule of the retry from the whole-spine pose for a level whose
            first fit failed the gate (a wider first step to climb out of a wrong local minimum).
        multistart_count / multistart_angle_deg / multistart_offset_mm: perturbed starts of the
            multi-start agreement check.
        method: ``small_gicp`` (GICP, default: faster and unbiased on partial views, see the
            bench) or ``open3d`` (open3d generalized ICP).
        num_threads: threads of small_gicp (preprocessing and GICP; open3d's FPFH / RANSAC use
            their own OpenMP pool). 1 by default: the per-level problems are small (~6000 points,
            ~20 ms per GICP call) and on the shared 2-core machine a second thread doubled the
            levels' CPU time (OpenMP spin-waiting) and tripled their wall time (demo case seed 0,
            load ~8: levels 2.09 CPU-s / 23 s wall with 2 threads, 0.98 CPU-s / 8.8 s with 1);
            the sweep (``bench registration --sweep``, 1 thread per worker) validates this setting.
        seed: RANSAC / multi-start random seed (results are reproducible).
    """

    bone_threshold_hu: float = 0.0
    smoothing_sigma_mm: float = 0.8
    surface_voxel_mm: float = 1.5
    global_voxel_mm: float = 5.0
    crop_margin_mm: float = 8.0
    icp_max_distances_mm: tuple[float, ...] = (4.0, 2.0, 1.0)
    multistart_max_distances_mm: tuple[float, ...] = (3.0, 1.0)
    retry_max_distances_mm: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)
    multistart_count: int = 2
    multistart_angle_deg: float = 3.0
    multistart_offset_mm: float = 2.0
    method: str = "small_gicp"
    num_threads: int = 1
    seed: int = 0
    gate: GateThresholds = field(default_factory=GateThresholds)

    def __post_init__(self) -> None:
        if self.method not in ("small_gicp", "open3d"):
            raise ValueError(f"method: must be 'small_gicp' or 'open3d', got {self.method!r}")
        if self.surface_voxel_mm <= 0 or self.global_voxel_mm <= 0:
            raise ValueError("surface_voxel_mm and global_voxel_mm must be > 0")
        for name in ("icp_max_distances_mm", "multistart_max_distances_mm", "retry_max_distances_mm"):
            object.__setattr__(self, name, tuple(float(d) for d in getattr(self, name)))
