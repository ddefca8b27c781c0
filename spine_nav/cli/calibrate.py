"""`spine-nav calibrate pivot`: tool tip offset by pivot calibration (recorded case.jsonl or live stream)."""
from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from spine_nav.cli.common import fail, info, print_json
from spine_nav.geometry import invert
from spine_nav.plan.io import write_text_safely
from spine_nav.tracking.pivot import PivotError, pivot_calibration
from spine_nav.tracking.record import CaseFormatError, read_case


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="tool calibration (pivot)")
    what = p.add_subparsers(dest="what", metavar="KIND")
    what.required = True
    pv = what.add_parser("pivot", help="tip offset of a tool pivoted about its tip; reports the RMS residual")
    src = pv.add_mutually_exclusive_group(required=True)
    src.add_argument("--case", help="case.jsonl recorded while pivoting")
    src.add_argument("--connect", metavar="HOST:PORT", help="live: collect from a tracker server")
    pv.add_argument("--device", default="StylusToTracker", help="tool device (XToTracker)")
    pv.add_argument("--reference-device", default="ReferenceToTracker",
                    help="calibrate in this frame (tool and reference samples paired by timestamp, so patient "
                         "or camera motion does not bias the fit); '' = tracker frame")
    pv.add_argument("--duration", type=float, default=20.0, help="live collection time (s)")
    pv.add_argument("--tdata", action="store_true", help="live: send STT_TDATA after connecting")
    pv.add_argument("--min-span-deg", type=float, default=20.0, help="reject smaller rotation spans")
    pv.add_argument("--max-rms-mm", type=float, default=1.0, help="exit 1 if the RMS residual is larger")
    pv.add_argument("--out", help="also write the result JSON here (tip_offset_mm for config/nodes.yaml)")
    pv.add_argument("--force", action="store_true", help="overwrite --out")
    pv.set_defaults(func=run_pivot)


def tool_poses(records: list[dict], device: str, reference_device: str) -> list[np.ndarray]:
    """``T_reference_tool`` per tool sample that has a reference sample with the same timestamp
    (or ``T_tracker_tool`` when ``reference_device`` is empty or never present)."""
    tools = [r for r in records if r["device"] == device and r.get("matrix") is not None]
    refs = {r["timestamp_s"]: np.asarray(r["matrix"]) for r in records
            if reference_device and r["device"] == reference_device and r.get("matrix") is not None}
    if not refs:
        return [np.asarray(r["matrix"]) for r in tools]
    return [invert(refs[r["timestamp_s"]]) @ np.asarray(r["matrix"]) for r in tools if r["timestamp_s"] in refs]


def _collect_live(args) -> list[dict]:
    from spine_nav.cli.record import parse_host_port
    from spine_nav.tracking import codec
    from spine_nav.tracking.record import message_to_records
    from spine_nav.tracking.transport import IgtlClient

    host, port = parse_host_port(args.connect)
    records, lock = [], threading.Lock()

    def on_msg(msg, _t, _c):
        recs = message_to_records(msg, time.time())
        with lock:
            records.extend(recs)

    stt = codec.encode_stt_tdata(0)
    client = IgtlClient(host, port, on_msg, on_connect=(lambda c: c.send(stt)) if args.tdata else None).start()
    info(f"calibrate pivot: pivot the tool about its tip now; collecting {args.device} for {args.duration:g} s")
    time.sleep(args.duration)
    client.close()
    with lock:
        return list(records)


def run_pivot(args: argparse.Namespace) -> int:
    try:
        records = read_case(args.case) if args.case else _collect_live(args)
        poses = tool_poses(records, args.device, args.reference_device)
    except (CaseFormatError, ValueError, OSError) as exc:
        return fail(str(exc))
    if not poses:
        return fail(f"no {args.device} poses in {args.case or args.connect}")
    try:
        res = pivot_calibration(poses, min_span_deg=args.min_span_deg)
    except (PivotError, ValueError) as exc:
        return fail(f"pivot calibration rejected: {exc}", 1)
    out = {"device": args.device, "frame": args.reference_device or "Tracker", **res.to_dict(), "method": "algebraic least squares (PLUS / scikit-surgery)"}
    if args.out:
        try:
            write_text_safely(args.out, json.dumps(out, indent=2) + "\n", overwrite=args.force)
        except FileExistsError as exc:
            return fail(str(exc))
    print_json(out)
    if res.rms_residual_mm > args.max_rms_mm:
        info(f"calibrate pivot: RMS residual {res.rms_residual_mm:.3f} mm > {args.max_rms_mm} mm: repeat the pivot")
        return 1
    return 0
