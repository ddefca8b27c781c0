"""Pictures of a plan on its CT: one PNG per screw (no ROS; matplotlib Agg, offscreen).

Each PNG has two oblique slices resampled through the screw axis (PreopCT LPS mm):
"axial" (the plane holding the axis and the axial-plane perpendicular) and
"sagittal" (the axis and the perpendicular toward superior). The planned screw is
drawn as its outline (diameter) with entry (circle) and target (cross), so a
person can check by eye that it stays inside the pedicle.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy.ndimage import map_coordinates

from spine_nav.geometry import axial_perpendicular_frame
from spine_nav.imaging.volume import Volume
from spine_nav.plan.model import Plan, Screw


def oblique_slice(ct: Volume, origin: np.ndarray, u: np.ndarray, v: np.ndarray, half_u_mm: float,
                  half_v_mm: float, pixel_mm: float = 0.4) -> np.ndarray:
    """HU on the plane ``origin + a u + b v`` (|a| <= half_u, |b| <= half_v); array [b, a]."""
    a = np.arange(-half_u_mm, half_u_mm + 1e-9, pixel_mm)
    b = np.arange(-half_v_mm, half_v_mm + 1e-9, pixel_mm)
    A, B = np.meshgrid(a, b)
    pts = origin + A.reshape(-1, 1) * u + B.reshape(-1, 1) * v
    ijk = ct.lps_to_index(pts)
    vals = map_coordinates(ct.data, ijk.T, output=np.float32, order=1, mode="constant", cval=-1000.0)
    return vals.reshape(A.shape)


def render_screw(ct: Volume, screw: Screw, path: str | os.PathLike[str], note: str = "",
                 window: tuple[float, float] = (-250.0, 1250.0)) -> Path:
    """Write one PNG with the two slices through ``screw``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = screw.direction
    n, m = axial_perpendicular_frame(d)
    mid = 0.5 * (screw.entry_mm + screw.target_mm)
    half_u = 0.5 * screw.depth_mm + 15.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (title, perp) in zip(axes, (("axial (axis x transverse)", n), ("sagittal (axis x superior)", m))):
        img = oblique_slice(ct, mid, d, perp, half_u, 25.0)
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
                  extent=(-half_u, half_u, -25.0, 25.0))
        e, t = -0.5 * screw.depth_mm, 0.5 * screw.depth_mm
        r = 0.5 * screw.diameter_mm
        ax.plot([e, t, t, e, e], [-r, -r, r, r, -r], color="tab:red", lw=1.2)
        ax.plot([e, t], [0, 0], color="tab:orange", lw=0.8, ls="--")
        ax.plot([e], [0], "o", color="yellow", ms=5)
        ax.plot([t], [0], "x", color="yellow", ms=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("along screw (mm, entry -> target)")
        ax.set_ylabel("mm")
    fig.suptitle(f"{screw.id}: {screw.diameter_mm:g} x {screw.length_mm:g} mm  {note}", fontsize=10)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def render_plan(ct: Volume, plan: Plan, out_dir: str | os.PathLike[str], overwrite: bool = False,
                notes: Mapping[str, str] | None = None) -> list[Path]:
    """One PNG per screw in ``out_dir`` (``<screw id>.png``); refuses to overwrite unless asked."""
    out = Path(out_dir)
    paths = [out / f"{s.id}.png" for s in plan.screws]
    if not overwrite:
        for p in paths:
            if p.exists():
                raise FileExistsError(f"{p}: already exists; refusing to overwrite (pass overwrite=True / --force)")
    notes = notes or {}
    return [render_screw(ct, s, p, notes.get(s.id, "")) for s, p in zip(plan.screws, paths)]


def notes_from_report(report: Mapping[str, Any]) -> dict[str, str]:
    """Short per-screw captions (flags) from a bone-quality report."""
    return {r["id"]: (", ".join(r["flags"]) or "no flags") + f"  body {r['body_hu']:.0f} HU" for r in report["screws"]}
