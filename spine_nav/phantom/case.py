"""The synthetic patient: a lumbar spine phantom with known ground truth (no ROS).

:func:`generate_case` writes one case folder::

    preop_ct.nii.gz      PreopCT, HU (int16), ~0.7 mm voxels (LPS affine, RAS on disk)
    preop_labels.nii.gz  one integer label per vertebra (uint8); names in plan.json / ground_truth.json
    cbct.nii.gz          intraoperative CBCT, HU-like (int16), coarser voxels, noise, limited
                         field of view, optional metal streaks; its affine maps into the Reference frame
    plan.json            bilateral pedicle screws per level (spine_nav.plan schema v1, PreopCT LPS mm)
    ground_truth.json    per level ``preop_to_cbct`` = T_cbct_preop (PreopCT LPS mm -> CBCT/Reference LPS mm)

Geometry: each vertebra is an analytic shape (:mod:`spine_nav.phantom.anatomy`) in
its local frame; ``T_preop_local[level]`` places it in the preop CT (lumbar
lordosis, seeded variation). The intraoperative pose of each level is
``T_cbct_preop[level] = T_whole @ T_rel[level]`` where ``T_rel`` rotates/translates
the vertebra about its own body centre (up to ~5 deg / ~5 mm; prone vs supine)
and ``T_whole`` is a whole-spine pose change. Both volumes are rendered from the
same analytic shapes, so the ground truth is exact up to voxelisation.

Determinism: one ``numpy.random.Generator(seed)`` draws everything in a fixed
order; volumes are saved with :func:`spine_nav.imaging.volume_io.save_volume`
(gzip mtime 0), so the same seed gives byte-identical files.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from spine_nav.geometry import compose, invert, make_transform, transform_points
from spine_nav.phantom.anatomy import LUMBAR_LEVELS, LevelShape, disc_sdf, varied_shape, vertebra_sdf
from spine_nav.imaging.volume import Volume
from spine_nav.imaging.volume_io import save_volume
from spine_nav.plan.io import save_plan, write_text_safely
from spine_nav.plan.model import Plan, Screw

TRUTH_SCHEMA = "spine_nav.phantom_truth"

#: HU by bone quality: cortical shell and cancellous core (clinical notes: cortex ~700-1500 HU,
#: cancellous normal ~200-300 HU, osteoporotic ~50-110 HU).
BONE_HU: dict[str, dict[str, float]] = {
    "normal": {"cortical_hu": 1200.0, "cancellous_hu": 250.0},
    "osteopenic": {"cortical_hu": 950.0, "cancellous_hu": 140.0},
    "osteoporotic": {"cortical_hu": 750.0, "cancellous_hu": 80.0},
}
CORTEX_MM = 1.2
DISC_HU = 90.0
MUSCLE_HU = 45.0
FAT_HU = -95.0
AIR_HU = -1000.0
METAL_HU = 3000.0
#: Standard screw sizes the planner chooses from (mm).
SCREW_DIAMETERS_MM = (4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5)
SCREW_LENGTHS_MM = (30.0, 35.0, 40.0, 45.0, 50.0, 55.0)
#: Bone kept on each side of the screw in the pedicle when choosing the diameter (mm).
PEDICLE_MARGIN_MM = 1.25
#: Distance kept between the screw tip and the anterior outer surface of the body (mm).
TIP_MARGIN_MM = 5.0


@dataclass(frozen=True)
class PhantomVariation:
    """How one generated case departs from the default phantom (the family the registration gate is
    calibrated on; ``spine-nav bench registration --sweep``). The defaults reproduce the default phantom
    byte for byte (every new draw comes from a separate generator seeded ``[seed, 29]``).

    CBCT (intraop scanners: 0.4-1.5 mm voxels, 10-80 HU noise; issue 15):
        cbct_noise_hu: white Gaussian noise sigma added after the blur (default 30).
        cbct_blur_sigma_vox: Gaussian blur (voxels) before the noise: the scanner's point spread (0.6).
        metal_streak_hu: amplitude of the streaks around the metal clamp (when ``metal``; 400).
        fov_radius_scale: radius of the cylindrical field of view / half the grid width (1.02).
        fov_z_margin_mm: axial field of view beyond the end levels' body centres +- half a body height
            (6 mm); negative values crop into the end vertebrae.
    Motion, PreopCT (supine) -> CBCT (prone surgery), per level about its body centre:
        level_angle_deg / level_offset_mm: (min, max) of the per-level rotation / translation, drawn
            uniformly (default (1, 5) / (1, 5)). Sources: supine-to-prone change of the lumbar
            segments is a few degrees and a few mm per segment (issue 15; segmental ranges of motion in
            White & Panjabi, Clinical Biomechanics of the Spine, 2nd ed. 1990: flexion-extension
            12-17 deg, sagittal translation 2-3 mm per lumbar segment, bound it from above).
        whole_angle_deg / whole_offset_mm: the whole-spine pose change ((3, 10) / (5, 20)).
        breathing_mm: extra per-level antero-posterior / cranio-caudal shift up to this (0; 1-2 mm of
            spine motion with ventilation under prone positioning, issue 15).
        manipulation_mm: extra per-level random shift up to this (0; ~1.5 mm from instrumentation
            and pressure on the spine, issue 15).
    Anatomy:
        cobb_deg: coronal (scoliotic) curve over the levels with its apex in the middle; the end
            vertebrae tilt +-cobb/2 (0 = straight; the family uses 10-40 deg).
        apical_rotation_per_cobb: axial rotation of the apical vertebra per degree of Cobb angle (0.4:
            apical rotation grows with the Cobb angle, roughly 10-20 deg at 30-40 deg Cobb, as
            Nash-Moe / Perdriolle grading tables read); it falls off toward the end vertebrae.
        morphometry: patient-level size factors drawn from published lumbar morphometry instead of
            the one template's +-3 %: vertebral body width/depth CV 7 %, height CV 6 % (Panjabi et al.,
            Spine 1992; 17:299), pedicle isthmus width CV 15 % (Zindrick et al., Spine 1987; 12:160);
            factors clipped to +-2 SD.
        pedicle_width_sd: every pedicle's transverse (isthmus) width shifted by this many standard
            deviations of its published spread, ``w * (1 + 0.15 * sd)`` (CV 15 %, Zindrick et al.,
            Spine 1987; 12:160, as ``morphometry``), within -2..+2 (0: the template). ``-2`` is the
            narrow end of that spread (~2.5th percentile): 0.70 x the template's 8-18 mm, i.e. about
            5.6 mm at L1, 6.3 mm at L2, 7.7 mm at L3, 9.8 mm at L4 and 12.6 mm at L5. The upper lumbar
            values are close to the ~4-6 mm isthmus widths given for L1-L2 in small adults; they come
            from the -2 SD of the spread above, not from a per-level table of minima (none at hand
            here). The planner then picks smaller screws with the same 1.25 mm margin each side; at
            L1-L2 only the smallest 4.5 mm screw fits. Applied after the seeded left/right asymmetry
            and draws nothing, so every other draw of the seed is unchanged. ``spine-nav train
            --difficulty narrow`` uses -2.
    """

    cbct_noise_hu: float = 30.0
    cbct_blur_sigma_vox: float = 0.6
    metal_streak_hu: float = 400.0
    fov_radius_scale: float = 1.02
    fov_z_margin_mm: float = 6.0
    level_angle_deg: tuple[float, float] = (1.0, 5.0)
    level_offset_mm: tuple[float, float] = (1.0, 5.0)
    whole_angle_deg: tuple[float, float] = (3.0, 10.0)
    whole_offset_mm: tuple[float, float] = (5.0, 20.0)
    breathing_mm: float = 0.0
    manipulation_mm: float = 0.0
    cobb_deg: float = 0.0
    apical_rotation_per_cobb: float = 0.4
    morphometry: bool = False
    pedicle_width_sd: float = 0.0

    def __post_init__(self) -> None:
        checks = (("cbct_noise_hu", self.cbct_noise_hu, 0.0, 500.0),
                  ("cbct_blur_sigma_vox", self.cbct_blur_sigma_vox, 0.0, 3.0),
                  ("metal_streak_hu", self.metal_streak_hu, 0.0, 3000.0),
                  ("fov_radius_scale", self.fov_radius_scale, 0.3, 2.0),
                  ("fov_z_margin_mm", self.fov_z_margin_mm, -40.0, 60.0),
                  ("breathing_mm", self.breathing_mm, 0.0, 10.0),
                  ("manipulation_mm", self.manipulation_mm, 0.0, 10.0),
                  ("cobb_deg", self.cobb_deg, 0.0, 60.0),
                  ("apical_rotation_per_cobb", self.apical_rotation_per_cobb, 0.0, 1.0),
                  ("pedicle_width_sd", self.pedicle_width_sd, -2.0, 2.0))
        for name, v, lo, hi in checks:
            if not lo <= float(v) <= hi:
                raise PhantomError(f"{name}: {v:g} is outside {lo:g}-{hi:g}")
        for name in ("level_angle_deg", "level_offset_mm", "whole_angle_deg", "whole_offset_mm"):
            lo, hi = (float(x) for x in getattr(self, name))
            if not 0.0 <= lo <= hi <= 45.0:
                raise PhantomError(f"{name}: ({lo:g}, {hi:g}) must satisfy 0 <= min <= max <= 45")
            object.__setattr__(self, name, (lo, hi))

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults (written to ground_truth.json only when non-empty)."""
        d = PhantomVariation()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if v != getattr(d, k)}


