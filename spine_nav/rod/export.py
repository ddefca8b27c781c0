"""Rod outputs: rods.json, the printable instruction sheet (Markdown + HTML), a PNG and one STL per rod.

rods.json (schema ``spine_nav.rods`` v1; mm and deg in the frame of the plan the screws are in)::

    {"schema": "spine_nav.rods", "schema_version": 1, "source": "...", "frame": "PreopCT",
     "material": "ti", "diameter_mm": 5.5, "seat_offset_mm": 10.0, "params": {...},
     "sides": {"left": {"seats": [{"screw_id", "level", "point_mm", "gap_mm", "angulation_deg"}],
                        "start_mm", "start_dir", "start_normal",
                        "steps": [{"feed_mm", "rotate_deg", "bend_deg", "commanded_bend_deg"}],
                        "rod_length_mm", "cut_length_mm", "max_seat_gap_mm", "max_seat_gap_sheet_mm",
                        "min_bend_radius_mm", "material_min_bend_radius_mm", "warnings", ...}},
     "skipped": {"right": "why"}, "warnings": [...]}

Step semantics: :mod:`spine_nav.rod.bending`. ``max_seat_gap_sheet_mm`` is the gap when the rod is
bent from the sheet's rounded numbers (0.1 mm, 0.1 deg) instead of the JSON's.
"""
from __future__ import annotations

import html
import json
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spine_nav.rod.bending import round_steps
from spine_nav.rod.design import Rod, RodParams, RodSet

SCHEMA = "spine_nav.rods"
#: Files a rod job writes into its output folder (checked before writing: no overwrite without force).
OUTPUT_NAMES = ("rods.json", "rods.md", "rods.html", "rods.png")


def rods_document(rods: RodSet, source: str, frame: str, seat_offset_mm: float, params: RodParams) -> dict[str, Any]:
    any_rod = next(iter(rods.rods.values()))
    return {"schema": SCHEMA, "schema_version": 1, "source": source, "frame": frame,
            "material": any_rod.stock.material.key, "material_name": any_rod.stock.material.name,
            "diameter_mm": any_rod.stock.diameter_mm, "seat_offset_mm": seat_offset_mm,
            "springback_deg": round(any_rod.stock.springback_deg, 3), "params": asdict(params),
            "sides": {side: rod.to_dict() for side, rod in rods.rods.items()},
            "skipped": dict(rods.skipped), "warnings": rods.warnings}


def _sheet_rows(rod: Rod) -> list[list[str]]:
    rows, pos = [], 0.0
    for i, (st, pr) in enumerate(zip(rod.steps, round_steps(rod.steps)), 1):
        pos += st.feed_mm
        last = i == len(rod.steps)
        rows.append([str(i), f"{pr.feed_mm:.1f}", f"{pos:.1f}",
                     "—" if last else f"{pr.rotate_deg:+.1f}",
                     "cut" if last else f"{pr.commanded_bend_deg:.1f}",
                     "—" if last else f"{st.bend_deg:.2f}"])
    return rows


SHEET_HEAD = ["step", "feed (mm)", "mark at (mm)", "rotate (deg)", "bend: command (deg)", "rod keeps (deg)"]


def _summary(rod: Rod) -> list[str]:
    d = rod.to_dict()
    return [f"{rod.stock.material.name}, {rod.stock.diameter_mm:g} mm; cut {d['cut_length_mm']:.0f} mm "
            f"(rod {d['rod_length_mm']:.1f} mm); {d['bends']} bends, largest {d['max_bend_deg']:.1f} deg, "
            f"closest {d['min_bend_spacing_mm']:.1f} mm apart; springback +{rod.stock.springback_deg:.2f} deg per bend",
            f"max seat gap {d['max_seat_gap_mm']:.3f} mm as specified, {d['max_seat_gap_sheet_mm']:.3f} mm "
            f"bent from this sheet's rounded numbers; tightest bend radius "
            f"{'—' if d['min_bend_radius_mm'] is None else format(d['min_bend_radius_mm'], '.0f')} mm "
            f"(material minimum {d['material_min_bend_radius_mm']:.0f} mm)",
            "Seats (cranial first): " + ", ".join(f"{s.screw_id} gap {g:.3f} mm, head {a:.1f} deg"
                                                  for s, g, a in zip(rod.seats, rod.seat_gaps_mm,
                                                                     rod.seat_angulation_deg))]


