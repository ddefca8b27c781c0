"""Point-set alignment: whole-spine global initialisation and per-level GICP refinement.

All transforms are ``T_target_source`` (source = preop points in PreopCT mm, target = CBCT
points in Reference mm). Libraries do the work: open3d (FPFH features, RANSAC, generalized
ICP) and small_gicp (GICP, faster here and unbiased on partial posterior views, see
docs/platform-notes.md and ``spine-nav bench registration``).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from spine_nav.geometry import compose, random_transform, transform_points, validate_transform


def _o3d_cloud(points: np.ndarray, normals: np.ndarray | None = None):
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=float)))
    if normals is not None:
        pc.normals = o3d.utility.Vector3dVector(np.asarray(normals, dtype=float))
    return pc


def global_init(source_mm: np.ndarray, target_mm: np.ndarray, voxel_mm: float = 5.0, seed: int = 0,
                tries: int = 3, good_fitness: float = 0.6) -> np.ndarray:
    """Whole-spine initial ``T_target_source`` with no prior pose: FPFH + RANSAC (open3d).

    Robust to any initial misplacement (the bench exercises 30 deg / 50 mm). Up to ``tries``
    RANSAC runs with different seeds, stopping at the first whose fitness after a coarse GICP
    reaches ``good_fitness``; otherwise the best one is kept (RANSAC occasionally locks one
    level off along the self-similar spine; the per-level gate catches what is left).
    """
    import open3d as o3d

    reg = o3d.pipelines.registration
    src = _o3d_cloud(source_mm).voxel_down_sample(voxel_mm)
    tgt = _o3d_cloud(target_mm).voxel_down_sample(voxel_mm)
    feats = []
    for pc in (src, tgt):
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel_mm, max_nn=30))
        feats.append(reg.compute_fpfh_feature(pc, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel_mm,
                                                                                       max_nn=50)))
    dist = 1.5 * voxel_mm
    best_T, best_fit = np.eye(4), -1.0
    for k in range(tries):
        o3d.utility.random.seed(int(seed) * 101 + k)
        res = reg.registration_ransac_based_on_feature_matching(
            src, tgt, feats[0], feats[1], True, dist,
            reg.TransformationEstimationPointToPoint(False), 3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(dist)],
            reg.RANSACConvergenceCriteria(100000, 0.999))
        T = refine(np.asarray(src.points), np.asarray(tgt.points), res.transformation,
                   max_distances_mm=(2 * voxel_mm, voxel_mm), voxel_mm=voxel_mm / 2)
        fit = fitness(transform_points(T, src.points), cKDTree(np.asarray(tgt.points)), voxel_mm)
        if fit > best_fit:
            best_T, best_fit = T, fit
        if best_fit >= good_fitness:
            break
    return best_T


class Aligner:
    """GICP of one source/target pair, pre-processed once (down-sampling, covariances, k-d tree)
    so that several starts (the multi-start check) cost only the optimisation.

    ``method``: ``small_gicp`` (GICP) or ``open3d`` (open3d generalized ICP).
    """

    def __init__(self, source_mm: np.ndarray, target_mm: np.ndarray, voxel_mm: float = 1.0,
                 method: str = "small_gicp", num_threads: int = 2) -> None:
        self.method, self.num_threads = method, int(num_threads)
        if method == "small_gicp":
            import small_gicp

            self._src, _ = small_gicp.preprocess_points(np.asarray(source_mm, float), voxel_mm,
                                                        num_threads=self.num_threads)
            self._tgt, self._tree = small_gicp.preprocess_points(np.asarray(target_mm, float), voxel_mm,
                                                                 num_threads=self.num_threads)
        elif method == "open3d":
            self._src = _o3d_cloud(source_mm).voxel_down_sample(voxel_mm)
            self._tgt = _o3d_cloud(target_mm).voxel_down_sample(voxel_mm)
        else:
            raise ValueError(f"method: unknown registration method {method!r}")

    def align(self, T_init: np.ndarray, max_distances_mm: tuple[float, ...] = (4.0, 2.0, 1.0),
              max_iterations: int = 30) -> np.ndarray:
        """Coarse-to-fine GICP from ``T_init``; returns ``T_target_source``."""
        T = validate_transform(T_init, "T_init")
        for d in max_distances_mm:
            if self.method == "small_gicp":
                import small_gicp

                res = small_gicp.align(self._tgt, self._src, self._tree, T, registration_type="GICP",
                                       max_correspondence_distance=d, num_threads=self.num_threads,
                                       max_iterations=max_iterations)
                T = np.asarray(res.T_target_source)
            else:
                import open3d as o3d

                reg = o3d.pipelines.registration
                res = reg.registration_generalized_icp(
                    self._src, self._tgt, d, T, reg.TransformationEstimationForGeneralizedICP(),
                    reg.ICPConvergenceCriteria(max_iteration=max_iterations))
                T = np.asarray(res.transformation)
        return T


def refine(source_mm: np.ndarray, target_mm: np.ndarray, T_init: np.ndarray,
           max_distances_mm: tuple[float, ...] = (4.0, 2.0, 1.0), voxel_mm: float = 1.0,
           method: str = "small_gicp", num_threads: int = 2, max_iterations: int = 30) -> np.ndarray:
    """Coarse-to-fine GICP from ``T_init`` (one start); returns ``T_target_source``."""
    return Aligner(source_mm, target_mm, voxel_mm, method, num_threads).align(T_init, max_distances_mm,
                                                                               max_iterations)


def point_to_point_icp(source_mm: np.ndarray, target_mm: np.ndarray, T_init: np.ndarray,
                       max_distance_mm: float, voxel_mm: float = 1.0, max_iterations: int = 50) -> np.ndarray:
    """Plain open3d point-to-point ICP (the baseline the bench compares against)."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    src = _o3d_cloud(source_mm).voxel_down_sample(voxel_mm)
    tgt = _o3d_cloud(target_mm).voxel_down_sample(voxel_mm)
    res = reg.registration_icp(src, tgt, max_distance_mm, np.asarray(T_init, float),
                               reg.TransformationEstimationPointToPoint(),
                               reg.ICPConvergenceCriteria(max_iteration=max_iterations))
    return np.asarray(res.transformation)


