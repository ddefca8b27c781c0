"""Overlay PNGs: a CBCT slice with the registered preop bone contour and the transformed screws.

One PNG per level (matplotlib Agg, offscreen): left an axial slice through the level's screws,
right a sagittal slice through the level's centre. Accepted levels show the preop surface
points near the slice (mapped by the accepted T_cbct_preop) and the screws; a failed level
shows only the reason (no transform was accepted, so nothing is drawn where it might be
taken for a registration).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spine_nav.geometry import transform_points
from spine_nav.imaging.volume import Volume
from spine_nav.plan import Plan
from spine_nav.registration.pipeline import CaseRegistration


def _axis_along(volume: Volume, lps_dir: np.ndarray) -> int:
    """Voxel axis whose direction is closest to ``lps_dir``."""
    A = volume.affine_lps[:3, :3] / volume.spacing_mm
    return int(np.argmax(np.abs(A.T @ lps_dir)))


def _panel(ax, volume: Volume, axis: int, at_mm: np.ndarray, points_mm: np.ndarray | None,
           screws: list[tuple[np.ndarray, np.ndarray]], title: str) -> None:
    ijk = volume.lps_to_index(at_mm[None])[0]
    idx = int(np.clip(np.rint(ijk[axis]), 0, volume.shape[axis] - 1))
    img = np.take(np.asarray(volume.data), idx, axis=axis)
    rest = [a for a in range(3) if a != axis]
    ax.imshow(img.T, cmap="gray", origin="lower", vmin=-200, vmax=1500, interpolation="nearest")
    if points_mm is not None and len(points_mm):
        pij = volume.lps_to_index(points_mm)
        near = np.abs(pij[:, axis] - idx) <= 0.6
        ax.scatter(pij[near, rest[0]], pij[near, rest[1]], s=1.5, c="lime", linewidths=0, label="preop bone")
    for entry, target in screws:
        e, t = volume.lps_to_index(np.stack([entry, target]))
        ax.plot([e[rest[0]], t[rest[0]]], [e[rest[1]], t[rest[1]]], "-", color="orange", lw=1.5)
        ax.plot(e[rest[0]], e[rest[1]], "o", color="red", ms=3)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(f"voxel axis {rest[0]}", fontsize=7)
    ax.set_ylabel(f"voxel axis {rest[1]}", fontsize=7)
    ax.tick_params(labelsize=6)


def write_overlays(result: CaseRegistration, cbct: Volume, plan: Plan, paths: dict[str, str | os.PathLike[str]],
                   overwrite: bool = False) -> list[Path]:
    """Render one PNG per level to ``paths[level]``; refuses existing files unless ``overwrite``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    centre = cbct.index_to_lps((np.array(cbct.shape, float) - 1)[None] / 2)[0]
    ax_axial = _axis_along(cbct, np.array([0.0, 0.0, 1.0]))
    ax_sag = _axis_along(cbct, np.array([1.0, 0.0, 0.0]))
    for lv, r in result.levels.items():
        out = Path(paths[lv])
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out}: already exists; refusing to overwrite (use --force)")
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), dpi=100)
        if r.accepted and r.T_cbct_preop is not None:
            T = r.T_cbct_preop
            pts = transform_points(T, result.preop_points_mm.get(lv, np.zeros((0, 3))))
            screws = [(transform_points(T, s.entry_mm).reshape(3), transform_points(T, s.target_mm).reshape(3))
                      for s in plan.screws_at(lv)]
            at_axial = np.mean([0.5 * (e + t) for e, t in screws], axis=0) if screws else pts.mean(axis=0)
            at_sag = pts.mean(axis=0) if len(pts) else at_axial
            q = r.quality
            head = (f"{lv} ACCEPTED  fitness {q.fitness:.2f}  RMSE {q.inlier_rmse_mm:.2f} mm  "
                    f"spread {q.multistart_spread_mm:.2f} mm  cond {q.condition_number:.0f}")
            _panel(axes[0], cbct, ax_axial, at_axial, pts, screws, "axial (through the screws)")
            _panel(axes[1], cbct, ax_sag, at_sag, pts, screws, "sagittal (through the level)")
        else:
            head = f"{lv} FAILED - not navigable"
            _panel(axes[0], cbct, ax_axial, centre, None, [], "CBCT centre (no accepted transform)")
            _panel(axes[1], cbct, ax_sag, centre, None, [], "CBCT centre")
            fig.text(0.5, 0.02, r.reason[:160], ha="center", fontsize=7, color="red", wrap=True)
        fig.suptitle(head, fontsize=9, color="green" if r.accepted else "red")
        fig.tight_layout(rect=(0, 0.05, 1, 0.95))
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        written.append(out)
    return written