HOW_TO = ("Start at the cranial end. Each step: feed the rod by 'feed', rotate it about its own axis by "
          "'rotate' (+ = clockwise seen from behind the rod, looking in the feed direction), then bend by 'command' "
          "(the rod springs back to 'rod keeps'). The last feed is where to cut.")


def sheet_markdown(rods: RodSet, title: str) -> str:
    lines = [f"# Rod bending sheet: {title}", "", HOW_TO, ""]
    for side, rod in rods.rods.items():
        lines += [f"## {side} rod", ""] + [f"- {s}" for s in _summary(rod)] + [""]
        lines += ["| " + " | ".join(SHEET_HEAD) + " |", "|" + " --- |" * len(SHEET_HEAD)]
        lines += ["| " + " | ".join(r) + " |" for r in _sheet_rows(rod)]
        if rod.warnings:
            lines += ["", "**Warnings**", ""] + [f"- {w}" for w in rod.warnings]
        lines.append("")
    for why in rods.skipped.values():
        lines += [f"**{why}**", ""]
    return "\n".join(lines)


def sheet_html(rods: RodSet, title: str) -> str:
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>Rod bending sheet</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #444;padding:4px 10px;text-align:right}.w{color:#b00}</style></head><body>",
           f"<h1>Rod bending sheet: {e(title)}</h1><p>{e(HOW_TO)}</p>"]
    for side, rod in rods.rods.items():
        out.append(f"<h2>{e(side)} rod</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in _summary(rod)) + "</ul>")
        out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in SHEET_HEAD) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _sheet_rows(rod)]
        out.append("</table>")
        out += [f"<p class='w'>{e(w)}</p>" for w in rod.warnings]
    out += [f"<p class='w'>{e(w)}</p>" for w in rods.skipped.values()]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def plot_rods(rods: RodSet, screws: Sequence[Any], path: Path, title: str = "", ct: Any = None) -> Path:
    """Rods over the spine in two views (coronal: x-z, sagittal: y-z, plan frame): screws, seats, bend points.

    ``ct`` (optional :class:`~spine_nav.imaging.volume.Volume`, axis-aligned) is drawn as maximum
    intensity projections behind the rods.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 7))
    views = ((0, "x (mm, patient left +)"), (1, "y (mm, posterior +)"))
    for ax, (h, label) in zip(axes, views):
        if ct is not None:
            A = ct.affine_lps
            proj = ct.data.max(axis=1 - h)  # over y for coronal (x-z), over x for sagittal (y-z)
            lo = A[:3, 3]
            hi = lo + np.diag(A[:3, :3]) * (np.array(ct.shape) - 1)
            ax.imshow(proj.T, origin="lower", cmap="gray", vmin=-200, vmax=1500, aspect="equal",
                      extent=(lo[h], hi[h], lo[2], hi[2]))
        for s in screws:
            e, t = np.asarray(s.entry_mm), np.asarray(s.target_mm)
            ax.plot([e[h], t[h]], [e[2], t[2]], color="0.55", lw=4, solid_capstyle="round", zorder=2)
        for side, rod in rods.rods.items():
            c = "C0" if side == "left" else "C3"
            v = rod.vertices
            ax.plot(v[:, h], v[:, 2], color=c, lw=2.5, label=f"{side} rod", zorder=3)
            ax.plot(v[1:-1, h], v[1:-1, 2], "x", color="k", ms=6, zorder=4)
            sp = np.array([s.point_mm for s in rod.seats])
            ax.plot(sp[:, h], sp[:, 2], "o", mfc="none", mec=c, ms=9, mew=1.5, zorder=4)
            for s in rod.seats:  # sagittal: both sides overlap, name the level once
                if h == 0 or side == next(iter(rods.rods)):
                    ax.annotate(s.screw_id if h == 0 else s.level, (s.point_mm[h], s.point_mm[2]),
                                textcoords="offset points", xytext=(8, 0), fontsize=7, color=c if h == 0 else "k")
        ax.set_xlabel(label)
        ax.set_ylabel("z (mm, cranial +)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    axes[0].set_title("coronal (x-z)")
    axes[1].set_title("sagittal (y-z)")
    axes[0].plot([], [], "x", color="k", label="bend point")
    axes[0].plot([], [], "o", mfc="none", mec="k", label="seat")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "rods")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tube_mesh(vertices: np.ndarray, radius_mm: float, sides: int = 24) -> np.ndarray:
    """Triangles (M, 3, 3) of a closed tube of ``radius_mm`` around the polyline (mitred joints, flat caps)."""
    P = np.asarray(vertices, float)
    d = np.diff(P, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ref = np.eye(3)[int(np.argmin(np.abs(d[0])))]
    u = np.cross(d[0], ref)
    u /= np.linalg.norm(u)
    ang = np.linspace(0.0, 2 * np.pi, sides, endpoint=False)
    rings = []
    for i in range(len(P)):
        din = d[max(i - 1, 0)]
        dout = d[min(i, len(d) - 1)]
        u_in = u
        axis = np.cross(din, dout)
        if np.linalg.norm(axis) > 1e-12:  # parallel transport of u onto the outgoing segment
            axis /= np.linalg.norm(axis)
            c = float(np.clip(din @ dout, -1, 1))
            s = float(np.sqrt(max(0.0, 1 - c * c)))
            u = u * c + np.cross(axis, u) * s + axis * (axis @ u) * (1 - c)
        v = np.cross(din, u_in)
        ring = P[i] + radius_mm * (np.outer(np.cos(ang), u_in) + np.outer(np.sin(ang), v))
        m = din + dout
        m /= np.linalg.norm(m)
        shift = ((ring - P[i]) @ m) / float(din @ m)
        rings.append(ring - np.outer(shift, din))
    tris = []
    for a, b in zip(rings[:-1], rings[1:]):
        for k in range(sides):
            k2 = (k + 1) % sides
            tris += [(a[k], a[k2], b[k2]), (a[k], b[k2], b[k])]
    for ring, centre, flip in ((rings[0], P[0], True), (rings[-1], P[-1], False)):
        for k in range(sides):
            k2 = (k + 1) % sides
            tris.append((centre, ring[k2], ring[k]) if flip else (centre, ring[k], ring[k2]))
    return np.array(tris)


def write_stl(path: Path, triangles: np.ndarray, name: str = "rod") -> Path:
    """Binary STL of ``triangles`` (mm)."""
    tri = np.asarray(triangles, float)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-18)
    buf = bytearray(name.encode()[:80].ljust(80, b" ")) + struct.pack("<I", len(tri))
    rec = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["n"], rec["v"] = n, tri
    path.write_bytes(bytes(buf) + rec.tobytes())
    return path


def existing_outputs(out_dir: Path, sides: Sequence[str]) -> list[Path]:
    names = list(OUTPUT_NAMES) + [f"rod_{s}.stl" for s in ("left", "right")]
    return [out_dir / n for n in names if (out_dir / n).exists()]


def write_outputs(rods: RodSet, out_dir: Path, doc: dict[str, Any], screws: Sequence[Any], title: str,
                  ct: Any = None) -> dict[str, Path]:
    """Write rods.json, rods.md, rods.html, rods.png and rod_<side>.stl into ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "rods.json", "sheet_md": out_dir / "rods.md", "sheet_html": out_dir / "rods.html",
             "png": out_dir / "rods.png"}
    paths["json"].write_text(json.dumps(doc, indent=2) + "\n")
    paths["sheet_md"].write_text(sheet_markdown(rods, title) + "\n")
    paths["sheet_html"].write_text(sheet_html(rods, title))
    plot_rods(rods, screws, paths["png"], title, ct)
    for side, rod in rods.rods.items():
        paths[f"stl_{side}"] = write_stl(out_dir / f"rod_{side}.stl",
                                         tube_mesh(rod.vertices, 0.5 * rod.stock.diameter_mm), f"{side} rod")
    return paths
