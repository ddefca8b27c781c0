"""`spine-nav up`: start the stack from config/stack.yaml: its nodes composed in one process, or, with
``--respawn``, supervised child processes (``--split``: one per node, the launch layout) that are
restarted with a growing backoff when they die (0.5 s doubling to 8 s, as launch's ``respawn`` with
``respawn_delay``), every death of a safety-relevant process published at once on
``supervisor/process_lost`` (the arm guide holds) and every death on ``/diagnostics``
(:class:`spine_nav.demo.processes.Supervisor`, docs/safety.md)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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
    p.add_argument("--respawn", action="store_true",
                   help="supervise: run the nodes in child processes, respawn a dead one with backoff (0.5 s "
                        "doubling to 8 s) and publish its death on supervisor/process_lost (docs/safety.md)")
    p.add_argument("--split", action="store_true",
                   help="with --respawn: one process per node (as launch/spine_nav.launch.py); default one child")
    p.add_argument("--log-dir", default="", help="with --respawn: the children's logs (default: a temporary folder)")
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
    if args.split and not args.respawn:
        return fail("--split: only with --respawn (without it the nodes are composed in this process)")
    if args.respawn:
        return run_supervised(args, names)
    import signal
    import threading

    # SIGINT / SIGTERM (a supervisor's stop, Ctrl-C) only set a flag, before rclpy.init installs its own
    # handlers (which chain to these): the main loop below then writes the latency records first and tears
    # the stack down after (issue 17: the records were lost when the teardown outlasted the stop grace)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
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
        # block until a signal, rclpy's own shutdown of the context or --duration: no periodic wake-up (this thread
        # would take the GIL ten times a second from the nodes' 1 kHz threads composed in this process)
        stack.context.on_shutdown(stop.set)
        if stack.context.ok():
            stop.wait(args.duration if args.duration > 0 else None)
        for path in stack.flush_latency_records():  # before the teardown (ComposedStack.close)
            info(f"spine-nav up: latency record written: {path}")
        info("spine-nav up: stopping")
    return 0


#: nodes whose death does not stop the arm (docs/safety.md, "Which inputs and processes are
#: safety-relevant"): restarted and reported on /diagnostics, not on supervisor/process_lost
NOT_SAFETY_RELEVANT_NODES = ("registration", "plan_publisher", "console_bridge")


def child_processes(args: argparse.Namespace, names: list[str], log_dir: Path) -> list:
    """The supervised children: `spine-nav up --nodes ...` each (one per node with ``--split``)."""
    import sys

    from spine_nav.demo.processes import SupervisedProcess

    groups = [[n] for n in names] if args.split else [list(names)]
    # a child ends a little after this process would (its own bound); 0 = until stopped
    duration = args.duration + 5.0 if args.duration > 0 else 0.0
    procs = []
    for group in groups:
        label = group[0] if len(group) == 1 else "stack"
        cmd = [sys.executable, "-m", "spine_nav.cli.main", "up", "--config", args.config, "--nodes", *group,
               "--executor", args.executor, "--duration", str(duration), "--rt-priority", str(args.rt_priority)]
        if args.ros_args:
            cmd += ["--ros-args", *args.ros_args]
        relevant = not all(n in NOT_SAFETY_RELEVANT_NODES for n in group)
        procs.append(SupervisedProcess(label, cmd, log_dir / f"{label}.log", group, safety_relevant=relevant))
    return procs


def run_supervised(args: argparse.Namespace, names: list[str]) -> int:
    """The supervisor: children started, watched, respawned; Ctrl-C / SIGTERM / --duration stop them all."""
    import signal
    import threading

    import rclpy
    from rclpy.context import Context

    from spine_nav.demo.process_faults import process_lost_publisher
    from spine_nav.demo.processes import Supervisor

    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="spine_nav_up_"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("spine_nav_supervisor", context=ctx)
    publish_lost = process_lost_publisher(node)

    def on_lost(event) -> None:
        publish_lost(event)
        info(f"spine-nav up: supervisor: {event.message}"
             + ("" if event.safety_relevant else " (not safety-relevant: reported only)"))

    procs = child_processes(args, names, log_dir)
    for p in procs:
        info(f"spine-nav up: started {p.label} ({', '.join(p.nodes)}) pid {p.proc.pid}, log {p.log_path}")
    sup = Supervisor(procs, on_lost=on_lost, priority=args.rt_priority + 1 if args.rt_priority > 0 else 0,
                     on_respawn=lambda e: info(f"spine-nav up: supervisor: {e.message}, pid "
                                               f"{next(p.proc.pid for p in procs if p.label == e.label)}")).start()
    info(f"spine-nav up: supervising {len(procs)} process(es) ({', '.join(names)}); Ctrl-C to stop")
    t0 = time.monotonic()
    try:
        while not stop.is_set() and (args.duration <= 0 or time.monotonic() - t0 < args.duration):
            stop.wait(0.1)
    finally:
        sup.stop()  # first: no respawn of a stopping stack
        for p in procs:
            p.stop()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    info("spine-nav up: stopped")
    return 0
