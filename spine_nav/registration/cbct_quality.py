"""How sharp and how noisy an intraop CBCT is, measured on the image itself (no ROS, mm / HU).

The registration gate scales its residual limits with these figures
(:func:`spine_nav.registration.gate.scaled_thresholds`) instead of using limits fixed to one
phantom: a coarse, blurred or noisy CBCT puts its bone surface less precisely, so a correct
registration leaves larger residuals.

* ``noise_hu``: robust standard deviation of the high-pass image (voxel minus the mean of its
  3x3x3 neighbourhood) in soft tissue away from edges (MAD x 1.4826, corrected for the
  neighbourhood mean).
* ``edge_mm``: (bone threshold - soft tissue HU) / median gradient magnitude (HU/mm) at the
  CBCT bone surface after the registration's smoothing: the distance over which the image rises
  from soft tissue to the bone iso-value. It grows with the voxel size, the scanner's blur and
  the smoothing; a sharp 0.5 mm scan gives ~0.5 mm, a blurred 1.5 mm scan ~1.5 mm.
* ``surface_noise_mm``: noise after the smoothing divided by that gradient: how far noise alone
  moves the iso-surface (1 sigma).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spine_nav.imaging.volume import Volume

#: Soft-tissue window (HU) in which the noise is measured (muscle and fat lie inside it).
SOFT_WINDOW_HU = (-200.0, 200.0)


@dataclass(frozen=True)
class CbctQuality:
    """Measured CBCT figures (see module doc). ``voxel_mm`` = mean voxel edge."""

    voxel_mm: float
    noise_hu: float
    edge_mm: float
    surface_noise_mm: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items()}


def measure_noise_hu(cbct: Volume, max_voxels: int = 400_000, seed: int = 0) -> float:
    """Robust noise sigma (HU) of ``cbct`` in soft tissue away from edges (see module doc)."""
    data = np.asarray(cbct.data, dtype=np.float32)
    mean3 = ndimage.uniform_filter(data, size=3, mode="nearest")
    hp = data - mean3
    lo, hi = SOFT_WINDOW_HU
    # away from edges: the 5x5x5 neighbourhood stays inside the soft-tissue window
    mx = ndimage.maximum_filter(mean3, size=5, mode="nearest")
    mn = ndimage.minimum_filter(mean3, size=5, mode="nearest")
    sel = (mn > lo) & (mx < hi)
    vals = hp[sel]
    if vals.size < 1000:
        vals = hp.ravel()
    if vals.size > max_voxels:
        vals = np.random.default_rng(seed).choice(vals, max_voxels, replace=False)
    mad = float(np.median(np.abs(vals - np.median(vals))))
    # hp = x - mean of 27 voxels (itself included): var(hp) = sigma^2 (1 - 1/27)
    return 1.4826 * mad / np.sqrt(1.0 - 1.0 / 27.0)


def measure(cbct: Volume, surface_ijk: np.ndarray, threshold_hu: float, smoothing_sigma_mm: float,
            soft_tissue_hu: float = 50.0, max_points: int = 4000, seed: int = 0) -> CbctQuality:
    """The CBCT's figures given its bone-surface vertices (fractional voxel indices, from
    :func:`~spine_nav.registration.surface.bone_surface`) at ``threshold_hu``."""
    spacing = cbct.spacing_mm
    noise = measure_noise_hu(cbct, seed=seed)
    ijk = np.asarray(surface_ijk, float)
    if len(ijk) > max_points:
        ijk = ijk[np.random.default_rng(seed).choice(len(ijk), max_points, replace=False)]
    if len(ijk) == 0:
        return CbctQuality(float(spacing.mean()), noise, float("nan"), float("nan"))
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int) - 4, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 5, np.array(cbct.shape))
    sub = np.asarray(cbct.data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    sigma_vox = smoothing_sigma_mm / spacing
    grads = [ndimage.gaussian_filter(sub, sigma_vox, order=tuple(int(a == ax) for a in range(3)), mode="nearest")
             / spacing[ax] for ax in range(3)]
    at = (ijk - lo).T
    g = np.sqrt(sum(ndimage.map_coordinates(gr, at, order=1, mode="nearest") ** 2 for gr in grads))
    g_med = float(np.median(g))
    # white noise after a Gaussian of sigma s (voxels): sigma * prod (1 / (2 sqrt(pi) s_i))^(1/2)
    noise_smoothed = noise * float(np.prod(1.0 / np.sqrt(2.0 * np.sqrt(np.pi) * np.maximum(sigma_vox, 0.5))))
    edge = (threshold_hu - soft_tissue_hu) / max(g_med, 1e-6)
    return CbctQuality(float(spacing.mean()), noise, edge, noise_smoothed / max(g_med, 1e-6))
