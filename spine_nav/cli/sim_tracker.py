"""`spine-nav sim-tracker`: the simulated optical tracker as an OpenIGTLink server, without ROS."""
from __future__ import annotations

import argparse
import time

import numpy as np

from spine_nav.cli.common import fail, info
from spine_nav.geometry import make_transform
from spine_nav.sim.tracker import TrackerModel, TrackerModelConfig, parse_occlusions
from spine_nav.sim.tracker_server import SimTrackerServer
from spine_nav.tracking.transport import DEFAULT_PORT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim-tracker", help="run the simulated tracker as an OpenIGTLink server (no ROS)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--allow", default=None, help="peers allowed to connect: addresses or networks, comma-separated "
                   "(default loopback only; '*' = anyone)")
    p.add_argument("--rate-hz", type=float, default=60.0)
    p.add_argument("--noise-mm", type=float, default=0.15, help="RMS per marker position")
    p.add_argument("--tremor-mm", type=float, default=0.1)
    p.add_argument("--header-version", type=int, choices=(1, 2), default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--occlusions", default="", help='"Device:start_s:end_s[,...]"')
    p.add_argument("--pivot", action="store_true",
                   help="pivot the tool about a fixed tip (+/-30 deg cone) instead of holding it still")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    p.set_defaults(func=run)


def pivot_motion(tip_in_reference_mm=(0.0, 0.0, 0.0), cone_deg: float = 30.0, period_s: float = 4.0):
    """T_reference_tooltip(t): the tool circles about a fixed tip point (for `calibrate pivot` demos/tests)."""
    from scipy.spatial.transform import Rotation

    tip = np.asarray(tip_in_reference_mm, dtype=float)

    def provider(t_s: float) -> np.ndarray:
        a = 2 * np.pi * t_s / period_s
        tilt = np.radians(cone_deg) * (0.5 + 0.5 * np.sin(0.37 * a))
        R = Rotation.from_rotvec(tilt * np.array([np.cos(a), np.sin(a), 0.0])).as_matrix()
        return make_transform(R, tip)

    return provider


def run(args: argparse.Namespace) -> int:
    try:
        cfg = TrackerModelConfig(rate_hz=args.rate_hz, noise_mm=args.noise_mm, tremor_mm=args.tremor_mm,
                                 seed=args.seed, occlusions=parse_occlusions(args.occlusions))
        model = TrackerModel(cfg, tool_pose_provider=pivot_motion() if args.pivot else None)
        if not args.pivot:
            model.set_tool_pose_mm(make_transform(np.eye(3), [0.0, 0.0, 0.0]))
        server = SimTrackerServer(model, port=args.port, host=args.host, header_version=args.header_version,
                                 allowed_peers=args.allow).start()
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    info(f"sim-tracker: OpenIGTLink server on {args.host}:{server.port}, {args.rate_hz:g} Hz "
         f"(StylusToTracker, ReferenceToTracker; TDATA after STT_TDATA); Ctrl-C to stop")
    t0 = time.monotonic()
    try:
        while args.duration <= 0 or time.monotonic() - t0 < args.duration:
            time.sleep(0.1)
    finally:
        server.close()
    info(f"sim-tracker: sent {server.samples_sent} samples ({server.late_samples} late)")
    return 0
