"""Deliberately bad or displaced inputs made from a phantom case, for the gate's tests and the bench.

Each helper returns new objects (inputs are never modified). Frames: the CBCT volume's affine
maps into ``Reference``; ``T_cbct_preop`` truths are PreopCT mm -> Reference mm.
"""
from __future__ import annotations

import numpy as np

from spine_nav.geometry import compose, make_transform, transform_points, validate_transform
from spine_nav.imaging.volume import Volume

AIR_HU = -1000.0


def displaced_cbct(cbct: Volume, T_new_old: np.ndarray, truth: dict[str, np.ndarray]
                   ) -> tuple[Volume, dict[str, np.ndarray]]:
    """The CBCT moved rigidly by ``T_new_old`` (its affine re-expressed), and the matching truth.

    Used to apply a whole-spine misplacement (e.g. 30 deg / 50 mm) on top of the phantom's own.
    """
    # the affine carries the voxel size (not rigid), so it is multiplied, not composed
    T = validate_transform(T_new_old, "T_new_old")
    moved = Volume(np.asarray(cbct.data), T @ cbct.affine_lps, cbct.frame, dict(cbct.meta))
    return moved, {lv: compose(T_new_old, T) for lv, T in truth.items()}


def whole_spine_misplacement(rng: np.random.Generator, angle_deg: float = 30.0, offset_mm: float = 50.0,
                             about_mm: np.ndarray | None = None) -> np.ndarray:
    """A rigid transform of exactly ``angle_deg`` about a random axis through ``about_mm`` and a
    translation of length ``offset_mm`` in a random direction."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec(axis * np.radians(angle_deg)).as_matrix()
    t = rng.normal(size=3)
    t *= offset_mm / np.linalg.norm(t)
    c = np.zeros(3) if about_mm is None else np.asarray(about_mm, float)
    return compose(make_transform(None, c + t), make_transform(R), make_transform(None, -c))


def level_centre_in_cbct(truth: dict[str, np.ndarray], centre_preop_mm: np.ndarray, level: str) -> np.ndarray:
    return transform_points(truth[level], np.asarray(centre_preop_mm, float)).reshape(3)


def cut_fov(cbct: Volume, centre_mm: np.ndarray, towards_mm: np.ndarray) -> Volume:
    """The CBCT cropped at the voxel plane through ``centre_mm`` (a level's body centre, CBCT mm),
    keeping the side toward ``towards_mm`` (e.g. the neighbouring level): as if half of the level
    had been outside the scanner's field of view. Crops along the voxel axis closest to the
    centre-to-neighbour direction (the grid and its affine shrink; nothing is painted)."""
    d = np.asarray(towards_mm, float) - np.asarray(centre_mm, float)
    A = cbct.affine_lps[:3, :3] / cbct.spacing_mm
    axis = int(np.argmax(np.abs(A.T @ d)))
    cut = int(np.rint(cbct.lps_to_index(np.asarray(centre_mm, float)[None])[0][axis]))
    cut = int(np.clip(cut, 1, cbct.shape[axis] - 1))
    keep_high = (A.T @ d)[axis] > 0
    sl = [slice(None)] * 3
    sl[axis] = slice(cut, None) if keep_high else slice(0, cut)
    start = np.zeros(3)
    start[axis] = cut if keep_high else 0
    affine = cbct.affine_lps.copy()
    affine[:3, 3] = cbct.index_to_lps(start[None])[0]
    return Volume(np.array(cbct.data[tuple(sl)]), affine, cbct.frame, dict(cbct.meta))


def swap_labels(labels: Volume, a: int, b: int) -> Volume:
    """The label map with label values ``a`` and ``b`` exchanged (a mislabelled level)."""
    lab = np.asarray(labels.data)
    out = lab.copy()
    out[lab == a] = b
    out[lab == b] = a
    return Volume(out, labels.affine_lps.copy(), labels.frame, dict(labels.meta))


def noisy(cbct: Volume, sigma_hu: float, seed: int = 0) -> Volume:
    """The CBCT with extra white Gaussian noise of ``sigma_hu``."""
    rng = np.random.default_rng(seed)
    data = np.asarray(cbct.data, dtype=np.float32) + rng.normal(0.0, sigma_hu, cbct.shape).astype(np.float32)
    return Volume(data, cbct.affine_lps.copy(), cbct.frame, dict(cbct.meta))



def shift_label(labels: Volume, value: int, onto: int) -> Volume:
    """The label map with label ``value`` moved (whole voxels) by the offset between its centroid
    and label ``onto``'s: the level is segmented one vertebra off (it now covers its neighbour's
    bone; the neighbour keeps what is not overwritten)."""
    lab = np.asarray(labels.data)
    a, b = np.argwhere(lab == value), np.argwhere(lab == onto)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"labels: value {value if len(a) == 0 else onto} does not occur")
    shift = np.rint(b.mean(axis=0) - a.mean(axis=0)).astype(int)
    out = lab.copy()
    out[lab == value] = 0
    moved = a + shift
    ok = np.all((moved >= 0) & (moved < np.array(lab.shape)), axis=1)
    out[moved[ok, 0], moved[ok, 1], moved[ok, 2]] = value
    return Volume(out, labels.affine_lps.copy(), labels.frame, dict(labels.meta))
