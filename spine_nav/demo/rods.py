"""The rods of the demo's placed screws, for the case report (report.json ``rods``, report.md section).

Placed screw (PreopCT, mm): tip = the drill's true tip, axis = its true axis (as the report's
placement errors use), entry = tip - planned depth * axis; then :mod:`spine_nav.rod` with the
defaults (titanium 5.5 mm, seat 10 mm above the entry, bends <= 15 deg, >= 10 mm apart). The rods'
files (sheet, PNG, STL) go to ``<out>/rods/``. A problem with the rods never fails the case: it is
recorded as ``rods.error``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from spine_nav.plan import Plan, Screw

MATERIAL, DIAMETER_MM = "ti", 5.5


def placed_screws(plan: Plan, placed: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  results: Sequence[Any]) -> list[Screw]:
    """Screws as placed (status ``placed``), in the plan's frame."""
    out = []
    for r in results:
        if r.status != "placed" or r.id not in placed:
            continue
        planned = plan.screw(r.id)
        tip, axis = (np.asarray(v, float) for v in placed[r.id])
        axis = axis / np.linalg.norm(axis)
        out.append(Screw(planned.id, planned.level, planned.side, tip - planned.depth_mm * axis, tip,
                         planned.diameter_mm, planned.length_mm))
    return out


def case_rods(plan: Plan, placed: Mapping[str, tuple[np.ndarray, np.ndarray]], results: Sequence[Any],
              out_dir: Path) -> dict[str, Any]:
    """report.json's ``rods``: the placed screws, the rods document (or ``error``) and the files written."""
    from spine_nav.rod import RodError
    from spine_nav.rod.design import RodParams, design_rods
    from spine_nav.rod.export import rods_document, write_outputs
    from spine_nav.rod.seats import SEAT_OFFSET_MM, seats_by_side
    from spine_nav.rod.springback import rod_stock

    screws = placed_screws(plan, placed, results)
    out: dict[str, Any] = {"frame": plan.frame, "placed_screws": [s.to_dict() for s in screws]}
    try:
        rods = design_rods(seats_by_side(screws), ("left", "right"), rod_stock(MATERIAL, DIAMETER_MM), RodParams())
    except RodError as exc:
        out["error"] = str(exc)
        return out
    doc = rods_document(rods, "demo placed screws", plan.frame, SEAT_OFFSET_MM, RodParams())
    paths = write_outputs(rods, Path(out_dir) / "rods", doc, screws, f"placed screws, {MATERIAL} {DIAMETER_MM:g} mm")
    out.update(doc)
    out["files"] = {k: str(Path("rods") / p.name) for k, p in paths.items()}
    return out


def rods_section(rods: Mapping[str, Any]) -> list[str]:
    """report.md lines for the rods."""
    lines = ["", "## Rods (placed screws)", ""]
    if rods.get("error"):
        return lines + [f"No rod: {rods['error']}"]
    lines += ["| side | seats | cut (mm) | bends | max bend (deg) | max seat gap (mm) | warnings |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for side, r in rods.get("sides", {}).items():
        lines.append(f"| {side} | {', '.join(s['screw_id'] for s in r['seats'])} | {r['cut_length_mm']:.0f} | "
                     f"{r['bends']} | {r['max_bend_deg']:.1f} | {r['max_seat_gap_mm']:.3f} | "
                     f"{'; '.join(r['warnings']) or '—'} |")
    lines += [f"- {why}" for why in rods.get("skipped", {}).values()]
    files = rods.get("files", {})
    if files:
        lines += ["", f"Bending sheet: [{files['sheet_md']}]({files['sheet_md']}); STL per rod in rods/.", "",
                  f"![rods]({files['png']})"]
    return lines