DEFAULT_VARIATION = PhantomVariation()


class PhantomError(ValueError):
    """Bad phantom parameters (message names the parameter)."""


@dataclass
class PhantomSpine:
    """The analytic spine in the PreopCT frame (mm, LPS).

    ``T_preop_local[level]`` maps the vertebra's local frame (see anatomy) into PreopCT.
    ``torso_centre_mm``/``torso_radii_mm`` describe the skin ellipse (axial plane, PreopCT).
    """

    levels: tuple[str, ...]
    shapes: dict[str, LevelShape]
    T_preop_local: dict[str, np.ndarray]
    bone: str = "normal"
    torso_centre_mm: tuple[float, float] = (0.0, -30.0)
    torso_radii_mm: tuple[float, float] = (160.0, 120.0)

    @property
    def labels(self) -> dict[str, str]:
        """Label value (as a string) -> level name."""
        return {str(i + 1): lv for i, lv in enumerate(self.levels)}

    def label_of(self, level: str) -> int:
        return self.levels.index(level) + 1

    @property
    def hu(self) -> dict[str, float]:
        return BONE_HU[self.bone]

    def centre_mm(self, level: str) -> np.ndarray:
        """Vertebral body centre of ``level`` in PreopCT (mm)."""
        return self.T_preop_local[level][:3, 3].copy()

    def sdf(self, level: str, points_preop: np.ndarray) -> np.ndarray:
        """Signed distance (mm, < 0 inside bone) of PreopCT points to vertebra ``level``."""
        local = transform_points(invert(self.T_preop_local[level]), np.atleast_2d(points_preop))
        return vertebra_sdf(local, self.shapes[level])

    def outside_distance_mm(self, level: str, points_preop: np.ndarray) -> np.ndarray:
        """How far (mm) each PreopCT point lies outside the bone of ``level`` (0 inside)."""
        return np.maximum(self.sdf(level, points_preop), 0.0)

    # -- serialisation (ground truth keeps what later simulation needs) ----------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels), "bone": self.bone,
            "torso_centre_mm": list(self.torso_centre_mm), "torso_radii_mm": list(self.torso_radii_mm),
            "shapes": {lv: {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.shapes[lv]).items()}
                       for lv in self.levels},
            "T_preop_local": {lv: self.T_preop_local[lv].tolist() for lv in self.levels},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhantomSpine":
        shapes = {}
        for lv, s in d["shapes"].items():
            s = dict(s)
            s["pedicle_width_mm"] = tuple(s["pedicle_width_mm"])
            shapes[lv] = LevelShape(**s)
        return cls(levels=tuple(d["levels"]), shapes=shapes,
                   T_preop_local={lv: np.asarray(T, dtype=float) for lv, T in d["T_preop_local"].items()},
                   bone=d.get("bone", "normal"), torso_centre_mm=tuple(d["torso_centre_mm"]),
                   torso_radii_mm=tuple(d["torso_radii_mm"]))

    @classmethod
    def from_truth_file(cls, path: str | Path) -> "PhantomSpine":
        """The analytic phantom of a case from its ``ground_truth.json``."""
        return cls.from_dict(json.loads(Path(path).read_text())["phantom"])


