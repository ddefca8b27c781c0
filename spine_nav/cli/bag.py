"""`spine-nav bag record|play|check|info`: whole-case recordings as rosbag2 bags (MCAP storage).

See docs/recordings.md. ``record`` subscribes to the stack's topics (spine_nav.bag.topics) and writes
until Ctrl-C / SIGTERM / ``--duration``; it prints its per-topic counts and its own dropped-message
count as one JSON line on stdout. ``check`` exits 0 only when every recorded guard decision is
reproduced (same state, metrics within 1e-6 mm).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time

from spine_nav.cli.common import fail, info, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bag", help="record / play / check a case as a rosbag2 bag (MCAP)")
    bs = p.add_subparsers(dest="bag_command", metavar="ACTION")
    bs.required = True
    r = bs.add_parser("record", help="record the stack's topics into case.mcap")
    r.add_argument("--out", required=True, help="bag file (.mcap) to write (refused if it exists, unless --force)")
    r.add_argument("--topics", nargs="*", help="only these topics (default: every topic of the stack)")
    r.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C / SIGTERM)")
    r.add_argument("--force", action="store_true")
    r.add_argument("--metadata", action="append", default=[], metavar="NAME=JSON",
                   help="a metadata record (JSON object of values), e.g. spine_nav/guard_config={...}")
    r.add_argument("--chunk-size", type=int, default=None, metavar="BYTES",
                   help="MCAP chunk size (default 256 KiB); a crash loses at most the open chunk")
    r.add_argument("--nice", type=int, default=0, help="lower this process's priority by N (os.nice)")
    r.add_argument("--rt-priority", type=int, default=0, metavar="N",
                   help="SCHED_FIFO priority N for the recorder (0: normal). The demo uses 10: below the stack "
                        "(30) and the simulators (20), above every normal process, so a busy machine cannot "
                        "starve the recorder into losing best-effort samples")
    r.add_argument("--ready-file", help="touch this file once subscribed (for scripts)")
    r.add_argument("--wait-for-publishers", nargs="*", default=[], metavar="TOPIC",
                   help="before --ready-file: wait (up to 20 s) until the recorder's own subscription to each of "
                        "these topics has matched a publisher (what it receives from then on is recorded)")
    r.set_defaults(func=run_record)
    pl = bs.add_parser("play", help="publish a bag back into ROS")
    pl.add_argument("bag")
    pl.add_argument("--rate", type=float, default=1.0, help="speed factor (0: as fast as possible)")
    pl.add_argument("--topics", nargs="*", help="only these topics")
    pl.add_argument("--tracker-only", action="store_true", help="only the tracker topics (tracking/*)")
    pl.add_argument("--wait-subscribers-s", type=float, default=5.0,
                    help="wait at most this long for --min-subscribers on every topic before playing")
    pl.add_argument("--delay-s", type=float, default=0.5,
                    help="then wait this long before the first message (default 0.5 s; as `ros2 bag play --delay`): "
                         "a DDS reader can match the player's writer later than the writer sees the reader, and "
                         "best-effort samples sent before are lost (seen here: up to ~1 s on a loaded machine)")
    pl.add_argument("--min-subscribers", type=int, default=1, help="subscribers each topic should have (default 1)")
    pl.set_defaults(func=run_play)
    c = bs.add_parser("check", help="re-run the trajectory guard over the bag's tool samples and compare")
    c.add_argument("bag")
    c.add_argument("--params", help="nodes.yaml for the guard config when the bag has none (default config/nodes.yaml)")
    c.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override a guard config field")
    c.set_defaults(func=run_check)
    i = bs.add_parser("info", help="topics, types, counts, duration, completeness")
    i.add_argument("bag")
    i.set_defaults(func=run_info)


def run_record(args: argparse.Namespace) -> int:
    import rclpy

    from spine_nav.bag.topics import select_topics
    from spine_nav.bag.writer import BagWriter
    from spine_nav.bag.recorder import BagRecorder
    from spine_nav.nodes.runner import make_executor, spin_until

    try:
        topics = select_topics(args.topics)
        meta = {}
        for m in args.metadata:
            name, sep, js = m.partition("=")
            if not sep:
                raise ValueError(f"--metadata {m!r}: expected NAME=JSON")
            obj = json.loads(js)
            if not isinstance(obj, dict):
                raise ValueError(f"--metadata {name}: expected a JSON object")
            meta[name] = obj
        if args.chunk_size is not None and args.chunk_size < 1024:
            raise ValueError(f"--chunk-size: {args.chunk_size} < 1024 bytes")
        writer = BagWriter(args.out, force=args.force,
                           **({"chunk_size": args.chunk_size} if args.chunk_size else {}))
    except (ValueError, FileExistsError) as exc:
        return fail(str(exc))
    if args.nice:
        os.nice(args.nice)
    if args.rt_priority:
        from spine_nav.nodes.runner import set_process_realtime

        info(f"bag record: {set_process_realtime(args.rt_priority)}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=[])
    node = BagRecorder(writer, topics)
    for name, data in meta.items():
        writer.add_metadata(name, data)
    ex = make_executor("events")
    ex.add_node(node)
    th = threading.Thread(target=spin_until, args=(ex, lambda: not stop.is_set() and rclpy.ok()), daemon=True)
    th.start()
    info(f"bag record: {len(topics)} topics -> {args.out}")
    deadline = time.monotonic() + 20.0
    # matched by the recorder's own subscription, not merely seen in the graph: a volatile reader receives
    # only what is published after IT matched the writer (graph discovery can come earlier)
    for t in args.wait_for_publishers:
        name = node.resolve_topic_name(t)
        subs = [s for s in node.subscriptions if s.topic_name == name]
        while not any(s.get_publisher_count() > 0 for s in subs) and time.monotonic() < deadline:
            time.sleep(0.05)
    if args.ready_file:
        open(args.ready_file, "w").close()
    t0 = time.monotonic()
    while not stop.wait(0.1):
        if args.duration > 0 and time.monotonic() - t0 >= args.duration:
            break
    # drain: keep taking messages already on their way (e.g. the last guard statuses) until the topics
    # are quiet for 0.2 s, at most 2 s
    end = time.monotonic() + 2.0
    while time.monotonic() < end and time.time_ns() - writer.last_put_ns < 200_000_000:
        time.sleep(0.02)
    stop.set()
    th.join(5.0)
    writer.add_metadata("spine_nav/recorder", {"dropped": writer.dropped, "write_errors": writer.write_errors,
                                               "counts": dict(writer.counts)})
    writer.close()
    ex.shutdown(timeout_sec=1.0)
    node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
    sys_out = {"bag": args.out, "counts": dict(writer.counts), "dropped": writer.dropped}
    print(json.dumps(sys_out), flush=True)
    info(f"bag record: {sum(writer.counts.values())} messages, dropped {writer.dropped}")
    return 0


def run_play(args: argparse.Namespace) -> int:
    import rclpy

    from spine_nav.bag.reader import BagError, read_bag
    from spine_nav.bag.topics import DEFAULT_TOPICS, TRACKER_TOPICS, TopicSpec
    from rclpy.duration import Duration

    from spine_nav.bag.recorder import BagPlayer

    if args.rate < 0:
        return fail(f"--rate must be >= 0, got {args.rate}")
    names = list(TRACKER_TOPICS) if args.tracker_only else args.topics
    try:
        bag, msgs = read_bag(args.bag, names)
    except BagError as exc:
        return fail(str(exc))
    if bag.truncated:
        info(f"bag play: {args.bag} is truncated ({bag.truncated_reason}); playing its {len(msgs)} complete messages")
    known = {"/" + t.topic.lstrip("/"): t for t in DEFAULT_TOPICS}
    specs = {}
    for topic, ty in bag.topics.items():
        if names is not None and topic.lstrip("/") not in {n.lstrip("/") for n in names}:
            continue
        specs[topic] = known.get(topic, TopicSpec(topic, ty, "reliable"))
    from rclpy.context import Context

    ctx = Context()  # its own context: `bag play` may run inside a process with other rclpy users
    rclpy.init(args=[], context=ctx)
    bad = 0
    try:
        node = BagPlayer(specs, context=ctx)
        deadline = time.monotonic() + args.wait_subscribers_s
        while time.monotonic() < deadline and not all(p.get_subscription_count() >= args.min_subscribers
                                                      for p in node.pubs.values()):
            time.sleep(0.05)
        time.sleep(max(0.0, args.delay_s))
        t_rec0, t0 = (msgs[0].log_time_ns if msgs else 0), time.monotonic()
        sent = 0
        for m in msgs:
            if m.topic not in node.pubs:
                continue
            if args.rate > 0:
                delay = (m.log_time_ns - t_rec0) * 1e-9 / args.rate - (time.monotonic() - t0)
                if delay > 0:
                    time.sleep(delay)
            try:
                node.publish(m.topic, m.data)
                sent += 1
            except Exception as exc:  # noqa: BLE001 - a message rclpy cannot publish: skip and count
                bad += 1
                if bad == 1:
                    info(f"bag play: {m.topic}: message skipped ({exc})")
        deadline = time.monotonic() + 2.0  # bounded: until every reliable subscriber acknowledged
        while time.monotonic() < deadline and not all(p.wait_for_all_acked(Duration(seconds=0.1))
                                                      for p in node.pubs.values()):
            pass
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    info(f"bag play: published {sent} messages on {len(specs)} topics" + (f", skipped {bad}" if bad else ""))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from spine_nav.bag.check import check_bag
    from spine_nav.bag.reader import BagError

    overrides = {}
    for o in args.overrides:
        k, sep, v = o.partition("=")
        if not sep:
            return fail(f"-p {o!r}: expected NAME=VALUE")
        overrides[k] = float(v)
    try:
        res = check_bag(args.bag, args.params, overrides)
    except (BagError, ValueError, OSError) as exc:
        return fail(str(exc))
    print_json(res.to_dict())
    info(f"bag check: {res.agreed}/{res.compared} guard decisions reproduced "
         f"({100 * res.agreement:.2f} %), max metric difference {res.max_metric_diff_mm:.3g} mm")
    return 0 if res.compared and res.agreed == res.compared else 1


def run_info(args: argparse.Namespace) -> int:
    from spine_nav.bag.reader import BagError, bag_counts

    try:
        print_json(bag_counts(args.bag).summary())
    except BagError as exc:
        return fail(str(exc))
    return 0
