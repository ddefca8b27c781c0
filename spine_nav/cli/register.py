"""`spine-nav register`: per-vertebra CBCT-to-preop registration with the quality gate.

Writes result.json (levels -> status/reason/preop_to_cbct/quality figures), the registered
plan (``<stem>.registered_plan.json``, Reference frame, accepted levels only) and one overlay
PNG per level (``<stem>.overlay_<level>.png``) next to it. Progress per level on stderr.

Exit codes: 0 every level accepted; 3 some levels failed the gate (the file still lists the
accepted ones); 2 bad input (unreadable file, no bone, no labels, output exists without --force).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spine_nav.cli.common import fail, info

EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register preop CT + plan to an intraop CBCT, level by level",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preop", required=True, help="preop CT (NIfTI/NRRD/DICOM folder), PreopCT frame")
    p.add_argument("--labels", required=True, help="preop label map (same grid), one integer per vertebra")
    p.add_argument("--cbct", required=True, help="intraop CBCT; its affine maps into the Reference frame")
    p.add_argument("--plan", required=True, help="plan.json (PreopCT LPS mm; metadata.labels names the labels)")
    p.add_argument("--out", required=True, help="result.json to write")
    p.add_argument("--method", choices=("small_gicp", "open3d"), default="small_gicp",
                   help="per-level GICP implementation (default small_gicp; see bench registration)")
    p.add_argument("--no-overlays", action="store_true", help="do not render the overlay PNGs")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--override", action="append", default=[], metavar="LEVEL",
                   help="operator override: accept LEVEL although the gate refused it (repeatable; logged, "
                        "marked 'overridden' in result.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spine_nav.registration import RegistrationConfig, RegistrationError
    from spine_nav.registration.pipeline import register_case
    from spine_nav.registration.result_io import check_outputs_free, output_paths, save_result

    for name in ("preop", "labels", "cbct", "plan"):
        if not Path(getattr(args, name)).exists():
            return fail(f"--{name} {getattr(args, name)}: file not found")
    if Path(args.out).suffix.lower() != ".json":
        return fail(f"--out {args.out}: expected a .json file name")
    try:
        check_outputs_free(args.out, [], args.force)
    except FileExistsError as exc:
        return fail(str(exc))
    info(f"register: {args.preop} + {args.labels} -> {args.cbct} ({args.method})")
    try:
        overrides = [lv.strip().upper() for lv in args.override if lv.strip()]
        if overrides:
            info(f"OPERATOR OVERRIDE requested for {', '.join(overrides)}: a refused level there is accepted")
        result, inputs = register_case(args.preop, args.labels, args.cbct, args.plan,
                                       RegistrationConfig(method=args.method), progress=info,
                                       override_levels=overrides)
    except RegistrationError as exc:
        return fail(str(exc))
    levels = list(result.levels)
    try:
        check_outputs_free(args.out, levels, args.force)
        written = save_result(result, args.out, inputs={k: str(getattr(args, k)) for k in
                                                       ("preop", "labels", "cbct", "plan")},
                              overwrite=args.force)
        if not args.no_overlays:
            from spine_nav.registration.overlay import write_overlays

            paths = output_paths(args.out, levels)
            pngs = write_overlays(result, inputs["cbct"], inputs["plan"],
                                  {lv: paths[f"overlay_{lv}"] for lv in levels}, overwrite=args.force)
            info(f"overlays: {', '.join(p.name for p in pngs)}")
    except FileExistsError as exc:
        return fail(str(exc))
    failed = [lv for lv, r in result.levels.items() if not r.accepted]
    for lv, r in result.levels.items():
        if r.quality.overridden:
            info(f"OVERRIDDEN by operator: {lv} ({r.reason})")
    info(f"wrote {written['result']} and {written['registered_plan'].name}: "
         f"{len(levels) - len(failed)}/{len(levels)} levels accepted ({result.timings_s['total_s']:.2f} s)")
    if failed:
        info(f"FAILED levels (not navigable): {', '.join(failed)}")
        return EXIT_PARTIAL
    return EXIT_OK