# --- building the spine -------------------------------------------------------------------------

def morphometric_shape(shape: LevelShape, factors: np.ndarray) -> LevelShape:
    """``shape`` scaled by patient-level factors (body width/depth, body height, pedicle width), see
    :class:`PhantomVariation` (``morphometry``) for the sources of their spread."""
    fb, fh, fp = (float(f) for f in factors)
    pw = tuple(max(7.5, w * fp) for w in shape.pedicle_width_mm)  # >= the smallest screw + margins
    return replace(shape, body_radius_x_mm=shape.body_radius_x_mm * fb, body_radius_y_mm=shape.body_radius_y_mm * fb,
                   body_height_mm=shape.body_height_mm * fh, pedicle_width_mm=pw,
                   canal_half_width_mm=shape.canal_half_width_mm * fb,
                   transverse_length_mm=shape.transverse_length_mm * fb,
                   spinous_length_mm=shape.spinous_length_mm * fb)


#: Coefficient of variation of the lumbar pedicle isthmus width (Zindrick et al., Spine 1987; 12:160).
PEDICLE_WIDTH_CV = 0.15


def pedicle_width_shifted(shape: LevelShape, sd: float) -> LevelShape:
    """``shape`` with both pedicle widths scaled by ``1 + PEDICLE_WIDTH_CV * sd`` (see
    :class:`PhantomVariation` ``pedicle_width_sd`` for the source and the resulting widths)."""
    f = 1.0 + PEDICLE_WIDTH_CV * float(sd)
    return replace(shape, pedicle_width_mm=tuple(w * f for w in shape.pedicle_width_mm))


def scoliotic_curve(T: dict[str, np.ndarray], levels: Sequence[str], cobb_deg: float,
                    apical_rotation_per_cobb: float) -> dict[str, np.ndarray]:
    """Bend the layout ``T`` (PreopCT <- local) into a coronal curve of ``cobb_deg`` with its apex
    at the middle level: tilt about the antero-posterior axis ``(cobb/2) cos(pi s)`` (s = 0..1 over
    the levels, so the end vertebrae differ by ``cobb_deg``), lateral shift integrated from that
    tilt, and axial rotation ``apical_rotation_per_cobb * cobb * sin(pi s)`` about each vertebra's
    own cranial axis."""
    n = len(levels)
    if n == 0 or cobb_deg <= 0.0:
        return T
    s = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
    tilt = 0.5 * cobb_deg * np.cos(np.pi * s)
    out: dict[str, np.ndarray] = {}
    x = 0.0
    for i, lv in enumerate(levels):
        if i:
            dz = float(np.linalg.norm(T[lv][:3, 3] - T[levels[i - 1]][:3, 3]))
            x += dz * math.sin(math.radians(0.5 * (tilt[i] + tilt[i - 1])))
        R_cor = Rotation.from_euler("y", tilt[i], degrees=True).as_matrix()
        R_ax = Rotation.from_euler("z", apical_rotation_per_cobb * cobb_deg * math.sin(math.pi * s[i]),
                                   degrees=True).as_matrix()
        out[lv] = make_transform(R_cor @ T[lv][:3, :3] @ R_ax, T[lv][:3, 3] + np.array([x, 0.0, 0.0]))
    shift = np.mean([T[lv][:3, 3] for lv in levels], axis=0) - np.mean([out[lv][:3, 3] for lv in levels], axis=0)
    for lv in levels:
        out[lv][:3, 3] += shift
    return out


def build_spine(rng: np.random.Generator, levels: Sequence[str], bone: str = "normal",
                variation: PhantomVariation = DEFAULT_VARIATION,
                vrng: np.random.Generator | None = None) -> PhantomSpine:
    """Lay out ``levels`` (superior to inferior) with lumbar lordosis and seeded variation.

    ``variation`` (morphometry, scoliosis) draws from ``vrng`` only, so the default spine is unchanged."""
    shapes = {lv: varied_shape(lv, rng) for lv in levels}
    if variation.morphometry:
        vr = vrng if vrng is not None else np.random.default_rng(0)
        factors = 1.0 + np.clip(vr.standard_normal(3), -2.0, 2.0) * np.array([0.07, 0.06, 0.15])
        shapes = {lv: morphometric_shape(sh, factors) for lv, sh in shapes.items()}
    if variation.pedicle_width_sd != 0.0:
        shapes = {lv: pedicle_width_shifted(sh, variation.pedicle_width_sd) for lv, sh in shapes.items()}
    # lordosis: tilt (about +x) grows toward L5; the superior axis tilts anteriorly for > 0
    nominal_tilt = {"L1": -4.0, "L2": 0.0, "L3": 4.0, "L4": 8.0, "L5": 13.0}
    tilts = {lv: nominal_tilt[lv] + float(rng.uniform(-1.5, 1.5)) for lv in levels}
    T: dict[str, np.ndarray] = {}
    pos = np.zeros(3)
    prev: str | None = None
    for lv in levels:
        R = Rotation.from_euler("x", tilts[lv], degrees=True).as_matrix()
        if prev is not None:
            Rp = T[prev][:3, :3]
            Rm = Rotation.from_euler("x", 0.5 * (tilts[lv] + tilts[prev]), degrees=True).as_matrix()
            down = np.array([0.0, 0.0, -1.0])
            pos = (T[prev][:3, 3] + Rp @ down * (0.5 * shapes[prev].body_height_mm)
                   + Rm @ down * shapes[prev].disc_height_mm + R @ down * (0.5 * shapes[lv].body_height_mm))
        T[lv] = make_transform(R, pos + rng.uniform(-0.5, 0.5, size=3) * np.array([1.0, 1.0, 0.0]))
        prev = lv
    # centre the spine at a plausible table position
    centre = np.mean([T[lv][:3, 3] for lv in levels], axis=0)
    shift = np.array([0.0, 0.0, -150.0]) - centre
    for lv in levels:
        T[lv][:3, 3] += shift
    if variation.cobb_deg > 0.0:
        T = scoliotic_curve(T, tuple(levels), variation.cobb_deg, variation.apical_rotation_per_cobb)
    y_bodies = float(np.mean([T[lv][1, 3] for lv in levels]))
    return PhantomSpine(levels=tuple(levels), shapes=shapes, T_preop_local=T, bone=bone,
                        torso_centre_mm=(0.0, y_bodies - 35.0), torso_radii_mm=(160.0, 125.0))


