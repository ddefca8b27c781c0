"""`spine-nav demo`: a whole simulated robot-assisted pedicle-screw case (see :mod:`spine_nav.demo.run`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from spine_nav.cli.common import fail, info

LEVELS = ("L1", "L2", "L3", "L4", "L5")


def parse_levels(text: str) -> tuple[str, ...]:
    """``L1-L5`` or ``L3,L4`` -> ("L1", ..., "L5"); lumbar levels only (the phantom's)."""
    if "-" in text:
        a, b = text.split("-", 1)
        if a not in LEVELS or b not in LEVELS or LEVELS.index(a) > LEVELS.index(b):
            raise argparse.ArgumentTypeError(f"--levels: expected a lumbar range like L1-L5, got {text!r}")
        return LEVELS[LEVELS.index(a): LEVELS.index(b) + 1]
    out = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in out if t not in LEVELS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"--levels: unknown level(s) {', '.join(bad) or text!r} (L1-L5)")
    idx = [LEVELS.index(t) for t in out]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise argparse.ArgumentTypeError(f"--levels: must be consecutive, superior first, got {text!r}")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a whole simulated case through the real stack (the main job)")
    p.add_argument("--out", default="demo_output", help="output folder (report.json, report.md, PNGs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=parse_levels, default=LEVELS, help="e.g. L1-L5 (default) or L4,L5")
    p.add_argument("--bone", choices=("normal", "osteopenic", "osteoporotic"), default="normal")
    p.add_argument("--case", type=Path, help="use this case folder (from `spine-nav phantom`) instead of a new one")
    p.add_argument("--headless", action="store_true", help="no windows (always the case on these machines)")
    p.add_argument("--occlude", action="store_true", help="fault: the tracker loses the drill mid-drilling")
    p.add_argument("--bump", action="store_true", help="fault: the reference array is knocked mid-drilling")
    p.add_argument("--bad-registration", action="store_true", help="fault: one level fails the registration gate")
    p.add_argument("--inject", action="append", default=[], metavar="FAULT",
                   help="fault, repeatable: kill:NODE = SIGKILL this node's process mid-drilling (tracker_bridge, "
                        "trajectory_guard, arm_guide, registration, sim_tracker; the arm holds, the process is "
                        "respawned, the case goes on; docs/safety.md); with --hosts also cut:HOST (tracker, "
                        "navigation, robot, console) or delay:HOST:MS (docs/network.md)")
    p.add_argument("--screws", type=int, default=None, help="stop after this many screws (quick runs)")
    p.add_argument("--tracker-rate-hz", type=float, default=100.0, help="simulated tracker rate (60-400 Hz)")
    p.add_argument("--hosts", action="store_true", help="each OR computer in its own network namespace on a virtual "
                   "bridge (needs root; docs/network.md)")
    p.add_argument("--command-interface", default="spine_nav",
                   choices=("spine_nav", "joint_trajectory", "forward_position"),
                   help="how arm_guide commands the (simulated) arm: our stream, a JointTrajectoryController "
                        "topic, or a forward position controller topic")
    p.add_argument("--no-bag", action="store_true", help="do not record the case bag (case.mcap)")
    p.add_argument("--busy-core", action="store_true", help="load test: keep one extra core busy (Python busy loop)")
    p.add_argument("--sim-rt-priority", type=int, default=None,
                   help="SCHED_FIFO priority of the simulators and recorder (0: normal scheduling; default 20)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spine_nav.demo.run import DemoConfig, run_demo

    if args.case is not None and not (args.case / "plan.json").is_file():
        return fail(f"--case {args.case}: not a case folder (no plan.json); make one with `spine-nav phantom`")
    if not 60.0 <= args.tracker_rate_hz <= 400.0:
        return fail(f"--tracker-rate-hz: {args.tracker_rate_hz:g} is outside 60-400 Hz")
    if args.screws is not None and args.screws < 1:
        return fail(f"--screws: must be >= 1, got {args.screws}")
    cfg = DemoConfig(out_dir=Path(args.out), seed=args.seed, levels=args.levels, bone=args.bone, case_dir=args.case,
                     occlude=args.occlude, bump=args.bump, bad_registration=args.bad_registration,
                     max_screws=args.screws, tracker_rate_hz=args.tracker_rate_hz,
                     command_interface=args.command_interface, record_bag=not args.no_bag,
                     **({} if args.sim_rt_priority is None else {"sim_rt_priority": args.sim_rt_priority}))
    from spine_nav.demo.process_faults import parse_inject as parse_kill

    kills = [k for k in args.inject if k.startswith("kill:")]
    network = [k for k in args.inject if not k.startswith("kill:")]
    try:
        cfg.inject = [parse_kill(k) for k in kills]
    except ValueError as exc:
        return fail(str(exc))
    if network and not args.hosts:
        return fail(f"--inject {network[0]}: needs --hosts (cut/delay faults are on the network between hosts)")
    if len(network) > 1:
        return fail(f"--inject: one network fault per run, got {', '.join(network)}")
    make_demo = None
    if args.hosts:
        if kills:
            return fail(f"--inject {kills[0]}: process kills run in the ordinary demo, not with --hosts")
        from spine_nav.demo.hosts import HostsDemo, parse_inject
        from spine_nav.sim.netns import NetnsNotPermitted, check_permitted

        try:
            inject = parse_inject(network[0]) if network else None
            check_permitted()
        except (ValueError, NetnsNotPermitted) as exc:
            return fail(f"--hosts: {exc}" if isinstance(exc, NetnsNotPermitted) else str(exc))
        make_demo = lambda c, log: HostsDemo(c, log, inject)  # noqa: E731
    from spine_nav.bench.floor import busy_core

    with busy_core(args.busy_core):
        report = run_demo(cfg, info, make_demo) if make_demo else run_demo(cfg, info)
    from spine_nav.demo.process_faults import fault_handled

    held = all(fault_handled(f) for f in report.faults)
    return 0 if held else 1
