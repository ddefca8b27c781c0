"""`spine-nav bench NAME [--json]`: run a benchmark (see :mod:`spine_nav.bench`)."""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from spine_nav.bench import BENCHES
from spine_nav.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its numbers (JSON with --json)")
    names = sub_bench = p.add_subparsers(dest="bench_name", metavar="NAME")
    sub_bench.required = True
    for name, module in BENCHES.items():
        mod = importlib.import_module(module)
        bp = names.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        bp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        bp.add_argument("--out", help="also write the JSON to this file")
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(bp)
        bp.set_defaults(func=lambda args, mod=mod: _run(mod, args))


def _run(mod, args: argparse.Namespace) -> int:
    result = mod.run(args).to_dict()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print_json(result)
    else:
        print(f"bench {result['bench']}")
        for k, v in result["metrics"].items():
            print(f"  {k:32s} {v}")
        for base, vals in result["baselines"].items():
            for k, v in vals.items():
                print(f"  baseline {base}.{k:20s} {v}")
    return 0