def fitness(moved_source_mm: np.ndarray, target_tree: cKDTree, inlier_distance_mm: float) -> float:
    """Fraction of (already transformed) source points with a target point within the distance."""
    pts = np.asarray(moved_source_mm, float)
    if len(pts) == 0:
        return 0.0
    d, _ = target_tree.query(pts, distance_upper_bound=inlier_distance_mm)
    return float(np.mean(np.isfinite(d)))


def inlier_stats(moved_source_mm: np.ndarray, target_tree: cKDTree, inlier_distance_mm: float
                 ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(fitness, inlier RMSE mm, inlier mask over source, matched target indices of the inliers)."""
    pts = np.asarray(moved_source_mm, float)
    if len(pts) == 0:
        return 0.0, float("inf"), np.zeros(0, bool), np.zeros(0, int)
    d, idx = target_tree.query(pts, distance_upper_bound=inlier_distance_mm)
    ok = np.isfinite(d)
    rmse = float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else float("inf")
    return float(ok.mean()), rmse, ok, idx[ok]


def point_to_plane_condition(points_mm: np.ndarray, normals: np.ndarray) -> float:
    """Condition number of the point-to-plane ICP Hessian ``J^T J`` at the solution.

    Rows ``J_i = [((p_i - c) x n_i) / L, n_i]`` with ``c`` the centroid and ``L`` the RMS radius,
    so rotation (rad x L) and translation (mm) are on one scale. A large value means some
    rigid motion barely changes the point-to-plane error: the match is degenerate (sliding
    along a featureless or symmetric patch) and a small disturbance moves the solution.
    Hand-written (6x6 from numpy) because neither library exposes it for a given normal set.
    """
    p = np.asarray(points_mm, float)
    n = np.asarray(normals, float)
    if len(p) < 6:
        return float("inf")
    c = p.mean(axis=0)
    L = float(np.sqrt(np.mean(np.sum((p - c) ** 2, axis=1)))) or 1.0
    J = np.hstack([np.cross(p - c, n) / L, n])
    ev = np.linalg.eigvalsh(J.T @ J)
    return float(ev[-1] / max(ev[0], 1e-12))


def perturbations(rng: np.random.Generator, count: int, angle_deg: float, offset_mm: float,
                  about_mm: np.ndarray) -> list[np.ndarray]:
    """``count`` rigid perturbations of about ``angle_deg`` / ``offset_mm``, rotating about ``about_mm``."""
    out = []
    for _ in range(count):
        T = random_transform(rng, max_angle_deg=angle_deg, max_translation_mm=offset_mm)
        C = np.eye(4)
        C[:3, 3] = about_mm
        Ci = np.eye(4)
        Ci[:3, 3] = -np.asarray(about_mm)
        out.append(compose(C, T, Ci))
    return out


def rms_displacement_mm(T_a: np.ndarray, T_b: np.ndarray, points_mm: np.ndarray) -> float:
    """RMS distance between ``points`` mapped by ``T_a`` and by ``T_b`` (mm)."""
    d = transform_points(T_a, points_mm) - transform_points(T_b, points_mm)
    return float(np.sqrt(np.mean(np.sum(d ** 2, axis=1))))
