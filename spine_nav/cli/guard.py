"""`spine-nav guard watch`: the trajectory guard's live numbers and state in the terminal.

Subscribes ``guard/status`` (GuardStatus, reliable) and redraws a small panel in place with
ANSI escapes (cursor up + clear line) about ``--rate-hz`` times a second, for a person at the
bench. ``--duration-s`` bounds it (tests, scripts); ``--plain`` prints one line per redraw
instead (logs, no terminal). Exit code 0 when statuses arrived, 1 when none did.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field

from spine_nav.cli.common import fail, info

#: ANSI colours per state name.
STATE_COLOURS = {"ALIGNED": "\x1b[1;32m", "WARN": "\x1b[1;33m", "VIOLATION": "\x1b[1;41;97m",
                 "TRACKING_LOST": "\x1b[1;35m", "APPROACH": "\x1b[1;34m", "NO_PLAN": "\x1b[2m"}
RESET = "\x1b[0m"
FIELDS = (("lateral_error_mm", "lateral error", "mm"), ("entry_offset_mm", "entry offset", "mm"),
          ("angular_error_deg", "angular error", "deg"), ("depth_mm", "depth", "mm"),
          ("remaining_mm", "remaining", "mm"), ("predicted_tip_error_mm", "predicted tip error", "mm"),
          ("sample_age_ms", "sample age", "ms"))


@dataclass
class WatchStats:
    received: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    states: dict[str, int] = field(default_factory=dict)

    def add(self, state_name: str, now_s: float) -> None:
        if not self.received:
            self.first_s = now_s
        self.received += 1
        self.last_s = now_s
        self.states[state_name] = self.states.get(state_name, 0) + 1

    @property
    def rate_hz(self) -> float:
        span = self.last_s - self.first_s
        return (self.received - 1) / span if self.received > 1 and span > 0 else 0.0


def _num(v: float) -> str:
    return "      --" if math.isnan(v) else ("     inf" if math.isinf(v) else f"{v:8.2f}")


def render(msg, stats: WatchStats, colour: bool = True) -> list[str]:
    """The panel for the last GuardStatus ``msg`` (or None): a list of lines."""
    if msg is None:
        return ["guard watch: waiting for guard/status ...", "", *([""] * (len(FIELDS) + 1))]
    name = msg.state_name or str(msg.state)
    shown = f"{STATE_COLOURS.get(name, '')}{name:^15s}{RESET}" if colour else f"[{name}]"
    lines = [f"state {shown}  screw {msg.active_screw_id or '(none)'}",
             f"reason: {msg.reason}"]
    lines += [f"  {label:20s} {_num(getattr(msg, key))} {unit}" for key, label, unit in FIELDS]
    lines.append(f"  statuses {stats.received}  rate {stats.rate_hz:7.1f} Hz")
    return lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("guard", help="trajectory guard tools (live view)")
    gsub = p.add_subparsers(dest="guard_command", metavar="ACTION")
    gsub.required = True
    w = gsub.add_parser("watch", help="show the live guard state and numbers (updates in place)")
    w.add_argument("--topic", default="guard/status", help="GuardStatus topic (default: guard/status)")
    w.add_argument("--duration-s", type=float, default=0.0, help="stop after S seconds (0: until Ctrl-C)")
    w.add_argument("--rate-hz", type=float, default=10.0, help="redraws per second (default 10)")
    w.add_argument("--plain", action="store_true", help="no ANSI: one line per redraw")
    w.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    if args.duration_s < 0 or not 0 < args.rate_hz <= 100:
        return fail("--duration-s must be >= 0 and --rate-hz in (0, 100]")
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from spine_nav_interfaces.msg import GuardStatus

    from spine_nav.nodes.qos import STATUS_QOS

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("guard_watch", context=ctx)
    last = {"msg": None}
    stats = WatchStats()

    def on_status(msg: GuardStatus) -> None:
        last["msg"] = msg
        stats.add(msg.state_name, time.monotonic())

    node.create_subscription(GuardStatus, args.topic, on_status, STATUS_QOS)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    out = sys.stdout
    info(f"guard watch: {node.resolve_topic_name(args.topic)}; "
         + (f"{args.duration_s:g} s" if args.duration_s else "Ctrl-C to stop"))
    t0 = time.monotonic()
    period = 1.0 / args.rate_hz
    next_draw = t0
    drawn = 0
    try:
        while args.duration_s <= 0 or time.monotonic() - t0 < args.duration_s:
            ex.spin_once(timeout_sec=max(0.0, min(0.02, next_draw - time.monotonic())))
            if time.monotonic() >= next_draw:
                lines = render(last["msg"], stats, colour=not args.plain)
                if args.plain:
                    out.write(" | ".join(line.strip() for line in lines[:3]) + "\n")
                else:
                    if drawn:
                        out.write(f"\x1b[{drawn}F")  # cursor up to the panel's first line
                    out.write("".join(f"\x1b[2K{line}\n" for line in lines))
                    drawn = len(lines)
                out.flush()
                next_draw += period
    except KeyboardInterrupt:
        pass
    finally:
        ex.shutdown()
        node.destroy_node()
        if ctx.ok():
            rclpy.shutdown(context=ctx)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(stats.states.items()))
    info(f"guard watch: {stats.received} statuses ({summary or 'none'})")
    return 0 if stats.received else 1
