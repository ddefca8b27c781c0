"""`spine-nav up`: start the stack (nodes composed in one process) from config/stack.yaml."""
from __future__ import annotations

import argparse
import time

from spine_nav.cli.common import fail, info
from spine_nav.resources import share_path

DEFAULT_STACK = share_path("config", "stack.yaml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the ROS 2 stack in one process (no `ros2 launch` needed)")
    p.add_argument("--config", default=str(DEFAULT_STACK), help="stack config (default: config/stack.yaml)")
    p.add_argument("--nodes", nargs="*", help="these nodes (default: the stack in the config; any registered "
                                              "node may be named, e.g. the simulators sim_tracker sim_arm)")
    p.add_argument("--executor", choices=("events", "single"), default="events")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    p.add_argument("--rt-priority", type=int, default=0, metavar="N",
                   help="run every thread of this process under SCHED_FIFO priority N (1-98; 0: normal, default); "
                        "the arm servo keeps its own higher priority")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="extra ROS arguments, e.g. -p plan_publisher:plan_path:=plan.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from spine_nav.nodes.lifecycle import LifecycleError
    from spine_nav.nodes.registry import NODES
    from spine_nav.nodes.runner import (ComposedStack, freeze_startup_objects, load_stack_config, set_process_realtime,
                                        tune_process_for_nodes)

    try:
        cfg = load_stack_config(args.config)
    except (FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
    names = args.nodes or cfg["nodes"]
    unknown = [n for n in names if n not in NODES]
    if unknown:
        return fail(f"unknown node(s) {', '.join(unknown)} (known: {', '.join(sorted(NODES))})")
    if not 0 <= args.rt_priority <= 98:
        return fail(f"--rt-priority: {args.rt_priority} is outside 0-98")
    tune_process_for_nodes()
    sched = set_process_realtime(args.rt_priority)
    info(f"spine-nav up: composing {', '.join(names)} ({args.executor} executor, {sched}); Ctrl-C to stop")
    extra = ["--ros-args", *args.ros_args] if args.ros_args else []
    try:  # builds every node, configures and activates the lifecycle ones (spine_nav.nodes.lifecycle)
        stack = ComposedStack(names, params_file=cfg["params_file"], executor=args.executor,
                              extra_ros_args=extra[1:] if extra else ())
    except (LifecycleError, ValueError) as exc:  # the node that did not come up, and why (already released)
        return fail(f"stack not started: {exc}", code=1)
    info(f"spine-nav up: {', '.join(names)} active")
    with stack:
        for link in stack.links:
            info(f"spine-nav up: linked {link}")
        freeze_startup_objects()
        t0 = time.monotonic()
        while args.duration <= 0 or time.monotonic() - t0 < args.duration:
            time.sleep(0.1)
    return 0
