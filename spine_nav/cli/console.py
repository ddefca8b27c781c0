"""`spine-nav console`: the OR navigation console in the browser (issue #9).

Starts the web server (HTTP + WebSocket on one port, 127.0.0.1 unless --host says otherwise) and
the ROS 2 bridge node that feeds it; open the printed URL in a browser. Runs until Ctrl-C (or
--duration).
"""
from __future__ import annotations

import argparse
import time

from spine_nav.cli.common import fail, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="browser navigation console: slices, 3D, live guard (web server + ROS bridge)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; another address exposes the console to the network)")
    p.add_argument("--case", help="case directory with the CT/CBCT volumes (e.g. a phantom case)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="extra ROS arguments for the bridge node")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spine_nav.console import CaseData, CaseError, ConsoleServer

    if not 0 <= args.port <= 65535:
        return fail(f"--port {args.port}: must be 0-65535")
    try:
        case = CaseData(args.case)
    except CaseError as exc:
        return fail(f"--case: {exc}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        info(f"spine-nav console: WARNING binding {args.host}: reachable from the network")
    server = ConsoleServer(case, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        return fail(str(exc), code=1)
    try:
        return _spin_bridge(server, args)
    finally:
        server.stop()


def _spin_bridge(server, args: argparse.Namespace) -> int:
    from spine_nav.nodes.console_bridge import serve_console

    started: list[float] = []  # --duration counts from the bridge being up

    def ready() -> None:
        started.append(time.monotonic())
        info(f"spine-nav console: {server.url} (case: {server.case.case_dir or 'none'}); Ctrl-C to stop")

    try:
        serve_console(server, args.ros_args, on_ready=ready, keep_going=lambda: (
            args.duration <= 0 or not started or time.monotonic() - started[0] < args.duration))
    except KeyboardInterrupt:
        pass
    return 0