def _local_box_corners(sh: LevelShape) -> np.ndarray:
    x = sh.canal_half_width_mm + max(sh.pedicle_width_mm) + sh.pedicle_length_mm + sh.transverse_length_mm + 3.0
    y0 = -sh.body_radius_y_mm - 3.0
    y1 = sh.posterior_wall_y_mm + sh.canal_depth_mm + sh.lamina_thickness_mm + sh.spinous_length_mm + 3.0
    z = 0.5 * sh.body_height_mm + sh.disc_height_mm + 10.0
    return np.array([[sx, sy, sz] for sx in (-x, x) for sy in (y0, y1) for sz in (-z, z)])


def bone_bounds_mm(spine: PhantomSpine, T_frame_preop: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """(2, 3) min/max corner of all vertebrae (with discs) in a frame (default PreopCT)."""
    pts = []
    for lv in spine.levels:
        T = spine.T_preop_local[lv] if T_frame_preop is None else compose(T_frame_preop[lv], spine.T_preop_local[lv])
        pts.append(transform_points(T, _local_box_corners(spine.shapes[lv])))
    allp = np.concatenate(pts)
    return np.stack([allp.min(axis=0), allp.max(axis=0)])


# --- rendering --------------------------------------------------------------------------------

def _grid_points(affine: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Frame coordinates (N, 3) of voxel indices in the box [lo, hi) (C order)."""
    ii, jj, kk = np.meshgrid(*(np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _index_box(affine: np.ndarray, shape: Sequence[int], corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inv = np.linalg.inv(affine)
    ijk = corners @ inv[:3, :3].T + inv[:3, 3]
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, shape)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, shape)
    return lo, hi


def _sdf_on_box(f: Callable[[np.ndarray], np.ndarray], affine: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                coarse: int = 4) -> np.ndarray:
    """SDF of ``f`` (frame points -> mm) on the voxel box [lo, hi), coarse to fine.

    The SDF is evaluated on every ``coarse``-th voxel first; only voxels whose nearest
    coarse sample is within a band around the surface (and the cortex) are evaluated
    exactly; the others keep their coarse value, which has the right sign (only
    the sign and the cortex band matter to the renderer). ~4x fewer SDF evaluations
    than the full box; written here because no library renders analytic SDFs.
    """
    shape = tuple(int(v) for v in hi - lo)
    spacing = float(np.max(np.linalg.norm(affine[:3, :3], axis=0)))
    cidx = [np.arange(0, n, coarse) for n in shape]
    ii, jj, kk = np.meshgrid(*cidx, indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1) + lo
    dc = f(ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(ii.shape)
    near = [np.minimum(np.rint(np.arange(n) / coarse).astype(int), len(c) - 1) for n, c in zip(shape, cidx)]
    d = dc[np.ix_(*near)].astype(np.float32)
    margin = 1.5 * (0.5 * coarse * spacing * math.sqrt(3.0)) + CORTEX_MM
    band = np.abs(d) < margin
    sel = np.nonzero(band)
    if sel[0].size:
        ijk = np.stack(sel, axis=1) + lo
        d[sel] = f(ijk @ affine[:3, :3].T + affine[:3, 3])
    return d


def soft_tissue_hu(spine: PhantomSpine, points_preop: np.ndarray) -> np.ndarray:
    """Muscle inside the torso, a fat layer under the skin, air outside (PreopCT points)."""
    cx, cy = spine.torso_centre_mm
    rx, ry = spine.torso_radii_mm
    k = np.sqrt(((points_preop[:, 0] - cx) / rx) ** 2 + ((points_preop[:, 1] - cy) / ry) ** 2)
    out = np.full(len(points_preop), MUSCLE_HU, dtype=np.float32)
    out[k > 1.0 - 14.0 / ry] = FAT_HU
    out[k > 1.0] = AIR_HU
    return out


def render(spine: PhantomSpine, affine: np.ndarray, shape: Sequence[int],
           T_frame_preop: Mapping[str, np.ndarray], T_frame_preop_whole: np.ndarray,
           chunk_slices: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and labels (uint8) of the spine on a grid.

    ``affine`` maps voxel indices to the grid's frame; ``T_frame_preop[level]`` places each
    vertebra (with the disc below it) in that frame; soft tissue follows ``T_frame_preop_whole``.
    """
    shape = tuple(int(s) for s in shape)
    hu = np.empty(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    T_preop_frame = invert(T_frame_preop_whole)
    M = T_preop_frame[:3, :3] @ affine[:3, :3]
    if abs(M[2, 0]) < 1e-12 and abs(M[2, 1]) < 1e-12 and abs(M[0, 2]) < 1e-12 and abs(M[1, 2]) < 1e-12:
        # grid k axis along preop z: soft tissue (a function of preop x, y) is the same in every slice
        pts = _grid_points(affine, np.array([0, 0, 0]), np.array([shape[0], shape[1], 1]))
        hu[:] = soft_tissue_hu(spine, transform_points(T_preop_frame, pts)).reshape(shape[0], shape[1], 1)
        slab_starts: range = range(0)
    else:
        slab_starts = range(0, shape[2], chunk_slices)
    for k0 in slab_starts:  # soft tissue, slab by slab (bounded memory)
        k1 = min(shape[2], k0 + chunk_slices)
        pts = _grid_points(affine, np.array([0, 0, k0]), np.array([shape[0], shape[1], k1]))
        hu[:, :, k0:k1] = soft_tissue_hu(spine, transform_points(T_preop_frame, pts)).reshape(
            shape[0], shape[1], k1 - k0)
    hu_bone = spine.hu
    spacing = float(np.mean(np.linalg.norm(affine[:3, :3], axis=0)))
    for sdf_fn, is_disc in ((disc_sdf, True), (vertebra_sdf, False)):  # discs first, bone wins
        for n, lv in enumerate(spine.levels):
            if is_disc and n == len(spine.levels) - 1:
                continue  # no disc modelled below the last level (keeps labels/FOV honest)
            T_frame_local = compose(T_frame_preop[lv], spine.T_preop_local[lv])
            lo, hi = _index_box(affine, shape, transform_points(T_frame_local, _local_box_corners(spine.shapes[lv])))
            if np.any(hi <= lo):
                continue
            d = _sdf_on_box(lambda q: sdf_fn(transform_points(invert(T_frame_local), q), spine.shapes[lv]),
                            affine, lo, hi)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            # partial volume: a voxel straddling the surface gets the mix of inside and outside
            frac = np.clip(0.5 - d / spacing, 0.0, 1.0)
            touched = frac > 0.0
            block = hu[sl]
            if is_disc:
                touched &= labels[sl] == 0
                inner = np.float32(DISC_HU)
            else:
                inner = np.where(d[touched] > -CORTEX_MM, hu_bone["cortical_hu"], hu_bone["cancellous_hu"])
                labels[sl][d < 0.0] = spine.label_of(lv)
            f = frac[touched]
            block[touched] = (1.0 - f) * block[touched] + f * inner
    return hu, labels


def _add_metal(hu: np.ndarray, affine: np.ndarray, centre_mm: np.ndarray, rng: np.random.Generator,
               streak_hu: float = 400.0) -> None:
    """A metal clamp (reference array on a spinous process) and streaks in its axial slices.

    Streaks are modelled as angular bright/dark bands decaying with distance, the pattern
    beam hardening and photon starvation leave around metal in CT.
    """
    inv = np.linalg.inv(affine)
    c_ijk = inv[:3, :3] @ centre_mm + inv[:3, 3]
    sp = np.linalg.norm(affine[:3, :3], axis=0)
    ii, jj = np.meshgrid(np.arange(hu.shape[0]), np.arange(hu.shape[1]), indexing="ij")
    dx, dy = (ii - c_ijk[0]) * sp[0], (jj - c_ijk[1]) * sp[1]
    r = np.sqrt(dx ** 2 + dy ** 2)
    theta = np.arctan2(dy, dx)
    phase = float(rng.uniform(0, 2 * math.pi))
    streak = (streak_hu * np.cos(7 * theta + phase) * np.exp(-r / 35.0)).astype(np.float32)
    half_z = 6.0 / sp[2]
    for k in range(max(0, int(c_ijk[2] - half_z)), min(hu.shape[2], int(c_ijk[2] + half_z) + 1)):
        sl = hu[:, :, k]
        sl += streak
        sl[r < 3.0] = METAL_HU


# --- planning ---------------------------------------------------------------------------------

def _march_exit(f: Callable[[np.ndarray], np.ndarray], p0: np.ndarray, u: np.ndarray,
                t_max: float = 120.0, step: float = 0.25) -> float:
    """Smallest t > 0 where f(p0 + t u) becomes >= 0 (refined by bisection to 0.01 mm)."""
    ts = np.arange(0.0, t_max, step)
    vals = f(p0 + ts[:, None] * u)
    out = np.nonzero(vals >= 0.0)[0]
    if len(out) == 0:
        raise PhantomError("pedicle axis never leaves the bone (phantom geometry error)")
    hi = ts[out[0]]
    lo = hi - step
    for _ in range(12):
        mid = 0.5 * (lo + hi)
        if f((p0 + mid * u)[None])[0] >= 0.0:
            hi = mid
        else:
            lo = mid
    return float(lo)


#: Bone clearance (mm) the planner wants around the whole screw cylinder (past the head's seat).
MIN_CLEARANCE_MM = 0.5
#: Trajectory search about the pedicle isthmus: medial and cranio-caudal deviations (deg) from the
#: anatomical pedicle axis, tried in order of increasing deviation.
_SEARCH_MEDIAL_DEG = tuple(float(a) for a in range(-8, 9))
_SEARCH_CRANIAL_DEG = tuple(float(a) for a in range(-8, 9, 2))


@dataclass(frozen=True)
class _Trajectory:
    entry_local: np.ndarray
    direction_local: np.ndarray  # unit, entry -> tip
    length_mm: float
    clearance_mm: float  # min bone around the cylinder past the seat (< 0: breach by that much)
    deviation_deg: float


def _axis_direction(medial_deg: float, cranial_deg: float, side: str) -> np.ndarray:
    """Posterior-pointing unit axis in the level's local frame (x lateral-left, y posterior, z cranial)."""
    s = 1.0 if side == "left" else -1.0
    m, c = math.radians(medial_deg), math.radians(cranial_deg)
    return np.array([s * math.sin(m) * math.cos(c), math.cos(m) * math.cos(c), math.sin(c)])


def _trajectory(sh: LevelShape, side: str, pivot: np.ndarray, u: np.ndarray, diameter_mm: float,
                deviation_deg: float) -> _Trajectory | None:
    from spine_nav.imaging.breach import SKIP_ENTRY_MM, cylinder_samples

    f = lambda p: vertebra_sdf(p, sh)  # noqa: E731
    t_back = _march_exit(f, pivot, u)
    t_front = _march_exit(f, pivot, -u)
    available = t_back + t_front - TIP_MARGIN_MM
    fits = [L for L in SCREW_LENGTHS_MM if L <= available]
    if not fits:
        return None
    entry = pivot + t_back * u
    length = fits[-1]
    pts = cylinder_samples(entry, entry - length * u, diameter_mm, skip_entry_mm=SKIP_ENTRY_MM)
    clearance = -float(np.max(f(pts)))
    return _Trajectory(entry, -u, length, clearance, deviation_deg)


def _plan_one(sh: LevelShape, side: str) -> tuple[_Trajectory, float]:
    """Best trajectory and diameter for one pedicle (local frame).

    The anatomical pedicle axis first; if its screw cylinder keeps less than ``MIN_CLEARANCE_MM`` of bone
    (e.g. an oblique posterior surface at the entry, as at L1), the axis is re-aimed about the pedicle
    isthmus by the smallest medial/cranio-caudal deviation that does; failing that, the next smaller
    diameter. This is what a surgeon does on the planning screen: keep the screw centred in the
    pedicle and move its entry until the whole shank is in bone.
    """
    i = 0 if side == "left" else 1
    p0, _ = sh.pedicle_axis(side)
    pivot = p0 + 0.5 * sh.pedicle_length_mm * _axis_direction(sh.medial_angle_deg, 0.0, side)
    candidates = sorted(((math.hypot(dm, dc), dm, dc) for dm in _SEARCH_MEDIAL_DEG for dc in _SEARCH_CRANIAL_DEG))
    sizes = [d for d in SCREW_DIAMETERS_MM if d <= sh.pedicle_width_mm[i] - 2 * PEDICLE_MARGIN_MM] \
        or [SCREW_DIAMETERS_MM[0]]
    best: tuple[_Trajectory, float] | None = None
    for diameter in reversed(sizes):
        for dev, dm, dc in candidates:
            u = _axis_direction(sh.medial_angle_deg + dm, dc, side)
            tr = _trajectory(sh, side, pivot, u, diameter, dev)
            if tr is None:
                continue
            if tr.clearance_mm >= MIN_CLEARANCE_MM:
                return tr, diameter
            if best is None or tr.clearance_mm > best[0].clearance_mm:
                best = (tr, diameter)
    if best is None or best[0].clearance_mm < 0.0:
        got = "no trajectory fits" if best is None else f"best breaches by {-best[0].clearance_mm:.2f} mm"
        raise PhantomError(f"{sh.level} {side}: no pedicle screw trajectory stays in bone ({got}; "
                           "phantom geometry error)")
    return best


def plan_screws(spine: PhantomSpine) -> list[Screw]:
    """Bilateral pedicle screws through each pedicle, sized from the pedicle geometry.

    Diameter = largest standard size leaving ``PEDICLE_MARGIN_MM`` of bone each side of the pedicle;
    trajectory through the pedicle isthmus along the pedicle axis (medial angulation per level),
    re-aimed when needed so the whole cylinder keeps ``MIN_CLEARANCE_MM`` of bone (see
    :func:`_plan_one`); entry = where the axis leaves the bone posteriorly; length = longest standard
    size keeping ``TIP_MARGIN_MM`` to the anterior cortex.
    """
    screws = []
    for lv in spine.levels:
        sh = spine.shapes[lv]
        for side in ("left", "right"):
            tr, diameter = _plan_one(sh, side)
            entry = tr.entry_local
            target = entry + tr.length_mm * tr.direction_local
            e, t = transform_points(spine.T_preop_local[lv], np.stack([entry, target]))
            screws.append(Screw(id=f"{lv}_{side}", level=lv, side=side, entry_mm=np.round(e, 3),
                                target_mm=np.round(t, 3), diameter_mm=diameter, length_mm=tr.length_mm))
    return screws


# --- intraoperative motion ----------------------------------------------------------------------

def _rigid_about(rng: np.random.Generator, centre: np.ndarray, angle_range_deg: tuple[float, float],
                 trans_range_mm: tuple[float, float]) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(*angle_range_deg))
    tdir = rng.normal(size=3)
    tdir /= np.linalg.norm(tdir)
    t = tdir * rng.uniform(*trans_range_mm)
    R = Rotation.from_rotvec(axis * angle).as_matrix()
    return compose(make_transform(None, centre + t), make_transform(R), make_transform(None, -centre))


def intraop_motion(spine: PhantomSpine, rng: np.random.Generator,
                   variation: PhantomVariation = DEFAULT_VARIATION,
                   vrng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(T_whole, {level: T_cbct_preop}) with per-level motion about each body centre (default up to
    5 deg / 5 mm; ranges, breathing and manipulation from ``variation``, see its sources)."""
    v = variation
    centre = np.mean([spine.centre_mm(lv) for lv in spine.levels], axis=0)
    T_whole = _rigid_about(rng, centre, v.whole_angle_deg, v.whole_offset_mm)
    per_level = {lv: compose(T_whole, _rigid_about(rng, spine.centre_mm(lv), v.level_angle_deg, v.level_offset_mm))
                 for lv in spine.levels}
    if v.breathing_mm > 0.0 or v.manipulation_mm > 0.0:
        vr = vrng if vrng is not None else np.random.default_rng(0)
        for lv in spine.levels:
            shift = np.zeros(3)
            if v.breathing_mm > 0.0:  # antero-posterior / cranio-caudal (PreopCT y, z)
                shift += np.array([0.0, 1.0, 0.5]) / math.sqrt(1.25) * vr.uniform(-1.0, 1.0) * v.breathing_mm
            if v.manipulation_mm > 0.0:
                d = vr.normal(size=3)
                shift += d / np.linalg.norm(d) * vr.uniform(0.0, v.manipulation_mm)
            per_level[lv] = compose(T_whole, make_transform(None, shift), invert(T_whole), per_level[lv])
    return T_whole, per_level


def case_geometry(seed: int, levels: Sequence[str] = LUMBAR_LEVELS, bone: str = "normal",
                  variation: PhantomVariation = DEFAULT_VARIATION
                  ) -> tuple[PhantomSpine, np.ndarray, dict[str, np.ndarray]]:
    """The analytic part of :func:`generate_case` (no volumes): (spine, T_whole, {level: T_cbct_preop}).

    Same seed -> same draws as the case files, so callers that need only the geometry and the plan
    (``plan_screws(spine)``) get exactly the case's."""
    rng = np.random.default_rng(seed)
    vrng = np.random.default_rng([seed, 29])
    spine = build_spine(rng, tuple(levels), bone, variation, vrng)
    T_whole, T_cbct_preop = intraop_motion(spine, rng, variation, vrng)
    return spine, T_whole, T_cbct_preop


# --- the case -----------------------------------------------------------------------------------

@dataclass
class CaseFiles:
    """Paths of a generated case plus its ground truth in memory.

    ``truth`` is the parsed ground_truth.json; ``T_cbct_preop[level]`` maps PreopCT LPS mm to
    CBCT (= Reference) LPS mm; ``spine`` is the analytic phantom (PreopCT).
    """

    out_dir: Path
    preop_ct: Path
    preop_labels: Path
    cbct: Path
    plan: Path
    ground_truth: Path
    truth: dict[str, Any] = field(default_factory=dict)
    T_cbct_preop: dict[str, np.ndarray] = field(default_factory=dict)
    spine: PhantomSpine | None = None
    timings_s: dict[str, float] = field(default_factory=dict)


def _grid_for(bounds: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    shape = tuple(int(math.ceil((bounds[1, a] - bounds[0, a]) / voxel_mm)) + 1 for a in range(3))
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = np.round(bounds[0], 1)
    return affine, shape  # type: ignore[return-value]


def _to_int16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), -1024, 3071).astype(np.int16)


@dataclass(frozen=True)
class CaseRequest:
    """The validated arguments of :func:`generate_case` (voxel sizes in mm, filled with their defaults)."""

    seed: int
    levels: tuple[str, ...]
    bone: str
    voxel_mm: float
    cbct_voxel_mm: float
    metal: bool
    variation: PhantomVariation


@dataclass(frozen=True)
class CbctImage:
    """The rendered CBCT (frame Reference) and the radius of its cylindrical field of view (mm)."""

    volume: Volume
    fov_radius_mm: float


CASE_FILE_NAMES = ("preop_ct.nii.gz", "preop_labels.nii.gz", "cbct.nii.gz", "plan.json", "ground_truth.json")
PREOP_NOISE_HU = 10.0


def case_request(seed: int = 0, levels: Sequence[str] = LUMBAR_LEVELS, bone: str = "normal",
                 voxel_mm: float | None = None, cbct_voxel_mm: float | None = None, metal: bool = False,
                 variation: PhantomVariation | None = None) -> CaseRequest:
    """:func:`generate_case`'s arguments checked; raises :class:`PhantomError` naming the bad one."""
    levels = tuple(levels)
    if not levels:
        raise PhantomError("levels: give at least one level")
    bad = [lv for lv in levels if lv not in LUMBAR_LEVELS]
    if bad:
        raise PhantomError(f"levels: unknown lumbar level(s) {', '.join(bad)} (phantom knows L1-L5)")
    idx = [LUMBAR_LEVELS.index(lv) for lv in levels]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise PhantomError(f"levels: must be consecutive, superior first, got {', '.join(levels)}")
    if bone not in BONE_HU:
        raise PhantomError(f"bone: must be one of {', '.join(BONE_HU)}, got {bone!r}")
    voxel_mm = 0.7 if voxel_mm is None else float(voxel_mm)
    cbct_voxel_mm = 1.0 if cbct_voxel_mm is None else float(cbct_voxel_mm)
    for name, v in (("voxel_mm", voxel_mm), ("cbct_voxel_mm", cbct_voxel_mm)):
        if not (0.2 <= v <= 3.0):
            raise PhantomError(f"{name}: {v:g} mm is outside 0.2-3.0 mm")
    return CaseRequest(int(seed), levels, bone, voxel_mm, cbct_voxel_mm, bool(metal), variation or DEFAULT_VARIATION)


def _case_files(out_dir: str | Path, overwrite: bool) -> CaseFiles:
    """The case's paths (folder created); FileExistsError naming a file that exists unless ``overwrite``."""
    out = Path(out_dir)
    if not overwrite:
        existing = [str(out / n) for n in CASE_FILE_NAMES if (out / n).exists()]
        if existing:
            raise FileExistsError(f"{existing[0]}: already exists; refusing to overwrite (pass overwrite=True / --force)")
    out.mkdir(parents=True, exist_ok=True)
    return CaseFiles(out, *(out / n for n in CASE_FILE_NAMES))


def render_preop(spine: PhantomSpine, req: CaseRequest, noise_rng: np.random.Generator,
                 say: Callable[[str], None]) -> tuple[Volume, Volume]:
    """(PreopCT HU, vertebra labels): grid axis-aligned with PreopCT covering the bone (+ skin posteriorly),
    ``PREOP_NOISE_HU`` white noise (first draw of ``noise_rng``)."""
    b = bone_bounds_mm(spine)
    b[0] -= 6.0
    b[1] += 6.0
    b[1, 1] = max(b[1, 1], spine.torso_centre_mm[1] + spine.torso_radii_mm[1] + 8.0)
    aff, shape = _grid_for(b, req.voxel_mm)
    ident = {lv: np.eye(4) for lv in req.levels}
    say(f"phantom: rendering preop CT {shape} at {req.voxel_mm:g} mm")
    hu, labels = render(spine, aff, shape, ident, np.eye(4))
    hu += noise_rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(PREOP_NOISE_HU)
    return Volume(_to_int16(hu), aff, frame="PreopCT"), Volume(labels, aff, frame="PreopCT")


def _metal_clamp_mm(spine: PhantomSpine, req: CaseRequest, T_cbct_preop: Mapping[str, np.ndarray]) -> np.ndarray:
    """Where the metal clamp sits (CBCT mm): on the spinous process of the middle level."""
    mid = req.levels[len(req.levels) // 2]
    sh = spine.shapes[mid]
    clamp_local = np.array([0.0, sh.posterior_wall_y_mm + sh.canal_depth_mm + sh.lamina_thickness_mm
                            + 0.6 * sh.spinous_length_mm, -0.1 * sh.body_height_mm - 8.0])
    return transform_points(compose(T_cbct_preop[mid], spine.T_preop_local[mid]), clamp_local)


def render_cbct(spine: PhantomSpine, req: CaseRequest, T_whole: np.ndarray, T_cbct_preop: Mapping[str, np.ndarray],
                streak_rng: np.random.Generator, noise_rng: np.random.Generator,
                say: Callable[[str], None]) -> CbctImage:
    """The intraoperative CBCT: grid axis-aligned with Reference over the bone after motion, axial field of
    view cut ``fov_z_margin_mm`` beyond the end levels, blur, optional metal streaks, noise, and outside
    the cylindrical field of view air (the variation's values)."""
    var = req.variation
    bc = bone_bounds_mm(spine, T_cbct_preop)
    centres = np.array([transform_points(T_cbct_preop[lv], spine.centre_mm(lv)) for lv in req.levels])
    half_h = max(0.5 * spine.shapes[lv].body_height_mm for lv in req.levels)
    bc[0, 2] = max(bc[0, 2], centres[:, 2].min() - half_h - var.fov_z_margin_mm)
    bc[1, 2] = min(bc[1, 2], centres[:, 2].max() + half_h + var.fov_z_margin_mm)
    caff, cshape = _grid_for(bc, req.cbct_voxel_mm)
    say(f"phantom: rendering CBCT {cshape} at {req.cbct_voxel_mm:g} mm")
    chu, _ = render(spine, caff, cshape, T_cbct_preop, T_whole)
    chu = gaussian_filter(chu, sigma=var.cbct_blur_sigma_vox, mode="nearest")
    if req.metal:
        _add_metal(chu, caff, _metal_clamp_mm(spine, req, T_cbct_preop), streak_rng, var.metal_streak_hu)
    chu += noise_rng.standard_normal(chu.shape, dtype=np.float32) * np.float32(var.cbct_noise_hu)
    # limited field of view: a cylinder about the grid's z axis; outside reads as air
    ci, cj = np.meshgrid(np.arange(cshape[0]), np.arange(cshape[1]), indexing="ij")
    rx, ry = 0.5 * (cshape[0] - 1), 0.5 * (cshape[1] - 1)
    r_fov = max(rx, ry) * var.fov_radius_scale
    chu[np.hypot(ci - rx, cj - ry) > r_fov, :] = AIR_HU
    return CbctImage(Volume(_to_int16(chu), caff, frame="Reference"), float(r_fov * req.cbct_voxel_mm))


def case_plan(spine: PhantomSpine, req: CaseRequest) -> Plan:
    """The planner's bilateral pedicle screws (:func:`plan_screws`) as the case's plan (PreopCT)."""
    return Plan(screws=tuple(plan_screws(spine)), frame="PreopCT", case_id=f"phantom-seed-{req.seed}",
                metadata={"labels": spine.labels, "generator": __name__, "seed": req.seed, "bone": req.bone})


def case_truth(spine: PhantomSpine, req: CaseRequest, T_whole: np.ndarray, T_cbct_preop: Mapping[str, np.ndarray],
               preop: Volume, cbct: CbctImage) -> dict[str, Any]:
    """The content of ground_truth.json (schema :data:`TRUTH_SCHEMA` v1)."""
    var = req.variation
    truth: dict[str, Any] = {
        "schema": TRUTH_SCHEMA, "schema_version": 1, "seed": req.seed, "bone": req.bone,
        "labels": spine.labels,
        "levels": {lv: {"preop_to_cbct": np.round(T_cbct_preop[lv], 12).tolist(), "label": spine.label_of(lv),
                        "body_centre_preop_mm": spine.centre_mm(lv).round(6).tolist()} for lv in req.levels},
        "whole_spine_preop_to_cbct": np.round(T_whole, 12).tolist(),
        "bone_hu": {**BONE_HU[req.bone], "cortex_mm": CORTEX_MM},
        "preop": {"voxel_mm": req.voxel_mm, "shape": list(preop.shape), "noise_hu": PREOP_NOISE_HU},
        "cbct": {"voxel_mm": req.cbct_voxel_mm, "shape": list(cbct.volume.shape), "noise_hu": var.cbct_noise_hu,
                 "blur_sigma_vox": var.cbct_blur_sigma_vox,
                 "fov_radius_mm": cbct.fov_radius_mm, "metal": req.metal, "frame": "Reference"},
        "frames": "preop_to_cbct = T_cbct_preop: PreopCT LPS mm -> CBCT (= Reference) LPS mm",
        "phantom": spine.to_dict(),
    }
    if var.changed():
        truth["variation"] = var.changed()
    return truth


def generate_case(out_dir: str | Path, seed: int = 0, levels: Sequence[str] = LUMBAR_LEVELS,
                  bone: str = "normal", voxel_mm: float | None = None, cbct_voxel_mm: float | None = None,
                  metal: bool = False, overwrite: bool = False,
                  progress: Callable[[str], None] | None = None,
                  variation: PhantomVariation | None = None) -> CaseFiles:
    """Generate a synthetic case in ``out_dir`` (see module doc). Same seed -> same bytes.

    Args:
        levels: consecutive lumbar levels, superior first (e.g. ``("L3", "L4")``).
        bone: ``normal``, ``osteopenic`` or ``osteoporotic`` (cancellous/cortical HU).
        voxel_mm: preop CT voxel size (default 0.7 mm). cbct_voxel_mm: CBCT voxel (default 1.0 mm).
        metal: add a metal clamp with streak artefacts to the CBCT.
        variation: CBCT quality, field of view, motion ranges, scoliosis, morphometry
            (:class:`PhantomVariation`; default = the default phantom, byte for byte).
        overwrite: replace existing case files (otherwise FileExistsError naming the file).

    Steps: :func:`case_request` (checks), :func:`case_geometry` (the seeded draws), :func:`render_preop`,
    :func:`render_cbct`, :func:`case_plan`, :func:`case_truth`, then the five files.
    """
    t_start = time.perf_counter()
    say = progress or (lambda _m: None)
    req = case_request(seed, levels, bone, voxel_mm, cbct_voxel_mm, metal, variation)
    files = _case_files(out_dir, overwrite)
    timings: dict[str, float] = {}
    spine, T_whole, T_cbct_preop = case_geometry(req.seed, req.levels, req.bone, req.variation)
    streak_rng = np.random.default_rng([seed, 7])
    noise_rng = np.random.default_rng([seed, 11])

    t0 = time.perf_counter()
    preop, label_vol = render_preop(spine, req, noise_rng, say)
    timings["preop_render_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cbct = render_cbct(spine, req, T_whole, T_cbct_preop, streak_rng, noise_rng, say)
    timings["cbct_render_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = case_plan(spine, req)
    files.truth = case_truth(spine, req, T_whole, T_cbct_preop, preop, cbct)
    files.T_cbct_preop, files.spine = T_cbct_preop, spine
    save_volume(preop, files.preop_ct, overwrite=overwrite)
    save_volume(label_vol, files.preop_labels, overwrite=overwrite)
    save_volume(cbct.volume, files.cbct, overwrite=overwrite)
    save_plan(plan, files.plan, overwrite=overwrite)
    write_text_safely(files.ground_truth, json.dumps(files.truth, indent=1) + "\n", overwrite=overwrite)
    timings["plan_and_save_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    files.timings_s = timings
    say(f"phantom: wrote {files.out_dir} in {timings['total_s']:.1f} s")
    return files


def load_truth(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(parsed ground_truth.json, {level: T_cbct_preop 4x4})."""
    truth = json.loads(Path(path).read_text())
    return truth, {lv: np.asarray(v["preop_to_cbct"], dtype=float) for lv, v in truth["levels"].items()}
