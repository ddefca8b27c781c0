"""`spine-nav plan`: check a screw plan on its preoperative CT.

* ``spine-nav plan report --plan plan.json --ct preop_ct.nii.gz [--json] [--out report.json]``:
  bone quality along each screw (table on stdout, or the JSON with ``--json``); the JSON
  report is also written to ``--out`` (default ``bone_quality.json`` next to the plan, refreshed
  on each run; an explicit ``--out`` is never overwritten without ``--force``).
* ``spine-nav plan render --plan plan.json --ct preop_ct.nii.gz --out DIR``: one PNG per screw.
* ``spine-nav plan convert --in A --out B``: spine_nav JSON <-> 3D Slicer ``.mrk.json``.

Plans may be spine_nav JSON or Slicer markups (by the ``.mrk.json`` suffix).
Exit codes: 0 done, 2 bad input (unreadable plan/CT, existing output without --force).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from spine_nav.cli.common import fail, info, print_json


def _load_any_plan(path: str):
    from spine_nav.plan import load_plan
    from spine_nav.plan.slicer import load_slicer_markups

    return load_slicer_markups(path) if path.lower().endswith(".mrk.json") else load_plan(path)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="bone-quality report, pictures and conversion of a screw plan")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION")
    psub.required = True

    r = psub.add_parser("report", help="bone quality along each planned screw")
    r.add_argument("--plan", required=True, help="plan.json or Slicer .mrk.json (PreopCT LPS)")
    r.add_argument("--ct", required=True, help="preoperative CT (NIfTI/NRRD/DICOM folder, HU)")
    r.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    r.add_argument("--out", default=None, help="JSON report path (default: bone_quality.json next to the plan)")
    r.add_argument("--threshold-hu", type=float, default=110.0,
                   help="low bone density threshold, 73-202 HU (default 110)")
    r.add_argument("--min-margin-mm", type=float, default=0.75, help="pedicle bone left per side (default 0.75)")
    r.add_argument("--png-dir", default=None, help="also render one PNG per screw here")
    r.add_argument("--force", action="store_true", help="overwrite existing report/PNGs")
    r.set_defaults(func=run_report)

    g = psub.add_parser("render", help="PNG slices through each planned screw")
    g.add_argument("--plan", required=True)
    g.add_argument("--ct", required=True)
    g.add_argument("--out", required=True, help="output folder for <screw id>.png")
    g.add_argument("--force", action="store_true")
    g.set_defaults(func=run_render)

    c = psub.add_parser("convert", help="convert spine_nav plan JSON <-> 3D Slicer markups (.mrk.json)")
    c.add_argument("--in", dest="src", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--coordinate-system", default="LPS", choices=("LPS", "RAS"),
                   help="for .mrk.json output (default LPS)")
    c.add_argument("--force", action="store_true")
    c.set_defaults(func=run_convert)


def _load_inputs(args: argparse.Namespace):
    from spine_nav.imaging import VolumeError, load_volume
    from spine_nav.plan import PlanError

    try:
        plan = _load_any_plan(args.plan)
        ct = load_volume(args.ct, frame=plan.frame)
    except (PlanError, VolumeError) as exc:
        return None, None, str(exc)
    return plan, ct, None


def run_report(args: argparse.Namespace) -> int:
    from spine_nav.plan import write_text_safely
    from spine_nav.plan.bone_quality import BoneQualityConfig, assess_plan, format_table

    try:
        cfg = BoneQualityConfig(low_hu_threshold=args.threshold_hu, min_margin_mm=args.min_margin_mm)
    except ValueError as exc:
        return fail(str(exc))
    plan, ct, err = _load_inputs(args)
    if err:
        return fail(err)
    report = {"plan": str(args.plan), "ct": str(args.ct), **assess_plan(ct, plan, cfg)}
    # an explicit --out is protected like any output; the default report next to the plan is
    # derived data that this command owns, so it is refreshed (and said so on stderr)
    out = Path(args.out) if args.out else Path(args.plan).parent / "bone_quality.json"
    replace_default = args.out is None and out.exists()
    try:
        write_text_safely(out, json.dumps(report, indent=2) + "\n", overwrite=args.force or replace_default)
        if args.png_dir:
            from spine_nav.plan.render import notes_from_report, render_plan

            render_plan(ct, plan, args.png_dir, overwrite=args.force, notes=notes_from_report(report))
    except FileExistsError as exc:
        return fail(str(exc))
    info(f"plan report: {'refreshed' if replace_default else 'wrote'} {out}")
    if args.json:
        print_json(report)
    else:
        print(format_table(report))
    return 0


def run_render(args: argparse.Namespace) -> int:
    from spine_nav.plan.render import render_plan

    plan, ct, err = _load_inputs(args)
    if err:
        return fail(err)
    try:
        paths = render_plan(ct, plan, args.out, overwrite=args.force)
    except FileExistsError as exc:
        return fail(str(exc))
    for p in paths:
        print(p)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from spine_nav.plan import PlanError, save_plan
    from spine_nav.plan.slicer import save_slicer_markups

    try:
        plan = _load_any_plan(args.src)
        if args.out.lower().endswith(".mrk.json"):
            path = save_slicer_markups(plan, args.out, args.coordinate_system, overwrite=args.force)
        else:
            path = save_plan(plan, args.out, overwrite=args.force)
    except (PlanError, FileExistsError) as exc:
        return fail(str(exc))
    print(path)
    return 0
