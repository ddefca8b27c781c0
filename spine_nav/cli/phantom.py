"""`spine-nav phantom`: write a synthetic lumbar spine case (preop CT, labels, CBCT, plan, ground truth).

Exit codes: 0 written, 2 bad input (unknown level, existing files without --force).
"""
from __future__ import annotations

import argparse

from spine_nav.cli.common import fail, info, print_json


def parse_levels(text: str) -> tuple[str, ...]:
    """``L1-L5`` (a range) or ``L3,L4`` (a list) -> level names, superior first."""
    from spine_nav.phantom.anatomy import LUMBAR_LEVELS

    text = text.strip().upper()
    if "-" in text:
        a, b = (t.strip() for t in text.split("-", 1))
        if a not in LUMBAR_LEVELS or b not in LUMBAR_LEVELS:
            raise ValueError(f"--levels {text}: range ends must be lumbar levels L1-L5")
        i, j = LUMBAR_LEVELS.index(a), LUMBAR_LEVELS.index(b)
        if j < i:
            raise ValueError(f"--levels {text}: give the superior level first (e.g. L1-L5)")
        return LUMBAR_LEVELS[i:j + 1]
    return tuple(t.strip() for t in text.split(",") if t.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantom", help="generate a synthetic lumbar spine case with ground truth")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed -> identical files)")
    p.add_argument("--levels", default="L1-L5", help="levels, e.g. L1-L5 or L3,L4 (default L1-L5)")
    p.add_argument("--bone", default="normal", choices=("normal", "osteopenic", "osteoporotic"))
    p.add_argument("--voxel-mm", type=float, default=None, help="preop CT voxel size (default 0.7)")
    p.add_argument("--cbct-voxel-mm", type=float, default=None, help="CBCT voxel size (default 1.0)")
    p.add_argument("--metal", action="store_true", help="metal clamp with streak artefacts in the CBCT")
    p.add_argument("--force", action="store_true", help="overwrite existing case files")
    p.add_argument("--json", action="store_true", help="print file paths and timings as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spine_nav.phantom.case import PhantomError, generate_case

    try:
        levels = parse_levels(args.levels)
        case = generate_case(args.out, seed=args.seed, levels=levels, bone=args.bone, voxel_mm=args.voxel_mm,
                             cbct_voxel_mm=args.cbct_voxel_mm, metal=args.metal, overwrite=args.force,
                             progress=info)
    except (PhantomError, ValueError, FileExistsError) as exc:
        return fail(str(exc))
    summary = {
        "out_dir": str(case.out_dir),
        "files": {k: str(getattr(case, k)) for k in ("preop_ct", "preop_labels", "cbct", "plan", "ground_truth")},
        "levels": list(levels), "seed": args.seed, "bone": args.bone,
        "timings_s": {k: round(v, 3) for k, v in case.timings_s.items()},
    }
    if args.json:
        print_json(summary)
    else:
        for k, v in summary["files"].items():
            print(f"{k:13s} {v}")
        print(f"generated {len(levels)} levels in {case.timings_s['total_s']:.1f} s")
    return 0
