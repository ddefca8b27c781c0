"""Medical volumes (CT / CBCT / label maps) with their voxel-to-LPS-mm affine.

Convention: ``Volume.data[i, j, k]`` is the voxel at index (i, j, k);
``Volume.affine_lps`` (4x4) maps homogeneous voxel indices ``[i, j, k, 1]`` to
LPS millimetres in ``Volume.frame`` (``PreopCT`` for the preoperative CT,
``Reference`` for an intraoperative CBCT whose scanner was tracked).
RAS files (NIfTI) are converted to LPS once, on load.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class VolumeError(ValueError):
    """A volume file is missing, corrupt or unsupported; the message names the file and the problem."""


@dataclass
class Volume:
    """A 3D image and where its voxels are.

    Attributes:
        data: 3D array (HU for CT/CBCT, integer labels for label maps).
        affine_lps: 4x4 voxel index -> LPS mm.
        frame: name of the frame the affine maps into (``PreopCT``, ``Reference``).
        meta: free-form (source path, modality, ...).
    """

    data: np.ndarray
    affine_lps: np.ndarray
    frame: str = "PreopCT"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if np.ndim(self.data) != 3:
            raise VolumeError(f"volume data must be 3D, got shape {np.shape(self.data)}")
        A = np.asarray(self.affine_lps, dtype=float)
        if A.shape != (4, 4) or not np.all(np.isfinite(A)):
            raise VolumeError(f"volume affine must be a finite 4x4 matrix, got {A.shape}")
        if abs(np.linalg.det(A[:3, :3])) < 1e-9:
            raise VolumeError("volume affine is singular (zero voxel size)")
        self.affine_lps = A

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.affine_lps[:3, :3], axis=0)

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices (N, 3), may be fractional -> LPS mm (N, 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def lps_to_index(self, xyz_mm: np.ndarray) -> np.ndarray:
        """LPS mm (N, 3) -> fractional voxel indices (N, 3)."""
        inv = np.linalg.inv(self.affine_lps)
        xyz = np.asarray(xyz_mm, dtype=float)
        return xyz @ inv[:3, :3].T + inv[:3, 3]
