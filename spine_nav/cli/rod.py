"""`spine-nav rod`: patient-specific rods from placed (demo report) or planned (plan) screws.

Writes rods.json, rods.md / rods.html (the bending sheet), rods.png and rod_<side>.stl into --out
(see :mod:`spine_nav.rod.export`). Exit codes: 0 written, 2 bad input (one line naming the screws or
the field; existing outputs without --force), 3 written with warnings (a limit exceeded or a side
without a rod; the warnings are in the sheet, rods.json and on stderr).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from spine_nav.cli.common import fail, info, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from spine_nav.rod.contour import OVERHANG_MM
    from spine_nav.rod.design import MAX_ANGULATION_DEG, MAX_BEND_DEG, MIN_BEND_SPACING_MM
    from spine_nav.rod.seats import SEAT_OFFSET_MM

    p = sub.add_parser("rod", help="rod contour and bender instructions from placed or planned screws")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--report", help="demo report.json (its placed screws)")
    src.add_argument("--plan", help="plan.json (its planned screws)")
    p.add_argument("--side", default="both", choices=("left", "right", "both"))
    p.add_argument("--material", default="ti", help="ti, cocr or ss (default ti)")
    p.add_argument("--diameter-mm", type=float, default=5.5, help="rod diameter, 5.5 or 6.0 (default 5.5)")
    p.add_argument("--seat-offset-mm", type=float, default=SEAT_OFFSET_MM,
                   help=f"rod centre above the entry point along the screw axis (default {SEAT_OFFSET_MM:g})")
    p.add_argument("--min-bend-spacing-mm", type=float, default=MIN_BEND_SPACING_MM)
    p.add_argument("--max-bend-deg", type=float, default=MAX_BEND_DEG)
    p.add_argument("--overhang-mm", type=float, default=OVERHANG_MM)
    p.add_argument("--max-angulation-deg", type=float, default=MAX_ANGULATION_DEG,
                   help="polyaxial head angulation, half cone (default %(default)g)")
    p.add_argument("--springback-deg", type=float, default=None,
                   help="calibrated springback per bend (default: the material model)")
    p.add_argument("--ct", help="CT volume to draw behind the rods "
                                "(default: preop_ct.nii.gz next to --plan, or in case/ next to --report)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite an earlier result in --out")
    p.add_argument("--json", action="store_true", help="print rods.json on stdout")
    p.set_defaults(func=run)


def screws_from_report(path: Path):
    """(placed screws, frame) from a demo report.json (its ``rods.placed_screws``)."""
    from spine_nav.plan.io import plan_from_dict

    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: report not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the report ({exc})") from None
    rods = data.get("rods") if isinstance(data, dict) else None
    if not isinstance(rods, dict) or not isinstance(rods.get("placed_screws"), list):
        raise ValueError(f"{path}: no 'rods.placed_screws' (placed screw geometry); re-run the demo with this version")
    plan = plan_from_dict({"screws": rods["placed_screws"], "frame": rods.get("frame", "PreopCT")},
                          source=f"{path}: rods.placed_screws")
    return list(plan.screws), plan.frame


def run(args: argparse.Namespace) -> int:
    from spine_nav.plan import PlanError
    from spine_nav.plan.io import load_plan
    from spine_nav.rod import RodError
    from spine_nav.rod.design import RodParams, design_rods
    from spine_nav.rod.export import existing_outputs, rods_document, write_outputs
    from spine_nav.rod.seats import seats_by_side
    from spine_nav.rod.springback import rod_stock

    out = Path(args.out)
    sides = ("left", "right") if args.side == "both" else (args.side,)
    try:
        if args.plan:
            plan = load_plan(args.plan)
            screws, frame, source = list(plan.screws), plan.frame, str(args.plan)
        else:
            screws, frame = screws_from_report(Path(args.report))
            source = str(args.report)
        stock = rod_stock(args.material, args.diameter_mm, args.springback_deg)
        params = RodParams(args.min_bend_spacing_mm, args.max_bend_deg, args.overhang_mm, args.max_angulation_deg)
        rods = design_rods(seats_by_side(screws, args.seat_offset_mm), sides, stock, params)
    except (PlanError, RodError, ValueError) as exc:
        return fail(str(exc))
    existing = existing_outputs(out, sides)
    if existing and not args.force:
        return fail(f"{existing[0]}: an earlier result is there; refusing to overwrite (pass --force)")
    ct = None
    if args.ct and not Path(args.ct).is_file():
        return fail(f"--ct {args.ct}: file not found")
    if args.ct:
        ct_path = Path(args.ct)
    else:  # a case folder's CT: next to its plan, or the demo's copy of the case next to its report
        ct_path = Path(args.plan).parent / "preop_ct.nii.gz" if args.plan else \
            Path(args.report).parent / "case" / "preop_ct.nii.gz"
    if ct_path is not None and ct_path.exists():
        from spine_nav.imaging.volume_io import load_volume

        try:
            ct = load_volume(ct_path)
        except Exception as exc:  # the picture is optional: say why it has no CT
            info(f"rod: {ct_path}: not drawn ({exc})")
    doc = rods_document(rods, source, frame, args.seat_offset_mm, params)
    title = f"{Path(source).name}, {args.material} {args.diameter_mm:g} mm"
    paths = write_outputs(rods, out, doc, screws, title, ct)
    if args.json:
        print_json(doc)
    else:
        for side, r in doc["sides"].items():
            print(f"{side:5s} rod: cut {r['cut_length_mm']:.0f} mm, {r['bends']} bends "
                  f"(max {r['max_bend_deg']:.1f} deg), max seat gap {r['max_seat_gap_mm']:.3f} mm")
        for k, pth in paths.items():
            print(f"{k:11s} {pth}")
    for w in rods.warnings:
        info(f"rod: warning: {w}")
    return 3 if rods.warnings else 0
