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


def _gather(data: np.ndarray, centres: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (N, (2h+1)^3) of the cubes of half-width ``half`` about integer ``centres`` (moved
    inside the volume so the cube fits), the (M, 3) integer offsets and the centres used."""
    shape = np.array(data.shape)
    c = np.clip(centres, half, np.maximum(shape - 1 - half, half)).astype(np.int64)
    r = np.arange(-half, half + 1)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    flat = (c @ strides)[:, None] + (off @ strides)[None]
    flat = np.clip(flat, 0, data.size - 1)
    return np.ascontiguousarray(data).ravel()[flat].astype(np.float32), off, c


def measure_noise_hu(cbct: Volume, samples: int = 6000, seed: int = 0) -> float:
    """Robust noise sigma (HU) of ``cbct`` in soft tissue away from bone and air (see module doc),
    on ``samples`` random voxels (a whole-volume filter costs seconds on a 5-level CBCT)."""
    data = np.asarray(cbct.data)
    rng = np.random.default_rng(seed)
    centres = np.stack([rng.integers(2, max(n - 2, 3), samples) for n in data.shape], axis=1)
    vals, off, _ = _gather(data, centres, 2)
    lo, hi = SOFT_WINDOW_HU
    near = np.all(np.abs(off) <= 1, axis=1)
    block = vals[:, near]
    centre = vals[:, np.all(off == 0, axis=1)][:, 0]
    m = block.mean(axis=1)
    # soft tissue (local mean in the window) with no bone or air within 2 voxels
    ok = (m > lo) & (m < hi) & (vals.max(axis=1) < 600.0) & (vals.min(axis=1) > -600.0)
    hp = (centre - m)[ok] if ok.sum() >= 200 else centre - m
    mad = float(np.median(np.abs(hp - np.median(hp))))
    # hp = x - mean of 27 voxels (itself included): var(hp) = sigma^2 (1 - 1/27)
    return 1.4826 * mad / np.sqrt(1.0 - 1.0 / 27.0)


def measure(cbct: Volume, surface_ijk: np.ndarray, threshold_hu: float, smoothing_sigma_mm: float,
            soft_tissue_hu: float = 50.0, max_points: int = 800, seed: int = 0) -> CbctQuality:
    """The CBCT's figures given its bone-surface vertices (fractional voxel indices, from
    :func:`~spine_nav.registration.surface.bone_surface`) at ``threshold_hu``.

    The gradient is the Gaussian-derivative (sigma = ``smoothing_sigma_mm``) at up to ``max_points``
    random vertices, evaluated on the voxels of a cube about each (tens of ms)."""
    spacing = cbct.spacing_mm
    noise = measure_noise_hu(cbct, seed=seed)
    ijk = np.asarray(surface_ijk, float)
    if len(ijk) > max_points:
        ijk = ijk[np.random.default_rng(seed).choice(len(ijk), max_points, replace=False)]
    if len(ijk) == 0:
        return CbctQuality(float(spacing.mean()), noise, float("nan"), float("nan"))
    sigma_vox = np.maximum(smoothing_sigma_mm / spacing, 0.5)
    half = int(min(4, np.ceil(2.5 * sigma_vox.max())))
    vals, off, base = _gather(np.asarray(cbct.data), np.rint(ijk).astype(int), half)
    d = (base[:, None, :] + off[None]) - ijk[:, None, :]  # voxel offsets from the exact vertex
    w = np.exp(-0.5 * np.sum((d / sigma_vox) ** 2, axis=2))
    w /= w.sum(axis=1, keepdims=True)
    # derivative of the Gaussian-smoothed image at the vertex, per axis, in HU/mm
    grad = np.stack([np.sum(w * vals * d[..., a], axis=1) / sigma_vox[a] ** 2 / spacing[a] for a in range(3)], axis=1)
    g_med = float(np.median(np.linalg.norm(grad, axis=1)))
    # white noise after a Gaussian of sigma s (voxels): sigma * prod (1 / (2 sqrt(pi) s_i))^(1/2)
    noise_smoothed = noise * float(np.prod(1.0 / np.sqrt(2.0 * np.sqrt(np.pi) * sigma_vox)))
    edge = (threshold_hu - soft_tissue_hu) / max(g_med, 1e-6)
    return CbctQuality(float(spacing.mean()), float(noise), float(edge), float(noise_smoothed / max(g_med, 1e-6)))
