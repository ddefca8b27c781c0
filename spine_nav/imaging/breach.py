"""Cortical breach of a screw and its Gertzbein-Robbins grade (no ROS).

A screw is a cylinder from ``entry_mm`` to ``target_mm`` with ``diameter_mm``
(PreopCT LPS mm). Its *breach* is the largest distance (mm) by which any point
of the cylinder (surface sampled around and along the axis, plus the tip) lies
outside the bone of its own vertebra; 0 when the screw is fully inside.
The first ``skip_entry_mm`` of the cylinder are not scored: at the entry point
the screw head sits on the bone surface, and a cylinder entering an oblique
surface always pokes out there; grading is about the pedicle and body walls.

Bone comes from a :class:`BoneModel`: the analytic phantom
(:class:`spine_nav.phantom.case.PhantomSpine`, exact) or a CT label map
(:class:`LabelBone`, distance transform of the vertebra's voxels).

Gertzbein-Robbins (clinical notes): A = no breach, B < 2 mm, C 2-4 mm, D 4-6 mm, E > 6 mm.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

from spine_nav.imaging.volume import Volume, VolumeError

#: Length of the screw (mm) from the entry point that is not scored: the head's seat on the bone surface.
SKIP_ENTRY_MM = 2.0


class BoneModel(Protocol):
    def outside_distance_mm(self, level: str, points_mm: np.ndarray) -> np.ndarray:
        """Distance (mm, >= 0) of each point (N, 3) outside the bone of ``level`` (0 inside)."""


class LabelBone:
    """Bone of each vertebra from a label volume (``labels`` {"1": "L1", ...} names the values).

    Distances come from a Euclidean distance transform of the vertebra's voxels
    (cropped to the vertebra plus ``pad_mm``), trilinearly interpolated, minus half a
    voxel (the label boundary lies between voxel centres). Points beyond the pad
    read the distance at the crop's edge (a lower bound).
    """

    def __init__(self, labels: Volume, names: Mapping[str, str], pad_mm: float = 25.0) -> None:
        self.volume = labels
        self.level_to_label = {lv: int(k) for k, lv in names.items()}
        self.pad_mm = pad_mm
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _field(self, level: str) -> tuple[np.ndarray, np.ndarray]:
        if level not in self._cache:
            if level not in self.level_to_label:
                raise VolumeError(f"label volume has no vertebra named {level!r} "
                                  f"(have {', '.join(self.level_to_label)})")
            mask = np.asarray(self.volume.data) == self.level_to_label[level]
            if not mask.any():
                raise VolumeError(f"label volume: level {level} (label {self.level_to_label[level]}) is empty")
            sp = self.volume.spacing_mm
            idx = np.argwhere(mask)
            pad = np.ceil(self.pad_mm / sp).astype(int)
            lo = np.maximum(idx.min(axis=0) - pad, 0)
            hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
            sub = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
            dist = distance_transform_edt(~sub, sampling=sp).astype(np.float32)
            self._cache[level] = (dist, lo)
        return self._cache[level]

    def outside_distance_mm(self, level: str, points_mm: np.ndarray) -> np.ndarray:
        dist, lo = self._field(level)
        ijk = self.volume.lps_to_index(np.atleast_2d(points_mm)) - lo
        d = map_coordinates(dist, ijk.T, order=1, mode="nearest")
        return np.maximum(d - 0.5 * float(self.volume.spacing_mm.min()), 0.0)


def cylinder_samples(entry_mm: np.ndarray, target_mm: np.ndarray, diameter_mm: float,
                     skip_entry_mm: float = SKIP_ENTRY_MM, step_mm: float = 0.5, n_around: int = 24) -> np.ndarray:
    """Points (N, 3) on the screw cylinder's surface and axis from ``skip_entry_mm`` to the tip."""
    e = np.asarray(entry_mm, dtype=float)
    t = np.asarray(target_mm, dtype=float)
    axis = t - e
    depth = float(np.linalg.norm(axis))
    d = axis / depth
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    s = np.arange(min(skip_entry_mm, depth), depth + 1e-9, step_mm)
    s = np.append(s, depth)
    ang = np.linspace(0.0, 2 * np.pi, n_around, endpoint=False)
    ring = 0.5 * diameter_mm * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v)  # (A, 3)
    surface = (e + s[:, None] * d)[:, None, :] + ring[None, :, :]
    return np.concatenate([surface.reshape(-1, 3), e + s[:, None] * d])


def cortical_breach_mm(entry_mm: np.ndarray, target_mm: np.ndarray, diameter_mm: float, level: str,
                       bone: BoneModel, skip_entry_mm: float = SKIP_ENTRY_MM, step_mm: float = 0.5) -> float:
    """Largest distance (mm) the screw cylinder leaves the bone of ``level`` (0 = fully inside)."""
    pts = cylinder_samples(entry_mm, target_mm, diameter_mm, skip_entry_mm, step_mm)
    return float(np.max(bone.outside_distance_mm(level, pts)))


def screw_breach_mm(screw, bone: BoneModel, skip_entry_mm: float = SKIP_ENTRY_MM) -> float:
    """:func:`cortical_breach_mm` of a :class:`spine_nav.plan.Screw` (in the bone model's frame)."""
    return cortical_breach_mm(screw.entry_mm, screw.target_mm, screw.diameter_mm, screw.level, bone,
                              skip_entry_mm=skip_entry_mm)


def gertzbein_robbins_grade(breach_mm: float, no_breach_tol_mm: float = 0.0) -> str:
    """Grade A-E of a cortical breach in mm (A: none, B: < 2, C: [2, 4), D: [4, 6), E: >= 6).

    ``no_breach_tol_mm`` treats tiny breaches (e.g. voxelisation of a label map) as none.
    """
    b = float(breach_mm)
    if not np.isfinite(b) or b < 0:
        raise ValueError(f"breach_mm must be a finite distance >= 0, got {breach_mm!r}")
    if b <= no_breach_tol_mm:
        return "A"
    if b < 2.0:
        return "B"
    if b < 4.0:
        return "C"
    if b < 6.0:
        return "D"
    return "E"
