"""`spine-nav record`: keep every OpenIGTLink sample of a stream in case.jsonl (see spine_nav.tracking.record)
or, with ``--format plus``, in a PLUS sequence file (see spine_nav.tracking.plus_sequence).

Both formats keep only poses that pass the bridge's validation (one check for every OpenIGTLink
consumer); malformed poses and messages the decoder dropped (bad CRC) are counted and, in case.jsonl,
written as REJECTED lines with the reason."""
from __future__ import annotations

import argparse
import threading
import time

from spine_nav.cli.common import fail, info
from spine_nav.tracking import codec
from spine_nav.tracking.plus_sequence import SequenceWriter
from spine_nav.tracking.record import CaseWriter
from spine_nav.tracking.transport import IgtlClient, IgtlServer


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--connect {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record an OpenIGTLink stream (every sample) to case.jsonl")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--connect", metavar="HOST:PORT", help="connect to a tracker / PLUS server")
    src.add_argument("--listen", metavar="PORT", type=int, help="accept senders on this port")
    p.add_argument("--tdata", action="store_true", help="send STT_TDATA after connecting (TDATA servers)")
    p.add_argument("--tdata-resolution-ms", type=int, default=0)
    p.add_argument("--out", required=True, help="case.jsonl (or, with --format plus, case.seq.mha / case.igs.mha) "
                                                "to write (refused if it exists, unless --force)")
    p.add_argument("--format", choices=("jsonl", "plus"), default="jsonl",
                   help="jsonl: one JSON line per sample (default); plus: PLUS sequence metafile")
    p.add_argument("--duration", type=float, required=True, help="seconds to record")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        writer = (SequenceWriter if args.format == "plus" else CaseWriter)(args.out, force=args.force)
    except (FileExistsError, ValueError) as exc:
        return fail(str(exc))
    lock = threading.Lock()
    counts = {"messages": 0}

    def on_message(msg, _t_ns, _conn):
        received = time.time()
        with lock:
            if writer.write(msg, received):
                counts["messages"] += 1

    def on_error(err, _conn):
        with lock:
            writer.reject(err.kind, err.detail, time.time())

    link = None
    try:
        if args.connect:
            host, port = parse_host_port(args.connect)
            on_connect = None
            if args.tdata:
                stt = codec.encode_stt_tdata(args.tdata_resolution_ms)
                on_connect = lambda conn: conn.send(stt)  # noqa: E731
            link = IgtlClient(host, port, on_message, on_error=on_error, on_connect=on_connect).start()
            where = f"{host}:{port}"
        else:
            link = IgtlServer(args.listen, on_message=on_message, on_error=on_error).start()
            where = f"port {link.port}"
        info(f"record: {where} -> {args.out} for {args.duration:g} s")
        t0 = time.monotonic()
        next_report = 1.0
        while (elapsed := time.monotonic() - t0) < args.duration:
            time.sleep(min(0.1, args.duration - elapsed))
            if elapsed >= next_report:
                with lock:
                    info(f"record: {elapsed:5.1f} s  {counts['messages']} messages, {writer.lines} lines")
                next_report += 1.0
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    finally:
        if link is not None:
            link.close()
        with lock:
            writer.close()
    errors = dict(link.connection.errors) if args.connect and link.connection else {}
    info(f"record: wrote {writer.lines} {'frames' if args.format == 'plus' else 'lines'} "
         f"({counts['messages']} messages) to {args.out}; rejected {writer.rejected}"
         + (" (REJECTED lines with the reason)" if writer.rejected and args.format == "jsonl" else "")
         + (f"; malformed dropped: {errors}" if errors else "")
         + (f"; dropped (memory bound): {writer.dropped}" if getattr(writer, "dropped", 0) else ""))
    return 0 if writer.lines else 1
