"""`spine-nav replay case.jsonl|case.seq.mha --serve PORT [--speed X]`: play a recording back as an OpenIGTLink server.

A PLUS sequence file (``.seq.mha`` / ``.igs.mha``, see :mod:`spine_nav.tracking.plus_sequence`) is sent as one
TRANSFORM per tracked tool and frame; its bad frames are skipped, counted and named, never sent."""
from __future__ import annotations

import argparse
import time

from spine_nav.cli.common import fail, info
from spine_nav.tracking.plus_sequence import (SequenceFormatError, is_sequence_path, read_sequence,
                                              sequence_to_items)
from spine_nav.tracking.record import CaseFormatError, ReplayItem, read_case, records_to_messages
from spine_nav.tracking.transport import IgtlServer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="serve a case.jsonl recording over OpenIGTLink to every client")
    p.add_argument("case", help="case.jsonl from `spine-nav record`, or a PLUS sequence file (.seq.mha / .igs.mha)")
    p.add_argument("--serve", type=int, required=True, metavar="PORT", help="listen on this port")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--allow", default=None, help="peers allowed to connect: addresses or networks, comma-separated "
                   "(default loopback only; '*' = anyone)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed factor (0: as fast as possible)")
    p.add_argument("--wait-client-s", type=float, default=30.0, help="wait this long for a first client")
    p.add_argument("--loop", action="store_true", help="start over at the end (until Ctrl-C)")
    p.set_defaults(func=run)


def replay(records: list[dict] | list[ReplayItem], server: IgtlServer, speed: float = 1.0) -> int:
    """Send every record (case.jsonl lines, or ready :class:`ReplayItem`) to every connected client,
    paced by the recorded receive times / speed."""
    items = [r for r in records if isinstance(r, ReplayItem)] or list(records_to_messages(records))
    if not items:
        return 0
    t_rec0, t0 = items[0].received_s, time.monotonic()
    for it in items:
        if speed > 0:
            delay = (it.received_s - t_rec0) / speed - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
        server.broadcast(it.data)
    return len(items)


def run(args: argparse.Namespace) -> int:
    if args.speed < 0:
        return fail(f"--speed must be >= 0, got {args.speed}")
    try:
        if is_sequence_path(args.case):
            seq = read_sequence(args.case)
            for _idx, why in seq.bad_frames[:5]:
                info(f"replay: skipped bad frame: {why}")
            if seq.bad_frames:
                info(f"replay: {len(seq.bad_frames)} bad frame(s) skipped, {len(seq.frames)} kept")
            records = sequence_to_items(seq)
        else:
            records = read_case(args.case)
        server = IgtlServer(args.serve, host=args.host, allowed_peers=args.allow).start()
    except (CaseFormatError, SequenceFormatError, OSError, ValueError) as exc:
        return fail(str(exc))
    try:
        info(f"replay: {args.case} ({len(records)} lines) on port {server.port}; waiting for a client")
        deadline = time.monotonic() + args.wait_client_s
        while server.client_count == 0:
            if time.monotonic() > deadline:
                return fail(f"no client connected to port {server.port} within {args.wait_client_s:g} s", 1)
            time.sleep(0.02)
        while True:
            n = replay(records, server, args.speed)
            info(f"replay: sent {n} messages to {server.client_count} client(s)")
            if not args.loop:
                break
        time.sleep(0.2)  # let the last bytes leave before closing
    finally:
        server.close()
    return 0
